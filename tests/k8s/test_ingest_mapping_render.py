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
