"""Specs shared by the preprocessing tests: one using every construct, and one the batch step evaluates with numpy."""

from streamtrain.preprocessing.spec import PreprocessSpec

EVERY_CONSTRUCT = {
    "filter": "(temperature > -40 AND NOT temperature >= 150) OR (pressure <> 3.5 AND seq <= 100000) AND vibration < 10",
    "features": ["temperature", "current", "vibration", "pressure"],
    "derived": [
        {"name": "power", "expr": "current * pressure"},
        {"name": "spread", "expr": "ABS(temperature - 60) / 2 + -current"},
        {"name": "shaped", "expr": "SQRT(ABS(vibration)) + LN(pressure + 10) - EXP(current / 10)"},
        {"name": "stepped", "expr": "ROUND(temperature, 1) + FLOOR(current) + CEIL(pressure) + SIGN(temperature - 70)"},
        {"name": "bounded", "expr": "GREATEST(current, pressure, 2) - LEAST(vibration, 1) + power / 4"},
    ],
    "windows": {
        "size_seconds": 5,
        "aggregates": [
            {"name": "t_avg", "fn": "avg", "field": "temperature"},
            {"name": "t_min", "fn": "min", "field": "temperature"},
            {"name": "t_max", "fn": "max", "field": "temperature"},
            {"name": "power_sum", "fn": "sum", "field": "power"},
            {"name": "n", "fn": "count", "field": "current"},
        ],
    },
    "label": "label",
}


def every_construct() -> PreprocessSpec:
    return PreprocessSpec.model_validate(EVERY_CONSTRUCT)


#: A spec the batch step evaluates with numpy (division, comparisons as numbers, NOT, OR), with sequences.
VECTORISED = PreprocessSpec.model_validate(
    {
        "filter": "temperature > -40 AND NOT temperature >= 150 OR pressure <> 3.5",
        "features": ["temperature", "current", "vibration", "pressure"],
        "derived": [
            {"name": "ratio", "expr": "current / pressure"},
            {"name": "spread", "expr": "-ABS(vibration - 0.3) * 2.5e-3 + (temperature - 60) / 2"},
            {"name": "scaled", "expr": "ratio * 1e15 - spread"},
        ],
        "windows": {
            "size_seconds": 5,
            "aggregates": [
                {"name": "t_avg", "fn": "avg", "field": "temperature"},
                {"name": "t_min", "fn": "min", "field": "temperature"},
                {"name": "r_max", "fn": "max", "field": "ratio"},
                {"name": "s_sum", "fn": "sum", "field": "scaled"},
                {"name": "n", "fn": "count", "field": "current"},
            ],
        },
        "sequences": {"length": 3},
        "label": "label",
    }
)
