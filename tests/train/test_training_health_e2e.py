"""Real recordings' awkward channels on real Kafka and TensorFlow: a channel constant for the
whole training history and a two-valued channel must not wreck per-device training, and a run
that learns nothing says so in its log, its manifest and `streamtrain evaluate`."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from confluent_kafka import Producer

from streamtrain.kafka import producer_config
from streamtrain.model import LoadedModel
from streamtrain.modelcodec import read_versions
from tests.programs import settings_env
from streamtrain.trainer.train import TrainSettings, train_once

DEVICES = 6
CHANNELS = ["current", "pressure", "temperature", "voltage", "valve"]


def recording(rng: np.random.Generator, device: int, n: int) -> np.ndarray:
    """Load-driven channels at different scales, a supply voltage stuck on 230 V and a valve
    that opened twice (as in a short real recording)."""
    load = rng.uniform(0.2, 0.8, n)
    rows = np.column_stack([1.5 + 2 * load + rng.normal(0, .03, n), 3 + 1.5 * load + rng.normal(0, .03, n),
                            60 + 5 * device + 25 * load + rng.normal(0, .4, n), np.full(n, 230.0), np.zeros(n)])
    rows[rng.choice(n, 2, replace=False), 4] = 1.0
    return rows


def produce(s, rows_by_device: dict[str, np.ndarray], names: list[str]) -> None:
    p = Producer(producer_config(s.kafka_bootstrap))
    for device, rows in rows_by_device.items():
        for seq, row in enumerate(rows):
            body = {"device_id": device, "ts": time.time(), "seq": seq, "label": 0,
                    **{c: float(v) for c, v in zip(names, row)}}
            p.produce(s.topic_features, json.dumps(body).encode(), key=device.encode())
    assert p.flush(30) == 0


@pytest.mark.e2e
def test_a_constant_channel_does_not_wreck_per_device_training(pipeline):
    rng = np.random.default_rng(3)
    data = {f"rig-{d}": recording(rng, d, 300) for d in range(DEVICES)}
    produce(pipeline, data, CHANNELS)
    meta = train_once(TrainSettings(kafka_bootstrap=pipeline.kafka_bootstrap, topic_features=pipeline.topic_features,
                                    topic_models=pipeline.topic_models, baselines="device", epochs=40, cache=True,
                                    min_records=100))
    health = meta["training_health"]
    assert health["status"] == "ok" and health["error_ratio"] < 0.5, health
    assert meta["metrics"]["loss"][-1] < 1.0, meta["metrics"]["loss"][-5:]  # not the ~1e3 of a collapsed scale
    b, names = meta["baselines"], meta["feature_names"]  # inferred from the records, in sorted order
    voltage, valve = names.index("voltage"), names.index("valve")
    # Constant over the whole fleet: 1 % of its magnitude; the two-valued valve: its resolution (1).
    assert all(row[voltage] == pytest.approx(2.3) for row in b["std"]), b["std"]
    assert all(row[valve] == pytest.approx(1.0) for row in b["std"]), b["std"]
    assert meta["scale_floors"]["raised"]["constant"]["voltage"] == DEVICES
    assert meta["scale_floors"]["raised"]["resolution"]["valve"] == DEVICES

    model = LoadedModel.from_version(read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)[-1])
    fresh = {d: recording(rng, i, 200) for i, d in enumerate(data)}
    normal = np.concatenate(list(fresh.values()))[:, [CHANNELS.index(f) for f in names]].astype(np.float32)
    devices = [d for d, rows in fresh.items() for _ in rows]
    assert model.assess(normal, devices).flags.mean() < 0.05
    broken = normal.copy()
    broken[:, names.index("temperature")] += 15  # far from what current and pressure imply
    assert model.assess(broken, devices).flags.mean() > 0.95


@pytest.mark.e2e
def test_a_run_that_learns_nothing_says_so_in_log_manifest_and_evaluate(pipeline):
    rng = np.random.default_rng(5)
    names = [f"noise{i}" for i in range(12)]
    produce(pipeline, {f"n-{d}": rng.normal(0, 1, (200, len(names))) for d in range(4)}, names)
    env = settings_env(pipeline)
    # Twelve independent channels through a one-unit bottleneck: nothing to learn.
    proc = subprocess.run([sys.executable, "-m", "streamtrain.cli.main", "train", "--layers", "16,1,16",
                           "--epochs", "5", "--cache"], env={**env, "STREAMTRAIN_MIN_RECORDS": "100"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warning = [json.loads(line) for line in proc.stderr.splitlines() if '"training_unhealthy"' in line]
    assert warning and warning[0]["status"] == "no_better_than_constant", proc.stderr[-3000:]
    [mv] = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)
    health = mv.metadata["training_health"]
    assert health["status"] == "no_better_than_constant" and health["error_ratio"] >= 0.9, health

    # Scores of that version on the scores topic: evaluate shows the warning beside the quality table.
    p = Producer(producer_config(pipeline.kafka_bootstrap))
    for seq in range(20):
        p.produce(pipeline.topic_scores, json.dumps({"device_id": "n-0", "seq": seq, "model_version": mv.version,
                                                     "is_anomaly": seq % 2 == 0, "label": 0}).encode())
    assert p.flush(30) == 0
    out = subprocess.run([sys.executable, "-m", "streamtrain.cli.main", "evaluate"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"v{mv.version} training: WARNING no_better_than_constant" in out.stdout, out.stdout
    as_json = subprocess.run([sys.executable, "-m", "streamtrain.cli.main", "evaluate", "--json"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert json.loads(as_json.stdout)["training_health"][str(mv.version)]["status"] == "no_better_than_constant"
