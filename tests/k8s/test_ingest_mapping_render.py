"""spec.ingest rendered offline: the bridge gets the preset and topic patterns as the variables
`streamtrain bridge` reads, and the settings class it builds from them subscribes as the resource says."""

from __future__ import annotations

import copy

import pytest

from streamtrain.bridge.app import BridgeSettings
from streamtrain.operator import render, validate
from streamtrain.operator.ingest import ingest_env
from tests.k8s.conftest import ROOT, load_example

MINIMAL = load_example(ROOT / "examples/minimal.yaml")


def bridge_env(ingest: dict | None) -> dict[str, str]:
    r = copy.deepcopy(MINIMAL)
    if ingest is not None:
        r["spec"]["ingest"] = ingest
        r["spec"].setdefault("mqtt", {})["authentication"] = "none"  # other shapes: any topic (credentials: one)
    assert validate.errors(r) == []
    out = render.render(r["metadata"]["name"], "pipelines", validate.defaulted(r)["spec"])
    [bridge] = [
        m
        for m in out
        if m["kind"] == "Deployment" and m["metadata"]["labels"]["app.kubernetes.io/component"] == "bridge"
    ]
    return {e["name"]: e.get("value") for e in bridge["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_default_is_the_streamtrain_shape():
    env = bridge_env(None)
    assert env["STREAMTRAIN_INGEST_MAPPING"] == "streamtrain" and "STREAMTRAIN_INGEST_TOPICS" not in env


@pytest.mark.parametrize(
    ("ingest", "filters"),
    [
        ({"preset": "sparkplug-b"}, ["spBv1.0/+/#"]),
        ({"preset": "tasmota", "topics": ["home/tele/{device_id}/SENSOR"]}, ["home/tele/+/SENSOR"]),
        (
            {"preset": "sparkplug-b", "topics": ["spBv1.0/plant-a/+/+", "spBv1.0/plant-a/+/+/+"]},
            ["spBv1.0/plant-a/#"],
        ),
    ],
)
def test_the_bridge_settings_read_the_rendered_mapping(monkeypatch, ingest, filters):
    env = bridge_env(ingest)
    for key in ("STREAMTRAIN_INGEST_MAPPING", "STREAMTRAIN_INGEST_TOPICS"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    settings = BridgeSettings()
    assert settings.mapping().name == ingest["preset"]
    assert settings.filters() == filters


def test_topic_patterns_the_bridge_would_refuse_make_the_spec_invalid():
    with pytest.raises(ValueError, match="must be literal"):
        ingest_env({"ingest": {"preset": "tasmota", "topics": ["home/#"]}})


@pytest.mark.parametrize(
    ("ingest", "want", "filters"),
    [
        (  # a preset changed: the plugs' local time zone, one channel renamed
            {"preset": "tasmota", "mapping": {"ts_timezone": "Europe/Berlin", "rename": {"ENERGY_Power": "watts"}}},
            {"name": "tasmota", "ts_timezone": "Europe/Berlin", "ts_path": "Time", "rename": {"ENERGY_Power": "watts"}},
            ["tele/+/SENSOR"],
        ),
        (  # a mapping of one's own: a mapping file's defaults, topics from ingest.topics
            {
                "topics": ["plant/{site}/{device_id}/metrics"],
                "mapping": {"ts_path": "meta.t", "ts_format": "ms", "channels_root": "values", "hold_s": 60},
            },
            {"name": "inline", "format": "json", "ts_path": "meta.t", "ts_format": "ms", "channels_root": "values"},
            ["plant/+/+/metrics"],
        ),
    ],
)
def test_a_whole_mapping_reaches_the_bridge_as_inline_json(monkeypatch, ingest, want, filters):
    env = bridge_env(ingest)
    assert env["STREAMTRAIN_INGEST_MAPPING"].startswith("{")
    for key in ("STREAMTRAIN_INGEST_MAPPING", "STREAMTRAIN_INGEST_TOPICS"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    mapping = BridgeSettings().mapping()
    assert {k: getattr(mapping, k) for k in want} == want
    assert BridgeSettings().filters() == filters


def test_the_mapping_schema_is_the_models_without_defaults():
    from streamtrain.ingest_mapping import IngestMapping
    from streamtrain.operator.ingest import NOT_IN_RESOURCE, mapping_schema

    schema = mapping_schema()
    assert set(schema["properties"]) == set(IngestMapping.model_fields) - set(NOT_IN_RESOURCE)

    def keys(node):
        return set(node) | {k for v in node.values() if isinstance(v, dict) for k in keys(v)}

    assert "default" not in keys(schema)  # a field left out keeps the preset's value
    assert schema["properties"]["names"]["enum"] == ["snake_case", "keep"]


def test_a_mapping_the_bridge_would_refuse_makes_the_spec_invalid():
    with pytest.raises(ValueError, match="unknown time zone"):
        ingest_env({"ingest": {"preset": "tasmota", "mapping": {"ts_timezone": "Mars/Olympus"}}})
    with pytest.raises(ValueError, match="take no ts_path"):
        ingest_env({"ingest": {"topics": ["{device_id}/{channel}"], "mapping": {"ts_path": "t"}}})
