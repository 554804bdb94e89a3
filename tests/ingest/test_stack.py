"""The local stack: real brokers, idempotent `up`, the pipeline topics as declared."""

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from streamtrain.kafka import ensure_topics
from streamtrain.topics import pipeline_topics

pytestmark = pytest.mark.e2e


def test_up_twice_is_harmless_and_status_is_ready(local_stack):
    before = local_stack.status()
    after = local_stack.up(create_topics=False)
    assert before["kafka"]["pid"] == after["kafka"]["pid"] is not None
    assert before["hivemq"]["pid"] == after["hivemq"]["pid"] is not None
    assert after["kafka"]["ready"] and after["hivemq"]["ready"]


def test_pipeline_topics_have_their_partitions_and_policies(pipeline):
    admin = AdminClient({"bootstrap.servers": pipeline.kafka_bootstrap})
    md = admin.list_topics(timeout=10)
    assert len(md.topics[pipeline.topic_raw].partitions) == 3
    assert len(md.topics[pipeline.topic_models].partitions) == 1
    res = ConfigResource(ConfigResource.Type.TOPIC, pipeline.topic_models)
    cfg = admin.describe_configs([res])[res].result(10)
    assert cfg["cleanup.policy"].value == "compact"
    raw = ConfigResource(ConfigResource.Type.TOPIC, pipeline.topic_raw)
    assert admin.describe_configs([raw])[raw].result(10)["cleanup.policy"].value == "delete"
    # Creating again changes nothing and does not fail.
    assert ensure_topics(pipeline.kafka_bootstrap, pipeline_topics(pipeline, partitions=3)) == []
