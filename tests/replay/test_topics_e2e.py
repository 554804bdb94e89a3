"""Topics keep records by arrival, custom topic names work on first use, and training says when
records it should have had are gone (real Kafka)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from streamtrain.kafka import TopicsMissing, create_missing_topics, producer_config, read_topic
from streamtrain.kafka_dataset import resolve_range

pytestmark = pytest.mark.e2e
YEARS_AGO_MS = 1_500_000_000_000  # July 2017


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (fut,) = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
    return {k: v.value for k, v in fut.result(30).items()}


def test_stream_topics_stamp_records_with_their_arrival_whatever_the_producer_says(pipeline):
    for topic in (pipeline.topic_raw, pipeline.topic_features, pipeline.topic_sequences, pipeline.topic_scores):
        assert topic_config(pipeline.kafka_bootstrap, topic)["message.timestamp.type"] == "LogAppendTime"
    before = time.time() * 1000
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    producer.produce(
        pipeline.topic_raw, b'{"device_id":"d","ts":1500000000.0,"seq":0,"x":1}', key=b"d", timestamp=YEARS_AGO_MS
    )
    assert producer.flush(30) == 0
    (msg,) = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=30)
    # Retention counts from this timestamp: the record stays its 72 h although its reading is from 2017.
    assert msg.timestamp()[1] >= before - 1000


def test_a_custom_topic_is_created_on_first_use_with_the_pipelines_settings(pipeline):
    custom = pipeline.model_copy(
        update={
            "topic_models": f"{pipeline.topic_models}.windowed{uuid.uuid4().hex[:4]}",
            "topic_scores": f"{pipeline.topic_scores}.windowed",
        }
    )
    created = create_missing_topics(custom, [custom.topic_models, custom.topic_scores, custom.topic_deadletter])
    assert sorted(created) == sorted([custom.topic_models, custom.topic_scores])  # the dead-letter topic existed
    models = topic_config(pipeline.kafka_bootstrap, custom.topic_models)
    assert models["cleanup.policy"] == "compact" and models["retention.ms"] == "-1"
    scores = topic_config(pipeline.kafka_bootstrap, custom.topic_scores)
    assert scores["message.timestamp.type"] == "LogAppendTime" and scores["cleanup.policy"] == "delete"
    md = AdminClient({"bootstrap.servers": pipeline.kafka_bootstrap}).list_topics(timeout=10).topics
    assert len(md[custom.topic_scores].partitions) == len(md[pipeline.topic_raw].partitions)  # as the raw topic
    assert create_missing_topics(custom, [custom.topic_models, custom.topic_scores]) == []


def test_a_topic_kafka_refuses_to_create_names_the_command_that_creates_it(pipeline):
    bad = pipeline.model_copy(update={"topic_models": "not/a/valid/topic"})
    with pytest.raises(TopicsMissing) as err:
        create_missing_topics(bad, [bad.topic_models])
    text = str(err.value)
    assert "not/a/valid/topic" in text and "STREAMTRAIN_TOPIC_MODELS=not/a/valid/topic streamtrain stack up" in text


def test_training_range_reports_records_deleted_before_it(pipeline):
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    for i in range(30):
        producer.produce(pipeline.topic_features, json.dumps({"device_id": "d", "seq": i, "x": 1.0}).encode(), key=b"d")
    assert producer.flush(30) == 0
    assert resolve_range(pipeline.kafka_bootstrap, pipeline.topic_features).gone == 0
    md = AdminClient({"bootstrap.servers": pipeline.kafka_bootstrap}).list_topics(timeout=10).topics
    (part,) = [
        p
        for p in md[pipeline.topic_features].partitions
        if resolve_range(pipeline.kafka_bootstrap, pipeline.topic_features).partitions[p][1] > 0
    ]
    admin = AdminClient({"bootstrap.servers": pipeline.kafka_bootstrap})
    (fut,) = admin.delete_records([TopicPartition(pipeline.topic_features, part, 12)]).values()
    fut.result(30)
    rng = resolve_range(pipeline.kafka_bootstrap, pipeline.topic_features)
    assert rng.gone == 12 and rng.records == 18
