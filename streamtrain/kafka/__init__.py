"""Kafka plumbing shared by all programs, one concern a module:

- ``config``: client settings (bootstrap, security from the environment, producer/consumer defaults)
- ``admin``: topics (create the missing ones with the pipeline's settings)
- ``deadletter``: the headers that say why a record was rejected
- ``delivery``: at least once (outputs delivered, then offsets stored)
- ``transactions``: exactly once (consume -> produce -> commit in a transaction)
- ``health``: broker reachability for /readyz
- ``reading``: a whole topic (or a time range of it, streamed) without a consumer group; a partition's watermarks while leadership settles

Programs import the names from here (``from streamtrain.kafka import producer_config``).
"""

from streamtrain.kafka.admin import TopicsMissing, create_missing_topics, ensure_topics, require_topics
from streamtrain.kafka.config import (
    READER_GROUP,
    KafkaSecurity,
    KafkaSecurityError,
    client_config,
    consumer_config,
    producer_config,
)
from streamtrain.kafka.deadletter import dead_letter_headers, headers_dict
from streamtrain.kafka.delivery import (
    Deliveries,
    DeliveryFailed,
    deliver_then_store,
    flush_or_raise,
    next_offsets,
    produce_one,
)
from streamtrain.kafka.health import KafkaHealth
from streamtrain.kafka.reading import TopicStalled, iter_topic, read_topic, watermarks
from streamtrain.kafka.transactions import ExactlyOnce

__all__ = [
    "READER_GROUP",
    "ExactlyOnce",
    "KafkaHealth",
    "KafkaSecurity",
    "KafkaSecurityError",
    "TopicStalled",
    "TopicsMissing",
    "client_config",
    "consumer_config",
    "create_missing_topics",
    "dead_letter_headers",
    "deliver_then_store",
    "ensure_topics",
    "flush_or_raise",
    "Deliveries",
    "DeliveryFailed",
    "produce_one",
    "iter_topic",
    "headers_dict",
    "next_offsets",
    "producer_config",
    "read_topic",
    "require_topics",
    "watermarks",
]
