"""Unit tests without brokers: the heterogeneous simulator, per-device sequences in the engine,
per-device baselines in a model version, k-of-m smoothing, quality per device."""

from __future__ import annotations

import numpy as np
import pytest

from streamtrain.preprocessing.engine import Engine
from streamtrain.quality import evaluate, format_devices
from streamtrain.simulator.fleet import CHANNELS
from streamtrain.simulator.hetero import _PATTERNS, HETERO_KINDS, HeteroConfig, HeterogeneousFleet
from tests.fleet.stream import spec_with_sequences


def run(cfg: HeteroConfig, steps: int):
    fleet = HeterogeneousFleet(cfg)
    out = [fleet.step() for _ in range(steps)]
    values = np.stack([v for v, _, _ in out], axis=1)  # [devices, steps, channels]
    labels = np.stack([lab for _, lab, _ in out], axis=1)
    kinds = np.stack([k for _, _, k in out], axis=1)
    return fleet, values, labels, kinds


def test_fleet_has_device_types_with_baselines_further_apart_than_the_lasting_faults():
    fleet, values, _, _ = run(HeteroConfig(devices=30, seed=1), 10)
    assert len(set(fleet.device_types)) == 3
    for c, name in enumerate(CHANNELS):
        # Spread of the devices' operating points vs the largest degraded shift of that channel.
        biggest_shift = max(abs(p.get(c, 0.0)) for p in _PATTERNS) * fleet.cfg.anomaly_size
        assert np.std(fleet.base[:, c]) > biggest_shift * np.mean(fleet.scale[:, c]), name
    noise = fleet.noise[:, 0] / np.mean(fleet.noise[:, 0])
    assert noise.max() / noise.min() > 2, "devices have their own noise level"


def test_same_seed_same_fleet_and_labels_mark_every_anomalous_reading():
    _, v1, l1, k1 = run(HeteroConfig(devices=12, seed=3, fault_fraction=0.1), 400)
    _, v2, l2, _ = run(HeteroConfig(devices=12, seed=3, fault_fraction=0.1), 400)
    assert np.array_equal(v1, v2) and np.array_equal(l1, l2)
    assert np.array_equal(l1 == 1, k1 >= 0), "label is 1 exactly on the readings of an episode"
    degraded = HETERO_KINDS.index("degraded")
    runs = []
    for d in range(12):
        length = 0
        for k in k1[d]:  # a run still open at the end is cut by the test, not over
            if k == degraded:
                length += 1
            elif length:
                runs.append(length)
                length = 0
    assert runs and min(runs) >= 20, "degraded states last (20-180 readings by default)"


@pytest.mark.parametrize("fraction", [0.01, 0.3])
def test_fault_fraction_makes_labels_imbalanced_either_way(fraction):
    _, _, labels, _ = run(HeteroConfig(devices=40, seed=5, fault_fraction=fraction), 1500)
    assert abs(labels.mean() - fraction) < fraction * 0.5, labels.mean()


def test_engine_builds_per_device_sequences_of_the_last_n_readings():
    spec = spec_with_sequences()
    n = spec.sequences.length
    engine = Engine(spec)
    out = []
    for seq in range(n + 2):
        for dev in ("a", "b"):
            rec = {
                "device_id": dev,
                "ts": 1000.0 + seq,
                "seq": seq,
                "temperature": 50.0 + seq,
                "current": 1.0,
                "vibration": 0.2,
                "pressure": 2.0 if dev == "a" else 3.0,
                "label": int(seq == n + 1),
            }
            out += engine.process(rec).sequences
    assert [(q["device_id"], q["seq"]) for q in out] == [(d, s) for s in (n - 1, n, n + 1) for d in ("a", "b")]
    last = out[-1]
    assert last["features"] == spec.feature_names and len(last["values"]) == n
    col = spec.feature_names.index("temperature")
    assert [row[col] for row in last["values"]] == [50.0 + s for s in range(2, n + 2)]  # oldest first
    assert last["values"][-1][spec.feature_names.index("power")] == 3.0  # derived features included
    assert last["label"] == 1 and out[0]["label"] == 0


def _model(meta_extra: dict, window: int | None = None):
    from streamtrain.model import LoadedModel
    from streamtrain.trainer.train import build_autoencoder, build_conv_autoencoder

    km = (
        build_autoencoder(2, [4, 1, 4], 0.01, 1)
        if window is None
        else build_conv_autoencoder(window, 2, [4, 1], 3, 0.01, 1)
    )
    meta = {
        "version": 1,
        "feature_names": ["a", "b"],
        "threshold": 0.5,
        "format": "keras-v3",
        "normalization": {"mean": [0.0, 0.0], "std": [1.0, 1.0]},
        **meta_extra,
    }
    return LoadedModel(km, meta)


def test_per_device_baselines_normalize_each_device_and_mark_fallback_and_warmup():
    from streamtrain.baselines import DeviceBaselines

    b = DeviceBaselines(
        50,
        {"hot": 0},
        np.array([[100.0, 10.0]]),
        np.array([[2.0, 1.0]]),
        np.array([0.25]),
        np.array([300]),
        {"young": 7},
    )
    model = _model({"baselines": b.as_metadata(), "requires": ["device_baselines"]})
    x = np.array([[100.0, 10.0], [100.0, 10.0], [100.0, 10.0]], np.float32)
    judged = model.assess(x, ["hot", "young", "stranger"])
    assert judged.baselines == ["device", "warmup", "fallback"]
    assert judged.baseline_records == [300, 7, 0]
    assert judged.thresholds.tolist() == [0.25, 0.5, 0.5]
    # The hot device at its own operating point is at the origin after its own normalization; the
    # fallback (fleet) normalization leaves it far away.
    assert judged.scores[0] < judged.scores[2]
    assert model.score(x[:1])[0] == pytest.approx(judged.scores[2], rel=1e-5)
    assert judged.fields(1) == {"baseline": "warmup", "baseline_records": 7}


def test_k_of_m_smoothing_flags_only_when_k_of_the_last_m_readings_exceed():
    model = _model({"input": {"kind": "sequences", "length": 8}, "smoothing": {"k": 2, "m": 3}}, window=8)
    errors = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 1.0],  # one reading over: not flagged
            [0, 0, 0, 0, 0, 1.0, 0, 1.0],  # two of the last three: flagged
            [0, 0, 0, 0, 1.0, 1.0, 0, 0],
        ]
    )  # two, but only one within the last three
    model._errors = lambda xn: errors  # the decision rule, independent of the network
    judged = model.assess(np.zeros((3, 8, 2), np.float32), ["a", "b", "c"])
    assert judged.flags.tolist() == [False, True, False]
    assert judged.scores.tolist() == [1.0, 1.0, 0.0]
    assert judged.baselines == ["global"] * 3


def test_model_refuses_what_it_cannot_score():
    from streamtrain.model import BadInput

    model = _model({"input": {"kind": "sequences", "length": 8}}, window=8)
    with pytest.raises(BadInput, match="8"):
        model.extract({"features": ["a", "b"], "values": [[1, 2]] * 5})
    with pytest.raises(BadInput):
        model.extract({"features": ["a"], "values": [[1]] * 8})
    assert len(model.extract({"features": ["b", "a", "c"], "values": [[2, 1, 0]] * 8})) == 8


def test_quality_per_device_and_per_baseline():
    scores = [
        {"device_id": "a", "seq": i, "label": int(i < 10), "is_anomaly": i < 8, "baseline": "device"}
        for i in range(100)
    ]
    scores += [
        {"device_id": "b", "seq": i, "label": 0, "is_anomaly": i < 5, "baseline": "fallback"} for i in range(100)
    ]
    ev = evaluate(scores)
    a, b = ev.by_device["a"], ev.by_device["b"]
    assert (a.tp, a.fn, a.fp) == (8, 2, 0) and a.recall == 0.8
    assert b.false_alarm_rate == 0.05 and b.precision == 0.0
    assert ev.by_baseline["fallback"].fp == 5
    text = format_devices(ev)
    assert "a" in text and "0.05" in text and "fallback" in text


def test_fleet_spec_in_docs_is_the_default_plus_sequences():
    from pathlib import Path

    from streamtrain.preprocessing.spec import PreprocessSpec

    spec = PreprocessSpec.load(Path(__file__).resolve().parents[3] / "docs" / "fleet_spec.yaml")
    assert spec.sequences.length == 16
    assert spec.model_copy(update={"sequences": None}) == PreprocessSpec.default()


def test_simulate_profiles_build_the_right_fleet_and_reject_bad_options():
    from streamtrain.simulator.cli import make_fleet
    from streamtrain.simulator.fleet import Fleet
    from streamtrain.simulator.settings import SimulatorSettings

    s = SimulatorSettings(devices=6, seed=1)
    assert isinstance(make_fleet("uniform", s, None, "pump", 0.05, "20,180"), Fleet)
    fleet = make_fleet("heterogeneous", s, "spike,degraded,stuck", "pump,fan", 0.3, "30,60")
    assert isinstance(fleet, HeterogeneousFleet) and set(fleet.device_types) == {"pump", "fan"}
    assert fleet.cfg.episode_readings == (30, 60) and "stuck" in fleet.cfg.anomaly_kinds
    msg = fleet.messages(np.zeros(6))[0][1]
    assert msg["device_type"] == "pump" and set(CHANNELS) <= set(msg) and msg["label"] in (0, 1)
    with pytest.raises(ValueError, match="episode-readings"):
        make_fleet("heterogeneous", s, None, "pump", 0.05, "long")
    with pytest.raises(ValueError, match="unknown device types"):
        make_fleet("heterogeneous", s, None, "boat", 0.05, "20,180")
