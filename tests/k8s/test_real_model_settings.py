"""spec.model on a real kube-apiserver (``make test-k8s``): the server itself fills in the trainer's
defaults from the generated CRD, and evaluates the model rules against them (the preprocessing default
carries ``sequences: null``)."""

from __future__ import annotations

import json

import pytest

from streamtrain.operator import validate
from streamtrain.operator.model_settings import INT_LISTS, MODEL_FIELDS, OPERATOR_DEFAULTS
from streamtrain.train_settings import TrainSettings
from tests.k8s.conftest import ROOT, load_example

pytestmark = pytest.mark.kube

NS = "st-model-settings"


@pytest.fixture(scope="module")
def cluster(crds):
    crds.kubectl("create", "namespace", NS, check=False)
    return crds


def create(cp, spec: dict):
    resource = load_example(ROOT / "examples/minimal.yaml")
    resource = {**resource, "metadata": {**resource["metadata"], "namespace": NS}, "spec": spec}
    return cp.kubectl(
        "create", "--dry-run=server", "-n", NS, "-f", "-", "-o", "json", check=False, input=json.dumps(resource)
    )


def test_server_fills_in_the_trainers_defaults(cluster):
    res = create(cluster, {})
    assert res.returncode == 0, res.stderr
    model = json.loads(res.stdout)["spec"]["model"]
    assert model["thresholdK"] == 8.0 and model["baselines"] == "global" and model["kind"] == "dense"
    assert "epochs" not in model and "smoothing" not in model  # no default: the trainer's own rule
    for crd_name, field in MODEL_FIELDS.items():
        default = TrainSettings.model_fields[field].default
        default = OPERATOR_DEFAULTS[field][0] if field in OPERATOR_DEFAULTS else default
        if field in INT_LISTS:
            default = [int(w) for w in default.split(",")]
        assert model.get(crd_name) == default, crd_name
    # The offline twin (operator tests, validate.defaulted) fills in the same.
    assert model == validate.defaulted(load_example(ROOT / "examples/minimal.yaml"))["spec"]["model"]


def test_server_takes_a_per_device_windowed_model_and_refuses_one_without_sequences(cluster):
    windowed = {"kind": "windowed", "baselines": "device", "smoothing": "2/3"}
    res = create(cluster, {"model": windowed, "preprocessing": {"features": ["t"], "sequences": {"length": 24}}})
    assert res.returncode == 0, res.stderr
    spec = json.loads(res.stdout)["spec"]
    assert spec["model"]["baselines"] == "device" and spec["model"]["windowNewestK"] == 8.0
    assert spec["preprocessing"]["sequences"] == {"length": 24}
    res = create(cluster, {"model": windowed})  # the default preprocessing builds no sequences
    assert res.returncode != 0 and "model.kind windowed trains on the sequences topic" in res.stderr, res.stderr
    assert validate.errors(load_example(ROOT / "examples/minimal.yaml") | {"spec": {"model": windowed}})
    res = create(cluster, {"model": {"smoothing": "2/3"}})
    assert res.returncode != 0 and "model.smoothing needs model.kind windowed" in res.stderr, res.stderr
