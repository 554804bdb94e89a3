"""At-least-once delivery: outputs reach Kafka before the offsets of their inputs are stored."""

from __future__ import annotations

from confluent_kafka import Producer, TopicPartition

from streamtrain import logs
from streamtrain.kafka.config import producer_config

log = logs.get("kafka")


def next_offsets(msgs) -> list[TopicPartition]:
    """Per partition of ``msgs``, the offset after the last one: what to commit once they are done."""
    highest: dict[tuple[str, int], int] = {}
    for m in msgs:
        key = (m.topic(), m.partition())
        highest[key] = max(highest.get(key, -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in highest.items()]


def deliver_then_store(producer: Producer, consumer, msgs, errors: list[str], what: str = "outputs") -> None:
    """At least once: wait until every output of ``msgs`` is in Kafka, then store their offsets.

    ``errors`` is the list the producer's delivery callbacks append to. A failed delivery raises:
    without it the offsets must not move, and a restart redoes the batch from the last commit.
    """
    while True:
        remaining = producer.flush(10)
        if errors:
            failed, errors[:] = list(errors), []
            raise RuntimeError(f"{what} delivery failed: {failed[:3]}")
        if remaining == 0:
            break
        log.warning(f"{what}_undelivered", remaining=remaining, action="waiting")
    if msgs:
        consumer.store_offsets(offsets=next_offsets(msgs))


class DeliveryFailed(RuntimeError):
    """Some produced records did not reach Kafka: refused (e.g. not authorised) or still queued at the deadline."""


class Deliveries:
    """The delivery reports of one producer's records: pass ``report`` as each ``produce``'s ``on_delivery``.
    Without it a refused record leaves the queue like a delivered one, and ``flush`` returns 0 all the same."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def report(self, err, msg) -> None:
        if err is not None:
            self.failed.append(f"{msg.topic()}: {err.str()}")


def flush_or_raise(producer: Producer, deliveries: Deliveries, timeout: float = 30.0) -> None:
    """Wait until everything produced is delivered; ``DeliveryFailed`` if a record was refused, or some are not
    delivered within ``timeout``."""
    remaining = producer.flush(timeout)
    if deliveries.failed:
        raise DeliveryFailed(f"{len(deliveries.failed)} Kafka records refused: {'; '.join(deliveries.failed[:3])}")
    if remaining:
        raise DeliveryFailed(f"{remaining} Kafka records still undelivered after {timeout}s")


def produce_one(bootstrap: str, topic: str, key: bytes, value: bytes, timeout: float = 30.0) -> None:
    """Write one record (a control request) and wait until Kafka has it; ``DeliveryFailed`` saying why when
    the broker refuses it (an identity that may not write the topic) or does not take it within ``timeout``."""
    producer = Producer(producer_config(bootstrap))
    deliveries = Deliveries()
    producer.produce(topic, value, key=key, on_delivery=deliveries.report)
    flush_or_raise(producer, deliveries, timeout)
