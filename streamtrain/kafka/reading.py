"""Reading a whole topic, or a time range of it, without a consumer group (evaluate, tests, the demo, the model
topic's history)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

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


class TopicStalled(RuntimeError):
    """A read made no progress for its idle timeout while records were left to read."""


class _Reader:
    """One topic read without a consumer group: the end offset of each partition seen at the start, then
    batches until each partition reaches it (or a record newer than ``until_ms``)."""

    def __init__(self, bootstrap: str, topic: str, isolation: str, client: dict, timeout: float) -> None:
        self._conf = {
            "group.id": READER_GROUP,
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
            **client,
        }
        self._bootstrap = bootstrap
        self.topic = topic
        self.consumer = self._new_consumer()
        md = self.consumer.list_topics(topic, timeout=10)
        if md.topics[topic].error is not None:
            self.close()
            raise RuntimeError(f"topic {topic}: {md.topics[topic].error}")
        self.parts = sorted(md.topics[topic].partitions)
        self.ends: dict[int, int] = {}
        lows: dict[int, int] = {}
        try:
            for p in self.parts:
                deadline = time.monotonic() + timeout
                while p not in self.ends:
                    try:
                        lows[p], self.ends[p] = watermarks(
                            self.consumer, TopicPartition(topic, p), min(_STALL, timeout)
                        )
                    except KafkaException as exc:
                        if not _settling(exc.args[0]) or time.monotonic() > deadline:
                            raise
                        # Still no answer after _STALL s: a new client, with new metadata and connections, asks
                        # again (one client stayed stuck behind a SIGKILLed broker for 30 s, while new ones were not).
                        log.warning("watermarks_stalled", topic=topic, partition=p, error=exc.args[0].str())
                        stuck, self.consumer = self.consumer, self._new_consumer()
                        stuck.close()
        except BaseException:
            self.close()
            raise
        #: Partitions with nothing left to read (empty, or nothing in range).
        self.done = {p for p in self.parts if lows[p] >= self.ends[p]}
        #: Monotonic time of the last record read or position moved (transaction markers move it too).
        self.progressed = time.monotonic()
        self._positions: dict[int, int] = {}

    def _new_consumer(self) -> Consumer:
        return Consumer(client_config(self._bootstrap, **self._conf))

    def close(self) -> None:
        self.consumer.close()

    def start(self, since_ms: int | None, timeout: float) -> None:
        """Assign the partitions, each at its first offset with a timestamp >= ``since_ms`` (the beginning when None)."""
        starts = {p: OFFSET_BEGINNING for p in self.parts}
        if since_ms is not None:
            found = self.consumer.offsets_for_times(
                [TopicPartition(self.topic, p, since_ms) for p in self.parts], timeout=timeout
            )
            for tp in found:
                if tp.error is not None:
                    raise KafkaException(tp.error)
                if tp.offset < 0 or tp.offset >= self.ends[tp.partition]:
                    self.done.add(tp.partition)  # no record at or after since_ms (before the end seen at the start)
                else:
                    starts[tp.partition] = tp.offset
        self.consumer.assign([TopicPartition(self.topic, p, starts[p]) for p in self.parts if p not in self.done])

    def remaining(self) -> list[int]:
        return [p for p in self.parts if p not in self.done]

    def batches(self, to_end: bool = True, until_ms: int | None = None) -> Iterator[list]:
        """Lists of messages as consumed (an empty list when a poll brought none). With ``to_end``, stops once every
        partition reached its end offset seen at the start; a partition also stops at its first record with a
        timestamp > ``until_ms`` (that record and the rest of the partition are left out)."""
        while not to_end or self.remaining():
            out = []
            for m in self.consumer.consume(1000, 0.2):
                if m.error():
                    continue
                p = m.partition()
                if p in self.done:
                    continue
                self.progressed = time.monotonic()
                if to_end and m.offset() >= self.ends[p]:
                    self._finish(p)
                    continue
                kind, ts = m.timestamp()
                if until_ms is not None and kind != TIMESTAMP_NOT_AVAILABLE and ts > until_ms:
                    self._finish(p)
                    continue
                out.append(m)
            if to_end and self.remaining():
                # position() moves past transaction markers too, unlike the last offset read.
                for tp in self.consumer.position([TopicPartition(self.topic, p) for p in self.remaining()]):
                    if tp.offset != self._positions.get(tp.partition):
                        self._positions[tp.partition] = tp.offset
                        self.progressed = time.monotonic()
                    if tp.offset >= self.ends[tp.partition]:
                        self._finish(tp.partition)
            yield out

    def _finish(self, p: int) -> None:
        self.done.add(p)
        self.consumer.pause([TopicPartition(self.topic, p)])


def iter_topic(
    bootstrap: str,
    topic: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    idle_timeout: float = 30.0,
    isolation: str = "read_committed",
    **client,
) -> Iterator:
    """Messages of a topic as consumed (partitions interleaved), without a consumer group (nothing is committed).

    Each partition starts at its first record with a timestamp >= ``since_ms`` (the beginning when None) and stops
    at the end offset seen at the start, or before its first record with a timestamp > ``until_ms``. Memory stays
    bounded whatever the topic's size. Raises ``TopicStalled`` when ``idle_timeout`` seconds pass without a record
    or a move of position while records are left: a read never ends early in silence."""
    reader = _Reader(bootstrap, topic, isolation, client, idle_timeout)
    try:
        reader.start(since_ms, timeout=idle_timeout)
        for batch in reader.batches(until_ms=until_ms):
            if not batch and time.monotonic() - reader.progressed > idle_timeout:
                left = {p: reader.ends[p] for p in reader.remaining()}
                raise TopicStalled(
                    f"topic {topic}: no progress for {idle_timeout:g} s with records left"
                    f" (partitions {sorted(left)} not read up to their end offsets {left})"
                )
            yield from batch
    finally:
        reader.close()


def read_topic(
    bootstrap: str, topic: str, *, until=None, timeout: float = 30.0, isolation: str = "read_committed", **client
) -> list:
    """Read a topic from the beginning without a consumer group (nothing is committed).

    Stops when ``until(messages)`` is true, or (without ``until``) once every partition has
    been read to the end offset seen at the start, or when ``timeout`` has passed. Returns confluent_kafka Message
    objects in arrival order. For a topic too big to hold, or a time range, use ``iter_topic``.
    """
    reader = _Reader(bootstrap, topic, isolation, client, timeout)
    try:
        if until is not None:
            reader.done.clear()  # ``until`` may wait for records a partition empty at the start has yet to get
        reader.start(None, timeout=timeout)
        out: list = []
        deadline = time.monotonic() + timeout
        for batch in reader.batches(to_end=until is None):
            out.extend(batch)
            if (until is not None and until(out)) or time.monotonic() > deadline:
                return out
        return out
    finally:
        reader.close()
