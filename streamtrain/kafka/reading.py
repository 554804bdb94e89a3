"""Reading a whole topic without a consumer group (tests, the demo, the model topic's history)."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streamtrain import logs
from streamtrain.kafka.config import READER_GROUP, client_config

log = logs.get("kafka")

#: Errors of a partition whose leadership is still settling (a topic created a moment ago, a broker restarting).
_SETTLING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    # A request queued for a broker that had just gone (SIGKILL) and was not sent before its timeout.
    KafkaError._TIMED_OUT_QUEUE,
    # A leader just elected whose high watermark has not caught up yet (KIP-207; retriable in Kafka).
    KafkaError.OFFSET_NOT_AVAILABLE,
}


def _settling(err: KafkaError) -> bool:
    return err.retriable() or err.code() in _SETTLING


#: Seconds one client asks for a partition's watermarks before read_topic asks through a new client.
_STALL = 10.0


def watermarks(consumer, partition, timeout: float = 30.0) -> tuple[int, int]:
    """(low, high) watermarks of one partition, asking again while its leadership settles.

    Right after a topic is created, or while a broker restarts, the broker answers "not leader" or
    "leader not available" for a moment; those are retried until ``timeout`` seconds have passed,
    anything else is raised at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            # At most 5 s per ask, so a request stuck behind a dead broker leaves time to ask again.
            return consumer.get_watermark_offsets(partition, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
        except KafkaException as exc:
            if not _settling(exc.args[0]) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_topic(
    bootstrap: str, topic: str, *, until=None, timeout: float = 30.0, isolation: str = "read_committed", **client
) -> list:
    """Read a topic from the beginning without a consumer group (nothing is committed).

    Stops when ``until(messages)`` is true, or (without ``until``) once every partition has
    been read to the end offset seen at the start, or when ``timeout`` has passed. Returns confluent_kafka Message objects in arrival order.
    """

    def new_consumer() -> Consumer:
        conf = {
            "group.id": READER_GROUP,
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
            **client,
        }
        return Consumer(client_config(bootstrap, **conf))

    consumer = new_consumer()
    try:
        md = consumer.list_topics(topic, timeout=10)
        if md.topics[topic].error is not None:
            raise RuntimeError(f"topic {topic}: {md.topics[topic].error}")
        parts = sorted(md.topics[topic].partitions)
        ends: dict[int, int] = {}
        for p in parts:
            deadline = time.monotonic() + timeout
            while p not in ends:
                try:
                    ends[p] = watermarks(consumer, TopicPartition(topic, p), min(_STALL, timeout))[1]
                except KafkaException as exc:
                    if not _settling(exc.args[0]) or time.monotonic() > deadline:
                        raise
                    # Still no answer after _STALL s: a new client, with new metadata and connections, asks
                    # again (one client stayed stuck behind a SIGKILLed broker for 30 s, while new ones were not).
                    log.warning("watermarks_stalled", topic=topic, partition=p, error=exc.args[0].str())
                    stuck, consumer = consumer, new_consumer()
                    stuck.close()
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
                if (
                    all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in pos)
                    or time.monotonic() > deadline
                ):
                    return out
    finally:
        consumer.close()
