"""spec.model reaches every model setting of `streamtrain train` with the CLI's defaults and bounds
(operator/streamtrain_operator/model_settings.py), checked against TrainSettings itself and through the
rendered trainer Job: no cluster."""

from __future__ import annotations

import copy
import math
import os
import typing

import pytest
import yaml
from pydantic import ValidationError

from streamtrain.operator import validate
from streamtrain.operator.model_settings import (
    COMMON_FIELDS,
    INT_LISTS,
    MODEL_FIELDS,
    NOT_EXPOSED,
    OPERATOR_DEFAULTS,
    model_env,
)
from streamtrain.operator.render import programs, trainer
from streamtrain.train_settings import TrainSettings
from tests.k8s.conftest import ROOT, load_example

CRD_FILE = ROOT / "charts/streamtrain/crds/streamingtrainings.yaml"
OWN_FIELDS = [f for f in TrainSettings.model_fields if f not in COMMON_FIELDS]


def committed_model_schema() -> dict:
    crd = yaml.safe_load(CRD_FILE.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"]


def _resource(model: dict, preprocessing: dict | None = None) -> dict:
    r = copy.deepcopy(load_example(ROOT / "examples/minimal.yaml"))
    r["spec"] = {"model": model, **({"preprocessing": preprocessing} if preprocessing else {})}
    return r


def _trainer_settings(env: list[dict], monkeypatch) -> TrainSettings:
    """TrainSettings as the trainer Pod builds them from its environment, and nothing else."""
    for key in list(os.environ):
        if key.startswith("STREAMTRAIN_"):
            monkeypatch.delenv(key)
    for e in env:
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
    return TrainSettings()


def _train_env(job: dict) -> list[dict]:
    return job["spec"]["template"]["spec"]["containers"][0]["env"]


def test_every_train_setting_is_exposed_or_excluded_with_a_reason():
    exposed = set(MODEL_FIELDS.values())
    undecided = set(OWN_FIELDS) - exposed - set(NOT_EXPOSED)
    assert not undecided, f"TrainSettings fields neither in spec.model nor in NOT_EXPOSED: {sorted(undecided)}"
    assert not exposed & set(NOT_EXPOSED), "a field cannot be both exposed and excluded"
    assert set(NOT_EXPOSED) <= set(OWN_FIELDS), "NOT_EXPOSED names a field TrainSettings does not have"
    assert all(len(why) > 20 for why in NOT_EXPOSED.values())
    # What issue 23 asks a cluster to reach.
    assert {"baselines", "model_kind", "smoothing", "window_score", "threshold_k", "from_end", "since_last"} <= exposed


def test_committed_crd_has_each_settings_default():
    model = committed_model_schema()
    for crd_name, field in MODEL_FIELDS.items():
        prop = model["properties"][crd_name]
        default = TrainSettings.model_fields[field].default
        if field in OPERATOR_DEFAULTS:
            default = OPERATOR_DEFAULTS[field][0]
        if field in INT_LISTS:
            default = [int(w) for w in default.split(",")]
        if default is None:
            assert "default" not in prop, crd_name
        else:
            assert prop["default"] == default and type(prop["default"]) is type(default), crd_name
        assert prop["description"].startswith(TrainSettings.model_fields[field].description)
    assert model["default"]["thresholdK"] == 8.0 and model["default"]["baselines"] == "global"
    # The one default a cluster does not share, said in the field itself.
    assert set(OPERATOR_DEFAULTS) == {"from_end"}
    assert "CronJob" in model["properties"]["fromEnd"]["description"]


def _probes(field: str) -> list:
    """Values around each of the field's bounds and choices, plus a few ordinary ones."""
    info = TrainSettings.model_fields[field]
    args = typing.get_args(info.annotation)
    if typing.get_origin(info.annotation) is typing.Literal:
        return [*args, "bogus"]
    kind = next((a for a in (bool, int, float, str) if a is info.annotation or a in args), None)
    if kind is bool:
        return [True, False]
    if kind is str:
        return [info.default] if info.default is not None else []
    out: list = [info.default] if info.default is not None else []
    for meta in info.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            bound = getattr(meta, attr, None)
            if bound is None:
                continue
            step = 1 if kind is int else 1e-3
            out += [bound - step, bound, bound + step]
    return [kind(v) for v in out]


@pytest.mark.parametrize("crd_name", [n for n, f in MODEL_FIELDS.items() if f not in INT_LISTS])
def test_crd_accepts_exactly_what_the_settings_accept(crd_name):
    """Each bound and choice, checked on both sides of it: the API server's schema (offline twin) and
    TrainSettings agree on every probe."""
    field = MODEL_FIELDS[crd_name]
    probes = _probes(field)
    for value in probes:
        try:
            TrainSettings(**{field: value})
            settings_ok = True
        except ValidationError:
            settings_ok = False
        errs = validate.errors(_resource({"kind": "windowed", crd_name: value}, {"features": ["t"], "sequences": {}}))
        assert (errs == []) == settings_ok, (
            f"{crd_name}={value!r}: settings {'accept' if settings_ok else 'refuse'}, CRD {errs}"
        )


def test_a_cluster_without_model_settings_trains_with_the_clis_defaults(monkeypatch):
    """The trainer Job of the smallest resource builds exactly TrainSettings() (but fromEnd, on purpose)."""
    spec = validate.defaulted(load_example(ROOT / "examples/minimal.yaml"))["spec"]
    job = next(m for m in trainer.trainer("demo", "ns", spec) if m["kind"] == "Job")
    on_cluster = _trainer_settings(_train_env(job), monkeypatch)
    for key in list(os.environ):
        if key.startswith("STREAMTRAIN_"):
            monkeypatch.delenv(key)
    cli = TrainSettings()
    for field in MODEL_FIELDS.values():
        expected = OPERATOR_DEFAULTS[field][0] if field in OPERATOR_DEFAULTS else getattr(cli, field)
        assert getattr(on_cluster, field) == expected, field
    assert cli.threshold_k == on_cluster.threshold_k == 8.0 and on_cluster.epochs is None  # epochs: the CLI's rule


def test_per_device_windowed_smoothed_spec_reaches_the_trainer_job_and_cronjob(monkeypatch):
    resource = _resource(
        {
            "kind": "windowed",
            "baselines": "device",
            "smoothing": "2/3",
            "windowScore": "newest",
            "warmupRecords": 120,
            "convFilters": [32, 8, 2],
            "kernelSize": 3,
            "thresholdK": 6.5,
            "learningRate": 0.002,
            "sinceLast": True,
            "trainRecords": 400,
        },
        {"features": ["t", "p"], "sequences": {"length": 24}},
    )
    resource["spec"]["training"] = {"schedule": "@hourly"}
    assert validate.errors(resource) == []
    spec = validate.defaulted(resource)["spec"]
    children = trainer.trainer("skab", "ns", spec)
    job = next(m for m in children if m["kind"] == "Job")
    cron = next(m for m in children if m["kind"] == "CronJob")
    env = {e["name"]: e.get("value") for e in _train_env(job)}
    assert env["STREAMTRAIN_MODEL_KIND"] == "windowed" and env["STREAMTRAIN_BASELINES"] == "device"
    assert env["STREAMTRAIN_SMOOTHING"] == "2/3" and env["STREAMTRAIN_WINDOW_SCORE"] == "newest"
    assert env["STREAMTRAIN_CONV_FILTERS"] == "32,8,2" and env["STREAMTRAIN_FEATURES"] == "t,p"
    assert _train_env(cron["spec"]["jobTemplate"]) == _train_env(job)
    s = _trainer_settings(_train_env(job), monkeypatch)
    assert (s.model_kind, s.baselines, s.smoothing, s.window_score) == ("windowed", "device", "2/3", "newest")
    assert (s.warmup_records, s.conv_filters, s.kernel_size) == (120, "32,8,2", 3)
    assert math.isclose(s.threshold_k, 6.5) and math.isclose(s.learning_rate, 0.002)
    assert s.since_last and s.from_end and s.train_records == 400
    # Untouched settings keep the CLI's defaults; the window length is the preprocessing spec's.
    assert s.window_threshold_factor == 4.0 and s.window_newest_k == 8.0 and s.min_steps == 1500
    pre = next(m for m in programs.preprocessor("skab", "ns", spec) if m["kind"] == "ConfigMap")
    assert yaml.safe_load(pre["data"]["preprocessing.yaml"])["sequences"] == {"length": 24}


def test_a_new_recipe_is_a_new_training_job():
    base = validate.defaulted(_resource({}))["spec"]
    per_device = validate.defaulted(_resource({"baselines": "device"}))["spec"]
    assert trainer.training_hash(base) != trainer.training_hash(per_device)


def test_model_env_leaves_out_unset_settings():
    assert model_env({"thresholdK": 8.0, "fromEnd": False}) == [
        {"name": "STREAMTRAIN_THRESHOLD_K", "value": "8.0"},
        {"name": "STREAMTRAIN_FROM_END", "value": "false"},
    ]
