"""Training straight from Kafka with real TensorFlow: exact ranges, stream normalization,
several epochs re-read, model versions on the topic, tensorflow-io backend, reproduction."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from streamtrain.kafka import producer_config
from streamtrain.kafka_dataset import KafkaSource, resolve_range
from streamtrain.model import LoadedModel, save_artefact
from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.trainer import tfio_source
from streamtrain.trainer.tfio_source import tfio_dataset
from streamtrain.trainer.train import TrainSettings, build_autoencoder, reproduce, train_once

FEATURES = ["current", "pressure", "temperature", "vibration"]


def produce_features(pipeline, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = Producer(producer_config(pipeline.kafka_bootstrap))
    rows = []
    for i in range(n):
        load = rng.uniform(0.2, 0.8)
        r: dict[str, Any] = {
            "device_id": f"d{i % 10}",
            "ts": time.time(),
            "seq": i // 10,
            "current": 1.5 + 2 * load + rng.normal(0, 0.03),
            "pressure": 3 + 1.5 * load + rng.normal(0, 0.03),
            "temperature": 60 + 25 * load + rng.normal(0, 0.4),
            "vibration": 0.3 + 0.4 * load + rng.normal(0, 0.008),
            "label": 0,
        }
        rows.append([r[f] for f in FEATURES])
        p.produce(pipeline.topic_features, json.dumps(r).encode(), key=r["device_id"].encode())
    assert p.flush(30) == 0
    return np.asarray(rows)


def settings_for(pipeline, **kw) -> TrainSettings:
    return TrainSettings(
        kafka_bootstrap=pipeline.kafka_bootstrap,
        topic_features=pipeline.topic_features,
        topic_models=pipeline.topic_models,
        **{"epochs": 3, "min_records": 100, **kw},
    )


@pytest.mark.e2e
def test_training_from_kafka_publishes_a_version_with_exact_provenance(pipeline):
    data = produce_features(pipeline, 3000)
    meta = train_once(settings_for(pipeline, train_records=2400))
    assert meta["version"] == 1 and meta["parent_version"] is None
    parts = meta["source"]["partitions"]
    assert sum(e - s for s, e in parts.values()) == 2400 == meta["record_count"]
    assert all(s == 0 for s, _ in parts.values())  # the oldest records
    assert meta["feature_names"] == FEATURES  # inferred: numeric fields minus identity and ground truth
    assert meta["kafka_reads_during_fit"] >= 3  # every epoch read the range from Kafka again
    assert len(meta["metrics"]["loss"]) == 3 and meta["metrics"]["loss"][-1] < meta["metrics"]["loss"][0]
    # Normalization learned from the stream matches the data it covered.
    sample_std = data.std(0)
    assert np.allclose(meta["normalization"]["std"], sample_std, rtol=0.1)
    assert np.allclose(meta["normalization"]["mean"], data.mean(0), rtol=0.02)

    [mv] = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)
    model = LoadedModel.from_version(mv)
    normal = data[:200].astype(np.float32)
    broken = normal.copy()
    broken[:, 2] += 25  # temperature far from what current and pressure imply
    assert np.mean(model.score(normal) > model.threshold) < 0.05
    assert np.mean(model.score(broken) > model.threshold) > 0.95

    second = train_once(settings_for(pipeline, train_records=500, from_end=True))
    assert second["version"] == 2 and second["parent_version"] == 1
    assert sum(e for _, e in second["source"]["partitions"].values()) == 3000  # the newest records


@pytest.mark.e2e
def test_reproducing_a_version_reads_the_same_records(pipeline):
    produce_features(pipeline, 1500, seed=4)
    meta = train_once(settings_for(pipeline, train_records=1000))
    again = reproduce(settings_for(pipeline), meta["version"])
    assert again["record_count"][0] == again["record_count"][1] == 1000
    assert again["normalization_equal"] is True


@pytest.mark.e2e
def test_tensorflow_io_backend_trains_against_our_broker(pipeline):
    """tensorflow-io 0.37.1 (librdkafka 1.5.0) reads Kafka 3.9.1 partitions by offset range."""
    produce_features(pipeline, 1200, seed=5)
    meta = train_once(settings_for(pipeline, train_records=1000, backend="tfio", epochs=2))
    assert meta["record_count"] == 1000 and meta["config"]["backend"] == "tfio"
    assert len(meta["metrics"]["loss"]) == 2


@pytest.mark.e2e
def test_both_readers_read_exactly_the_offset_range(pipeline, monkeypatch):
    """The newest 300 of 900 records (every partition starts past offset 0), read by the parallel
    confluent-kafka reader and by tensorflow-io: the same rows, each once, also when tensorflow-io's
    read windows cut a partition's range part way."""
    produce_features(pipeline, 900, seed=6)
    rng = resolve_range(pipeline.kafka_bootstrap, pipeline.topic_features, max_records=300, newest=True)
    assert rng.records == 300 and all(s > 0 for s, _ in rng.partitions.values())
    expected = sorted(map(tuple, np.round(KafkaSource(pipeline.kafka_bootstrap, rng, FEATURES).arrays()[0], 5)))
    assert len(expected) == 300
    oldest = KafkaSource(
        pipeline.kafka_bootstrap,
        resolve_range(pipeline.kafka_bootstrap, pipeline.topic_features, max_records=300),
        FEATURES,
    ).arrays()[0]
    assert sorted(map(tuple, np.round(oldest, 5))) != expected  # a range that starts elsewhere reads other rows
    for window in (1024, 7):  # and again: each epoch creates its readers anew
        monkeypatch.setattr(tfio_source, "_WINDOW", window)
        got = np.concatenate([x.numpy() for x, _ in tfio_dataset(pipeline.kafka_bootstrap, rng, FEATURES, 64)])
        assert sorted(map(tuple, np.round(got, 5))) == expected


@pytest.mark.e2e
def test_model_bigger_than_one_kafka_message_round_trips(pipeline):
    model = build_autoencoder(4, [1024, 256, 1024], 0.001, seed=1)
    artefact = save_artefact(model)
    assert len(artefact) > 2 * 1024 * 1024  # above the broker's message.max.bytes
    meta = {
        "version": 1,
        "parent_version": None,
        "feature_names": FEATURES,
        "threshold": 1.0,
        "format": "keras-v3",
        "normalization": {"mean": [0.0] * 4, "std": [1.0] * 4},
    }
    publish_model(Producer(producer_config(pipeline.kafka_bootstrap)), pipeline.topic_models, artefact, meta)
    [mv] = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models, timeout=30)
    assert mv.artefact == artefact
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    loaded = LoadedModel.from_version(mv)
    assert np.allclose(loaded.keras_model(x).numpy(), model(x).numpy(), atol=1e-6)
