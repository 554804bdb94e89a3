"""The StreamingTraining CRD: generated file in sync, valid for Kubernetes, examples accepted,
invalid resources rejected with a message that names the field."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from streamtrain.operator import crd as crd_module  # noqa: E402  (path set in conftest)
from streamtrain.operator import validate
from tests.k8s.conftest import EXAMPLES, KUBE_VERSIONS, ROOT, load_example

CRD_FILE = ROOT / "charts/streamtrain/crds/streamingtrainings.yaml"


def test_committed_crd_matches_generator():
    assert yaml.safe_load(CRD_FILE.read_text()) == crd_module.crd(), (
        "regenerate: python -m streamtrain.operator.crd > " + str(CRD_FILE.relative_to(ROOT))
    )


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crd_validates_against_kubernetes(version):
    kubernetes_validate.validate(crd_module.crd(), version, strict=True)


def test_crd_names_columns_and_status():
    c = crd_module.crd()
    assert c["metadata"]["name"] == "streamingtrainings.streamtrain.io"
    assert c["spec"]["names"]["kind"] == "StreamingTraining" and c["spec"]["names"]["shortNames"] == ["st"]
    v = c["spec"]["versions"][0]
    assert v["subresources"] == {"status": {}}
    assert [col["name"] for col in v["additionalPrinterColumns"]] == ["Phase", "Model", "AnomalyRate", "Age"]
    status = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"phase", "conditions", "modelVersion", "lastTraining"} <= set(status)


def _structural_violations(node, path="", in_junctor=False):
    """The structural-schema rules the API server enforces: a type everywhere outside junctors,
    no additionalProperties next to properties, no $ref."""
    bad = []
    if "$ref" in node:
        bad.append(f"{path}: $ref")
    if not in_junctor and "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        bad.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        bad.append(f"{path}: properties and additionalProperties")
    for k, sub in node.get("properties", {}).items():
        bad += _structural_violations(sub, f"{path}.{k}", in_junctor)
    if "items" in node:
        bad += _structural_violations(node["items"], f"{path}[]", in_junctor)
    for j in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(node.get(j, [])):
            bad += _structural_violations(sub, f"{path}.{j}[{i}]", True)
    return bad


def test_schema_is_structural():
    assert _structural_violations(validate.openapi_schema()) == []


def test_every_cel_rule_has_a_python_twin():
    rules = validate.cel_rules()
    assert len(rules) >= 4
    assert set(rules) <= set(validate.CEL_TWINS)


def test_preprocessing_default_is_the_local_default():
    from streamtrain.preprocessing.spec import PreprocessSpec

    pre = validate.defaulted(load_example(ROOT / "examples/minimal.yaml"))["spec"]["preprocessing"]
    assert pre.pop("engine") == "embedded" and pre.pop("replicas") == 1
    assert PreprocessSpec.model_validate(pre) == PreprocessSpec.default()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_valid(path):
    resource = load_example(path)
    assert validate.errors(resource) == []
    # Defaults are themselves valid (the API server requires it).
    assert validate.errors(validate.defaulted(resource)) == []


def test_defaults_fill_minimal():
    spec = validate.defaulted(load_example(ROOT / "examples/minimal.yaml"))["spec"]
    assert spec["fleet"]["devices"] == 100 and spec["scorer"]["replicas"] == 2
    assert spec["mqtt"]["mode"] == "managed" and spec["kafka"]["mode"] == "managed"
    assert spec["model"]["layers"] == [16, 4, 16]


def _with(change: dict) -> dict:
    r = copy.deepcopy(load_example(ROOT / "examples/minimal.yaml"))
    r["spec"] = change
    return r


#: Real devices behind the managed broker's credentials (they may publish to devices/<user>/telemetry only).
REAL_DEVICES_WITH_CREDENTIALS = {
    "fleet": {"simulated": False},
    "mqtt": {
        "authentication": "credentials",
        "usersSecretRef": {"name": "users", "key": "users"},
        "username": {"secretKeyRef": {"name": "bridge", "key": "user"}},
        "password": {"secretKeyRef": {"name": "bridge", "key": "password"}},
    },
}

INVALID = [
    ({"fleet": {"devices": 0}}, "spec.fleet.devices: 0 is less than the minimum of 1"),
    ({"fleet": {"anomalyRate": 2}}, "spec.fleet.anomalyRate: Invalid value: should be less than or equal to 0.5"),
    # spec.model's bounds are TrainSettings' (threshold_k gt=0, validation_fraction lt=0.5).
    ({"model": {"thresholdK": 0}}, "spec.model.thresholdK: 0 is less than or equal to the minimum of 0"),
    ({"model": {"validationFraction": 0.5}}, "spec.model.validationFraction: Invalid value: should be less than 0.5"),
    ({"model": {"kind": "lstm"}}, "spec.model.kind: 'lstm' is not one of ['dense', 'windowed']"),
    ({"model": {"kind": "windowed", "smoothing": "2 of 3"}}, "spec.model.smoothing: '2 of 3' does not match"),
    (
        {"model": {"smoothing": "2/3"}},
        "spec.model.smoothing: Invalid value: model.smoothing needs model.kind windowed",
    ),
    (
        {"model": {"kind": "windowed"}},
        "spec.model.kind: Invalid value: model.kind windowed trains on the sequences topic",
    ),
    (
        {"model": {"kind": "windowed"}, "preprocessing": {"features": ["t"], "engine": "ksqldb", "sequences": {}}},
        "spec.model.kind: Invalid value: model.kind windowed trains on the sequences topic",
    ),
    ({"fleet": {"size": 10}}, "spec.fleet: Additional properties are not allowed ('size' was unexpected)"),
    ({"mqtt": {"mode": "external"}}, "spec.mqtt: Invalid value: mqtt.host is required when mqtt.mode is external"),
    ({"mqtt": {"mode": "cloud"}}, "spec.mqtt.mode: 'cloud' is not one of ['managed', 'external']"),
    ({"mqtt": {"password": "hunter2"}}, "spec.mqtt.password: 'hunter2' is not of type 'object'"),
    (
        {"mqtt": {"password": {"secretKeyRef": {"name": "s"}}}},
        "spec.mqtt.password.secretKeyRef: 'key' is a required property",
    ),
    (
        {"kafka": {"mode": "external"}},
        "spec.kafka: Invalid value: kafka.bootstrap is required when kafka.mode is external",
    ),
    ({"kafka": {"mode": "external", "bootstrap": "kafka"}}, "spec.kafka.bootstrap: 'kafka' does not match"),
    (
        {"kafka": {"replicationFactor": 3}},
        "spec.kafka: Invalid value: kafka.replicationFactor cannot exceed kafka.replicas",
    ),
    ({"kafka": {"partitions": 0}}, "spec.kafka.partitions: 0 is less than the minimum of 1"),
    ({"preprocessing": {"features": []}}, "spec.preprocessing.features: [] should be non-empty"),
    ({"preprocessing": {"features": ["t"], "engine": "flink"}}, "spec.preprocessing.engine: 'flink' is not one of"),
    (
        {"preprocessing": {"features": ["t"], "windows": {"size_seconds": 0}}},
        "spec.preprocessing.windows.size_seconds: 0 is less than the minimum of 1",
    ),
    ({"training": {"schedule": "every hour"}}, "spec.training.schedule: 'every hour' does not match"),
    ({"scorer": {"replicas": 0}}, "spec.scorer.replicas: 0 is less than the minimum of 1"),
    (
        {"scorer": {"replicas": 7}},
        "spec.scorer.replicas: Invalid value: scorer.replicas cannot exceed kafka.partitions",
    ),
    (
        {"kafka": {"partitions": 3}, "scorer": {"replicas": 4}},
        "spec.scorer.replicas: Invalid value: scorer.replicas cannot exceed kafka.partitions",
    ),
    (
        {"preprocessing": {"features": ["t"], "replicas": 7}},
        "spec.preprocessing.replicas: Invalid value: preprocessing.replicas cannot exceed kafka.partitions",
    ),
    (
        {"preprocessing": {"features": ["t"], "replicas": 0}},
        "spec.preprocessing.replicas: 0 is less than the minimum of 1",
    ),
    (
        {"scorer": {"autoscaling": {"enabled": True, "maxReplicas": 12}}},
        "spec.scorer.autoscaling.maxReplicas: Invalid value: scorer.autoscaling.maxReplicas cannot exceed kafka.partitions",
    ),
    (
        {"scorer": {"replicas": 1, "autoscaling": {"minReplicas": 7}}},
        "spec.scorer.autoscaling.minReplicas: Invalid value: scorer.autoscaling.minReplicas cannot exceed maxReplicas",
    ),
    (
        {"scorer": {"replicas": 1, "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}},
        "spec.scorer.autoscaling.minReplicas: Invalid value: scorer.autoscaling.minReplicas cannot exceed maxReplicas",
    ),
    (
        {"training": {"workers": 7}},
        "spec.training.workers: Invalid value: training.workers cannot exceed kafka.partitions",
    ),
    ({"training": {"workers": 0}}, "spec.training.workers: 0 is less than the minimum of 1"),
    (
        {"mqtt": {"ingest": "extension"}},
        "spec.mqtt.ingest: Invalid value: mqtt.ingest extension does not authenticate to Kafka yet",
    ),
    (
        {"mqtt": {"ingest": "extension", "mode": "external", "host": "broker"}, "kafka": {"authentication": "none"}},
        "spec.mqtt.ingest: Invalid value: mqtt.ingest extension runs inside the managed broker",
    ),
    ({"scorer": {"challenger": {"minAgreement": 1.5}}}, "spec.scorer.challenger.minAgreement: 1.5 is greater than"),
    ({"model": {"layers": []}}, "spec.model.layers: [] should be non-empty"),
    ({"ingest": {"preset": "modbus"}}, "spec.ingest.preset: 'modbus' is not one of"),
    ({"ingest": {"preset": "tasmota", "topics": []}}, "spec.ingest.topics: [] should be non-empty"),
    (
        {"ingest": {"topics": ["plant/{device_id}"]}},
        "spec.ingest.topics: Invalid value: preset streamtrain takes the topic devices/{device_id}/telemetry only",
    ),
    (
        {
            "ingest": {"preset": "zigbee2mqtt"},
            **REAL_DEVICES_WITH_CREDENTIALS,
        },
        "spec.ingest.preset: Invalid value: mqtt.authentication credentials lets a device publish to",
    ),
    ({"ingest": {"preset": "tasmota", "mapping": {"names": "camelCase"}}}, "spec.ingest.mapping.names: 'camelCase'"),
    ({"ingest": {"mapping": {"rename": {"a": 1}}}}, "spec.ingest.mapping.rename.a: 1 is not of type 'string'"),
    (
        {
            "ingest": {"mapping": {"ts_path": "t"}},
            **REAL_DEVICES_WITH_CREDENTIALS,
        },
        "spec.ingest.preset: Invalid value: mqtt.authentication credentials lets a device publish to",
    ),
]


@pytest.mark.parametrize("spec,message", INVALID, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(INVALID)])
def test_invalid_resources_rejected_with_clear_message(spec, message):
    errs = validate.errors(_with(spec))
    assert errs, f"accepted: {spec}"
    assert any(e.startswith(message) for e in errs), errs


def test_sparkplug_b_through_the_extension_accepted():
    """The extension decodes Sparkplug B as the bridge does (SparkplugDecoder.java): no rule refuses it."""
    spec = {
        "ingest": {"preset": "sparkplug-b"},
        "mqtt": {"ingest": "extension", "authentication": "none"},  # Sparkplug topics: any topic (credentials: one)
        "kafka": {"authentication": "none"},
    }
    assert validate.errors(_with(spec)) == []
    assert validate.errors(validate.defaulted(_with(spec))) == []
    assert not [r for r in validate.cel_rules() if "sparkplug" in r]


def test_missing_spec_rejected():
    r = load_example(ROOT / "examples/minimal.yaml")
    del r["spec"]
    assert validate.errors(r) == ["<root>: 'spec' is a required property"]


def test_long_names_rejected_and_the_longest_allowed_fits_every_child():
    from streamtrain.operator import render
    from streamtrain.operator.render import connections

    r = load_example(ROOT / "examples/full.yaml")
    r["metadata"]["name"] = "p" * 41
    assert validate.errors(r) == [
        "metadata.name: Invalid value: metadata.name must be at most 40 characters (children append suffixes)"
    ]
    r["metadata"]["name"] = "p" * 40
    assert validate.errors(r) == []
    children = render.render(r["metadata"]["name"], "ns", validate.defaulted(r)["spec"])
    for m in children:
        limit = {"CronJob": 52, "KafkaTopic": 253, "ConfigMap": 253}.get(m["kind"], 63)
        assert len(m["metadata"]["name"]) <= limit, m["metadata"]["name"]
    # Strimzi's bootstrap Service for the cluster must be a DNS-1035 label too.
    assert len(connections.kafka_bootstrap(r["metadata"]["name"], validate.defaulted(r)["spec"]).split(":")[0]) <= 63
