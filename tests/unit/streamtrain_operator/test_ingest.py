"""spec.mqtt.ingest: extension, rendered and checked offline: the managed HiveMQ runs our launcher
image, whose ingestion extension is configured by STREAMTRAIN_INGEST_* variables that IngestSettings
reads, with the same Kafka and topics the other programs use; no bridge Deployment; the extension's
metrics on the port every program's metrics use; the CRD refuses the modes it cannot serve.

spec.ingest rendered offline: the bridge gets the preset and topic patterns as the variables
`streamtrain bridge` reads, and the settings class it builds from them subscribes as the resource says."""

from __future__ import annotations

import copy
import json
import re

import kubernetes_validate
import pytest

from streamtrain.bridge.app import BridgeSettings
from streamtrain.operator import render, validate
from streamtrain.operator.ingest import ingest_env
from streamtrain.operator.render import connections, objects
from tests.k8s.conftest import KUBE_VERSIONS, ROOT, load_example

MINIMAL = load_example(ROOT / "examples/minimal.yaml")
SETTINGS_JAVA = (ROOT / "bridge/hivemq-extension/src/main/java/io/streamtrain/ingest/IngestSettings.java").read_text()
DOCKERFILE = (ROOT / "images/hivemq.Dockerfile").read_text()
PRESETS_RESOURCE = json.loads((ROOT / "bridge/hivemq-extension/src/main/resources/ingest-presets.json").read_text())


def resource(**mqtt) -> dict:
    r = copy.deepcopy(MINIMAL)
    # Other presets and mappings need a broker that lets any topic in: authentication none, named (the
    # managed broker's default is credentials, test_mqtt_users_render.py).
    r["spec"].setdefault("mqtt", {}).update({"authentication": "none", **mqtt})
    r["spec"].setdefault("kafka", {}).update(authentication="none")
    return r


def children(r: dict) -> list[dict]:
    assert validate.errors(r) == []
    return render.render(r["metadata"]["name"], "pipelines", validate.defaulted(r)["spec"])


def deployments(out: list[dict]) -> dict[str, dict]:
    return {m["metadata"]["labels"]["app.kubernetes.io/component"]: m for m in out if m["kind"] == "Deployment"}


def test_the_broker_ingests_and_no_bridge_runs():
    r = resource(ingest="extension")
    out = children(r)
    d = deployments(out)
    assert "bridge" not in d and "bridge" in deployments(children(resource()))  # the default keeps the bridge
    container = d["hivemq"]["spec"]["template"]["spec"]["containers"][0]
    name, spec = r["metadata"]["name"], validate.defaulted(r)["spec"]
    assert container["image"].endswith("-hivemq:" + spec["image"]["tag"])  # the launcher image carries the extension
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # Besides, only the TLS keystore's password, from its Secret (test_mqtt_tls_render.py).
    assert [e["name"] for e in container["env"] if "value" not in e] == ["STREAMTRAIN_MQTT_KEYSTORE_PASSWORD"]
    settings = connections.settings_for(name, spec)
    assert env == {
        "STREAMTRAIN_INGEST_KAFKA_BOOTSTRAP": connections.kafka_bootstrap(name, spec),
        "STREAMTRAIN_INGEST_TOPIC_RAW": settings.topic_raw,
        "STREAMTRAIN_INGEST_TOPIC_DEADLETTER": settings.topic_deadletter,
        "STREAMTRAIN_INGEST_METRICS_HOST": "0.0.0.0",
        "STREAMTRAIN_INGEST_METRICS_PORT": str(objects.METRICS_PORT),
        "STREAMTRAIN_INGEST_MAPPING": "streamtrain",  # spec.ingest's default, as the bridge would get it
    }
    assert {"name": "metrics", "containerPort": objects.METRICS_PORT, "protocol": "TCP"} in container["ports"]


def broker_env(r: dict) -> dict[str, str]:
    container = deployments(children(r))["hivemq"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}  # not the TLS password's reference


@pytest.mark.parametrize(
    "ingest",
    [
        {"preset": "zigbee2mqtt"},
        {"preset": "tasmota", "topics": ["home/tele/{device_id}/SENSOR", "lab/{device_id}/SENSOR"]},
        {"preset": "cloud"},
    ],
)
def test_json_presets_reach_the_extension_as_the_bridges_variables(ingest):
    r = resource(ingest="extension")
    r["spec"]["ingest"] = ingest
    env = broker_env(r)
    assert env["STREAMTRAIN_INGEST_MAPPING"] == ingest["preset"]
    assert env.get("STREAMTRAIN_INGEST_TOPICS") == (",".join(ingest["topics"]) if "topics" in ingest else None)
    # The preset is one the extension's generated resource holds, as a JSON mapping.
    assert PRESETS_RESOURCE["presets"][ingest["preset"]]["format"] == "json"
    # The same two variables the bridge gets with mqtt.ingest bridge.
    r["spec"]["mqtt"]["ingest"] = "bridge"
    bridge = deployments(children(r))["bridge"]["spec"]["template"]["spec"]["containers"][0]
    bridge_env = {e["name"]: e.get("value") for e in bridge["env"]}
    for key in ("STREAMTRAIN_INGEST_MAPPING", "STREAMTRAIN_INGEST_TOPICS"):
        assert bridge_env.get(key) == env.get(key), key


def test_a_whole_mapping_reaches_the_extension_as_the_bridges_inline_json():
    ingest = {"preset": "tasmota", "mapping": {"ts_timezone": "Europe/Berlin", "rename": {"ENERGY_Power": "watts"}}}
    r = resource(ingest="extension")
    r["spec"]["ingest"] = ingest
    env = broker_env(r)
    assert json.loads(env["STREAMTRAIN_INGEST_MAPPING"]) == {"preset": "tasmota", **ingest["mapping"]}
    r["spec"]["mqtt"]["ingest"] = "bridge"
    bridge = deployments(children(r))["bridge"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in bridge["env"]}["STREAMTRAIN_INGEST_MAPPING"] == env[
        "STREAMTRAIN_INGEST_MAPPING"
    ]


@pytest.mark.parametrize(
    "ingest", [{"preset": "sparkplug-b"}, {"preset": "sparkplug-b", "topics": ["spBv1.0/plant/+/+"]}]
)
def test_sparkplug_b_reaches_the_extension_as_the_bridges_variables(ingest):
    """Sparkplug B through the extension (SparkplugDecoder.java) is accepted and rendered as the JSON presets are."""
    r = resource(ingest="extension")
    r["spec"]["ingest"] = ingest
    assert validate.errors(r) == []
    env = broker_env(r)
    assert env["STREAMTRAIN_INGEST_MAPPING"] == "sparkplug-b"
    assert env.get("STREAMTRAIN_INGEST_TOPICS") == (",".join(ingest["topics"]) if "topics" in ingest else None)
    assert PRESETS_RESOURCE["presets"]["sparkplug-b"]["format"] == "sparkplug_b"
    assert "bridge" not in deployments(children(r))  # no bridge: the broker ingests
    r["spec"]["mqtt"]["ingest"] = "bridge"
    assert validate.errors(r) == []
    bridge = deployments(children(r))["bridge"]["spec"]["template"]["spec"]["containers"][0]
    bridge_env = {e["name"]: e.get("value") for e in bridge["env"]}
    for key in ("STREAMTRAIN_INGEST_MAPPING", "STREAMTRAIN_INGEST_TOPICS"):
        assert bridge_env.get(key) == env.get(key), key


def test_every_variable_rendered_is_one_the_extension_reads():
    """IngestSettings maps STREAMTRAIN_INGEST_A_B to the property a.b; each rendered one must be read."""
    read = set(re.findall(r'p\.getProperty\("([a-z.]+)"', SETTINGS_JAVA))
    for m in children(resource(ingest="extension")):
        for c in m.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for e in c.get("env", []):
                if e["name"].startswith("STREAMTRAIN_INGEST_"):
                    assert e["name"][len("STREAMTRAIN_INGEST_") :].lower().replace("_", ".") in read, e["name"]


def test_the_launcher_image_carries_the_extension_idle_unless_configured():
    assert "/opt/hivemq/extensions/streamtrain-ingest" in DOCKERFILE
    assert "COPY --from=build /opt/hivemq/extensions /opt/hivemq/extensions" in DOCKERFILE
    assert 'ENV_PREFIX + "KAFKA_BOOTSTRAP"' in SETTINGS_JAVA  # what makes it ingest


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_rendered_children_validate_strictly(version):
    for m in children(resource(ingest="extension")):
        if m["apiVersion"].startswith(("kafka.strimzi.io", "monitoring.coreos.com", "keda.sh")):
            continue  # other projects' kinds: their schemas are checked in test_render/test_scaling
        kubernetes_validate.validate(m, version, strict=True)


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda s: s["mqtt"].update(mode="external", host="broker.example"),
            "spec.mqtt.ingest: Invalid value: mqtt.ingest extension runs inside the managed broker",
        ),
        (
            lambda s: s["kafka"].pop("authentication"),
            "spec.mqtt.ingest: Invalid value: mqtt.ingest extension does not authenticate to Kafka yet",
        ),
        (
            lambda s: s["kafka"].update(authentication="scram-sha-512"),
            "spec.mqtt.ingest: Invalid value: mqtt.ingest extension does not authenticate to Kafka yet",
        ),
        (lambda s: s["mqtt"].update(ingest="kafka-connect"), "spec.mqtt.ingest: 'kafka-connect' is not one of"),
    ],
    ids=["external-broker", "managed-kafka-default-scram", "scram", "unknown"],
)
def test_modes_the_extension_cannot_serve_are_refused(change, message):
    r = resource(ingest="extension")
    change(r["spec"])
    errs = validate.errors(r)
    assert any(e.startswith(message) for e in errs), errs


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
