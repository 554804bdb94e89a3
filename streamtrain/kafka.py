"""Kafka plumbing shared by all programs: client configs, topic creation, dead letters."""
from __future__ import annotations

import time
from typing import Iterable

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamtrain import logs
from streamtrain.topics import TopicSpec

log = logs.get("kafka")


def producer_config(bootstrap: str, **overrides) -> dict:
    """Idempotent producer: retries never duplicate or reorder within a partition."""
    cfg = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": 2 * 1024 * 1024,
    }
    cfg.update(overrides)
    return cfg


def consumer_config(bootstrap: str, group_id: str, **overrides) -> dict:
    """Offsets are stored only after the work on a record is done (``store_offsets``)."""
    cfg = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    cfg.update(overrides)
    return cfg


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create missing topics; existing ones are left alone. Returns the names created."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.config) for s in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    # Metadata propagates asynchronously; wait until every topic is visible with leaders.
    deadline = time.monotonic() + timeout
    names = {s.name for s in missing}
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout)
        if all(n in md.topics and md.topics[n].error is None
               and all(p.leader >= 0 for p in md.topics[n].partitions.values()) for n in names):
            break
        time.sleep(0.2)
    for name in created:
        log.info("topic_created", topic=name)
    return created


def dead_letter_headers(reason: str, source: str, detail: str = "") -> list[tuple[str, bytes]]:
    """Headers carried by every dead letter: why it was rejected and where it came from."""
    headers = [("streamtrain.reason", reason.encode()), ("streamtrain.source", source.encode())]
    if detail:
        headers.append(("streamtrain.detail", detail[:1000].encode("utf-8", "replace")))
    return headers


def headers_dict(msg) -> dict[str, str]:
    return {k: (v.decode("utf-8", "replace") if v is not None else "") for k, v in (msg.headers() or [])}


def flush_or_raise(producer: Producer, timeout: float = 30.0) -> None:
    remaining = producer.flush(timeout)
    if remaining:
        raise RuntimeError(f"{remaining} Kafka messages still undelivered after {timeout}s")


def read_topic(bootstrap: str, topic: str, *, until=None, timeout: float = 30.0,
               isolation: str = "read_committed") -> list:
    """Read a topic from the beginning without a consumer group (nothing is committed).

    Stops when ``until(messages)`` is true, or (without ``until``) once every partition has
    been read to the end offset seen at the start, or when ``timeout`` has passed. Returns confluent_kafka Message objects in arrival order.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "streamtrain-reader", "enable.auto.commit": False,
                         "isolation.level": isolation, "auto.offset.reset": "earliest"})
    try:
        md = consumer.list_topics(topic, timeout=10)
        if md.topics[topic].error is not None:
            raise RuntimeError(f"topic {topic}: {md.topics[topic].error}")
        parts = sorted(md.topics[topic].partitions)
        ends = {}
        for p in parts:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out = []
        deadline = time.monotonic() + timeout
        while True:
            batch = consumer.consume(1000, 0.2)
            for m in batch:
                if m.error():
                    continue
                out.append(m)
            if until is not None:
                if until(out):
                    return out
                if time.monotonic() > deadline:
                    return out
            else:
                # position() moves past transaction markers too, unlike the last offset read.
                pos = consumer.position([TopicPartition(topic, p) for p in parts])
                if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in pos) \
                        or time.monotonic() > deadline:
                    return out
    finally:
        consumer.close()
