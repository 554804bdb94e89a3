"""Two workers (MultiWorkerMirroredStrategy, two local processes, each reading its own partitions)
publish one version whose detection quality on labelled data matches a single worker's trained on
the same range, and whose manifest says which partitions each worker read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamtrain.model import LoadedModel
from streamtrain.modelcodec import read_versions
from streamtrain.quality import Quality
from streamtrain.trainer.distributed import run_local_workers
from streamtrain.trainer.train import TrainSettings, train_once
from tests.train.test_trainer_e2e import produce_features

#: Largest difference between the two versions' F1, false-alarm and missed-alarm rates on the same data.
TOLERANCE = {"f1": 0.05, "false_alarm_rate": 0.02, "missed_alarm_rate": 0.05}


def labelled(seed: int, n: int = 3000, shift: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Readings like the training data; every 10th has a temperature ``shift`` degrees off what the load implies."""
    rng = np.random.default_rng(seed)
    load = rng.uniform(0.2, 0.8, n)
    x = np.column_stack(
        [
            1.5 + 2 * load + rng.normal(0, 0.03, n),
            3 + 1.5 * load + rng.normal(0, 0.03, n),
            60 + 25 * load + rng.normal(0, 0.4, n),
            0.3 + 0.4 * load + rng.normal(0, 0.008, n),
        ]
    )
    y = np.zeros(n, bool)
    y[::10] = True
    x[y, 2] += shift * rng.choice([-1, 1], y.sum())
    return x.astype(np.float32), y


def quality(mv, x: np.ndarray, y: np.ndarray) -> dict:
    model = LoadedModel.from_version(mv)
    q = Quality()
    for predicted, actual in zip(model.score(x) > model.threshold, y):
        q.add(bool(predicted), bool(actual))
    return {"f1": q.f1, "false_alarm_rate": q.false_alarm_rate, "missed_alarm_rate": q.missed_alarm_rate}


@pytest.mark.e2e
def test_two_workers_publish_one_version_as_good_as_one_worker(pipeline):
    produce_features(pipeline, 6000, seed=11)
    s = TrainSettings(
        kafka_bootstrap=pipeline.kafka_bootstrap,
        topic_features=pipeline.topic_features,
        topic_models=pipeline.topic_models,
        train_records=6000,
        epochs=8,
        min_records=100,
    )
    train_once(s)
    # The range is not pinned: worker 0 resolves it and sends it to worker 1 (nothing arrives meanwhile,
    # so it is the single worker's range, checked below).
    code, out = run_local_workers(s, 2, timeout=600)
    assert code == 0, out
    assert json.loads(out)["version"] == 2

    one, two = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)
    m1, m2 = one.metadata, two.metadata
    assert m2["source"] == m1["source"] and m2["record_count"] == m1["record_count"] == 6000
    assert m2["config"]["workers"] == 2 and m1["config"]["workers"] == 1
    assert m2["distribution"]["partitions"] == {"0": [0, 2], "1": [1]}  # round-robin over the 3 partitions
    assert m2["distribution"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert np.allclose(m2["normalization"]["mean"], m1["normalization"]["mean"])  # learned from the whole range
    assert np.allclose(m2["normalization"]["std"], m1["normalization"]["std"])
    assert m2["training_health"]["status"] == "ok", m2["training_health"]

    x, y = labelled(seed=12)
    q1, q2 = quality(one, x, y), quality(two, x, y)
    assert q1["f1"] > 0.8, q1  # the data is hard enough to tell a trained model from an untrained one
    for name, limit in TOLERANCE.items():
        assert abs(q1[name] - q2[name]) <= limit, (name, q1, q2)
