"""The trainer's publication step (trainer/publish.py) on real Kafka: two trainers of one models topic
cannot publish under the same number (issue 24, findings 5 and 6), and the version bound stops numbering
loudly instead of publishing what readers reject."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.trainer.publish import Publisher
from streamtrain.trainer.settings import TrainError, TrainSettings


def tiny_model():
    from streamtrain.trainer.networks import build_autoencoder  # noqa: PLC0415 - TensorFlow only here

    return build_autoencoder(2, [2, 1, 2], 1e-2, seed=1)


def meta(version: int) -> dict:
    """What Publisher.publish reads of a manifest (no ONNX export: ``requires`` is set)."""
    return {
        "version": version,
        "parent_version": None,
        "feature_names": ["a", "b"],
        "threshold": 0.5,
        "format": "keras-v3",
        "requires": ["test"],
        "record_count": 1,
        "metrics": {"loss": [1.0]},
        "train_seconds": 0.0,
        "model": "dense_autoencoder",
        "training_health": {"status": "ok"},
    }


def settings(pipeline, **kw) -> TrainSettings:
    return TrainSettings(kafka_bootstrap=pipeline.kafka_bootstrap, topic_models=pipeline.topic_models, **kw)


@pytest.mark.e2e
def test_a_second_trainer_of_the_topic_fences_the_first_so_no_number_is_published_twice(pipeline):
    model, norm = tiny_model(), SimpleNamespace(baselines=None)
    first = Publisher(settings(pipeline))
    v_first, _ = first.number(None, None)
    second = Publisher(settings(pipeline))  # e.g. the CronJob's run while the recipe Job still trains
    v_second, _ = second.number(None, None)
    assert v_first == v_second == 1  # both read an empty topic: the collision the fencing must stop
    second.publish(model, meta(v_second), norm, None)
    with pytest.raises(TrainError, match="not published"):
        first.publish(model, meta(v_first), norm, None)
    versions = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models, timeout=15)
    assert [mv.version for mv in versions] == [1]
    third = Publisher(settings(pipeline))
    assert third.number(None, None) == (2, 1)


@pytest.mark.e2e
def test_numbering_ignores_versions_past_the_bound_and_stops_loudly_at_it(pipeline):
    from confluent_kafka import Producer  # noqa: PLC0415

    from streamtrain.kafka import producer_config  # noqa: PLC0415

    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    publish_model(producer, pipeline.topic_models, b"poison", {**meta(999_999_999), "requires": []})
    assert Publisher(settings(pipeline)).number(None, None) == (1, None)  # 999,999,999 does not count
    publish_model(producer, pipeline.topic_models, b"x", {**meta(5), "requires": []})
    with pytest.raises(TrainError, match="model_max_version 5"):
        Publisher(settings(pipeline, model_max_version=5)).number(None, None)


@pytest.mark.e2e
def test_publishing_deletes_versions_beyond_the_kept_number_in_the_same_transaction(pipeline):
    from confluent_kafka import Producer  # noqa: PLC0415

    from streamtrain.kafka import producer_config, read_topic  # noqa: PLC0415
    from streamtrain.modelcodec import version_keys  # noqa: PLC0415

    model, norm = tiny_model(), SimpleNamespace(baselines=None)
    for _ in range(3):
        publisher = Publisher(settings(pipeline, model_keep_versions=2))
        version, parent = publisher.number(None, None)
        publisher.publish(model, {**meta(version), "parent_version": parent}, norm, None)
    versions = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models, timeout=15)
    assert [mv.version for mv in versions] == [2, 3]  # v1 is gone for readers before compaction runs
    records = read_topic(pipeline.kafka_bootstrap, pipeline.topic_models, timeout=15)
    tombstones = [m.key() for m in records if m.value() is None]
    assert tombstones and all(k.startswith(b"model/1/") for k in tombstones)
    assert tombstones[-1] == b"model/1/manifest" and len(tombstones) == len(set(tombstones))
    assert len(tombstones) == len(version_keys(versions[0]))  # v1 and v2 have the same shape here
    # Someone deletes the newest version: its number is still not given again.
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    producer.produce(pipeline.topic_models, None, key=b"model/3/manifest")
    assert producer.flush(10) == 0
    assert Publisher(settings(pipeline)).number(None, None) == (4, 2)
