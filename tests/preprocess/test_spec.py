"""A spec that cannot be expressed is rejected before anything starts, saying why."""

import pytest
from pydantic import ValidationError

from streamtrain.preprocessing.spec import PreprocessSpec, json_schema
from tests.preprocess.specs import EVERY_CONSTRUCT, every_construct

BASE = {"features": ["temperature", "current"]}


def test_default_and_full_specs_are_valid():
    assert PreprocessSpec.default().feature_names == ["temperature", "current", "vibration", "pressure", "power"]
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
        ({"derived": [{"name": "x", "expr": "y + 1"}, {"name": "y", "expr": "temperature"}]}, "unknown field 'y'"),
        ({"derived": [{"name": "x", "expr": "label * 2"}]}, "ground-truth"),
        ({"derived": [{"name": "seq", "expr": "temperature"}]}, "clashes"),
        ({"windows": {"size_seconds": 0, "aggregates": []}}, "greater than 0"),
        (
            {"windows": {"size_seconds": 5, "aggregates": [{"name": "a", "fn": "avg", "field": "pressure"}]}},
            "not a feature",
        ),
        ({"windows": {"size_seconds": 5, "aggregates": [{"name": "a", "fn": "median", "field": "current"}]}}, "avg"),
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
