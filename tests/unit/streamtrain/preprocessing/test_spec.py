"""A spec that cannot be expressed is rejected before anything starts, saying why.

Hostile input, preprocessing specs (files and resources): whatever arrives, the answer is a value or a typed, explained refusal, never
anything else raised (strategies in tests/unit/hostile.py)."""

from __future__ import annotations

import json
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec, SpecError, json_schema
from tests.unit.hostile import (
    FAST,
    json_values,
)
from tests.unit.streamtrain.preprocessing.specs import EVERY_CONSTRUCT, every_construct

BASE = {"features": ["temperature", "current"]}


def test_default_and_full_specs_are_valid():
    assert PreprocessSpec.default().feature_names == [
        "temperature",
        "current",
        "vibration",
        "pressure",
        "power",
    ]
    assert every_construct().feature_names[-1] == "bounded"
    assert "features" in json_schema()["properties"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"features": ["label"]}, "ground truth"),
        ({"features": ["temperature", "anomaly"]}, "ground truth"),
        ({"features": ["device_id"]}, "identity field"),
        ({"features": []}, "at least 1"),
        ({"features": ["temperature", "temperature"]}, "duplicate"),
        ({"features": ["Temp-1"]}, "lower_snake_case"),
        ({"filter": "humidity > 3"}, "unknown field 'humidity'"),
        ({"filter": "label = 0"}, "ground-truth field 'label'"),
        ({"filter": "temperature"}, "not a condition"),
        ({"filter": "temperature > (SELECT 1)"}, "not supported"),
        ({"filter": "device_type = 'pump'"}, "string literal"),
        ({"filter": "temperature >"}, "cannot parse"),
        ({"derived": [{"name": "x", "expr": "SUM(temperature)"}]}, "not supported"),
        ({"derived": [{"name": "x", "expr": "RANDOM()"}]}, "not supported"),
        ({"derived": [{"name": "x", "expr": "temperature > 3"}]}, "not supported"),
        (
            {
                "derived": [
                    {"name": "x", "expr": "y + 1"},
                    {"name": "y", "expr": "temperature"},
                ]
            },
            "unknown field 'y'",
        ),
        ({"derived": [{"name": "x", "expr": "label * 2"}]}, "ground-truth"),
        ({"derived": [{"name": "seq", "expr": "temperature"}]}, "clashes"),
        ({"windows": {"size_seconds": 0, "aggregates": []}}, "greater than 0"),
        (
            {
                "windows": {
                    "size_seconds": 5,
                    "aggregates": [{"name": "a", "fn": "avg", "field": "pressure"}],
                }
            },
            "not a feature",
        ),
        (
            {
                "windows": {
                    "size_seconds": 5,
                    "aggregates": [{"name": "a", "fn": "median", "field": "current"}],
                }
            },
            "avg",
        ),
        ({"unknown_key": 1}, "Extra inputs"),
    ],
)
def test_inexpressible_specs_are_rejected_with_a_clear_message(change, message):
    with pytest.raises(ValidationError) as info:
        PreprocessSpec.model_validate({**BASE, **change})
    assert message in str(info.value)


def test_full_spec_loads_from_yaml(tmp_path):
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(EVERY_CONSTRUCT))
    assert PreprocessSpec.load(path) == every_construct()


GOOD_SPEC = {
    "filter": "temperature > -50 AND temperature < 200",
    "features": ["temperature", "current"],
    "derived": [{"name": "power", "expr": "current * temperature"}],
    "windows": {
        "size_seconds": 10,
        "aggregates": [{"name": "t_avg", "fn": "avg", "field": "temperature"}],
    },
}


sql_fragments = st.text(
    alphabet=string.ascii_letters + string.digits + " ()+-*/<>=!'\".,;_%|&^~`$#@?\\\n",
    max_size=60,
)


def spec_or_refusal(data):
    try:
        spec = PreprocessSpec.model_validate(data)
    except (SpecError, ValidationError) as exc:
        assert str(exc)
        return None
    Engine(spec)  # a spec that validates must also compile
    return spec


@FAST
@given(json_values)
def test_any_document_is_a_spec_or_a_clear_refusal(data):
    spec_or_refusal(data)


@FAST
@given(
    st.sampled_from(["filter", "derived", "windows", "features", "label"]),
    st.one_of(sql_fragments, json_values),
)
def test_mutated_specs_are_valid_or_refused(key, value):
    data = json.loads(json.dumps(GOOD_SPEC))
    if key == "derived" and isinstance(value, str):
        value = [{"name": "power", "expr": value}]
    data[key] = value
    spec_or_refusal(data)


@pytest.mark.parametrize("depth", [10, 70, 3000])
def test_deep_expressions_are_refused_or_compiled_never_a_crash(depth):
    spec_or_refusal(
        {
            "features": ["temperature"],
            "filter": "(" * depth + "temperature > 1" + ")" * depth,
        }
    )
    spec_or_refusal(
        {
            "features": ["temperature"],
            "derived": [{"name": "d", "expr": "-" * depth + "temperature"}],
        }
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400).map(str.encode),
        json_values.map(lambda v: yaml.safe_dump(v).encode()),
    )
)
def test_spec_files_of_any_content_load_or_fail_with_a_value_error(tmp_path, content):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    try:
        PreprocessSpec.load(path)
    except ValueError as exc:  # SpecError and pydantic's ValidationError are ValueErrors
        assert str(exc)
