"""Consumer lag as Prometheus gauges, per assigned partition, measured by the consumer itself.

Records: the partition's end offset minus this consumer's position after its work on a batch is
done (records written and not yet processed). Seconds, in processing time: how long ago the oldest
unprocessed record reached the partition, estimated from the end offsets this consumer has seen
over time (interpolated between the two samples around its offset, like kafka-lag-exporter).
Event time plays no part, so replayed old readings do not count as lag. Both are 0 when the
consumer is caught up; a consumer that has just started with a backlog counts from its start.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import CollectorRegistry, Gauge

from streamtrain import logs

log = logs.get("lag")

#: At most this many (end offset, first seen) samples per partition; the oldest go first.
MAX_SAMPLES = 10_000


class ConsumerLag:
    """Call ``update(consumer)`` after each batch's work is done (it rate-limits itself) and
    ``forget(partitions)`` when partitions are revoked or lost."""

    def __init__(self, registry: CollectorRegistry, group: str, interval_s: float = 0.5) -> None:
        self.group = group
        self.interval_s = interval_s
        self.end_offsets: EndOffsets | None = None
        self.records = Gauge(
            "streamtrain_consumer_lag_records",
            "Records in the partition not yet processed by this consumer group member",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.seconds = Gauge(
            "streamtrain_consumer_lag_seconds",
            "Processing time since the oldest unprocessed record was first seen (0 = caught up)",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self._samples: dict[tuple[str, int], collections.deque] = {}
        self._last = float("-inf")

    def start_refresh(self, client_config: dict, refresh_s: float = 10.0) -> None:
        """Also ask the broker for the end offsets now and then, on a thread of its own (``EndOffsets``)."""
        self.end_offsets = EndOffsets(client_config, refresh_s)

    def close(self) -> None:
        if self.end_offsets is not None:
            self.end_offsets.close()

    def update(self, consumer, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._last < self.interval_s:
            return
        self._last = now
        assigned = consumer.assignment()
        if not assigned:
            return
        # The cached end offset comes with every fetch response; a consumer far behind stops fetching
        # (its queue is full), so the broker's answer from the refresh thread counts too, when newer.
        if self.end_offsets is not None:
            self.end_offsets.want((tp.topic, tp.partition) for tp in assigned)
        for tp in consumer.position(assigned):
            end = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)[1]
            if self.end_offsets is not None:
                end = max(end, self.end_offsets.get(tp.topic, tp.partition))
            if end < 0 or tp.offset < 0:
                continue  # nothing fetched yet: unknown, not zero
            self._observe(tp.topic, tp.partition, tp.offset, end, now)

    def _observe(self, topic: str, partition: int, position: int, end: int, now: float) -> None:
        samples = self._samples.setdefault((topic, partition), collections.deque(maxlen=MAX_SAMPLES))
        if not samples or end > samples[-1][0]:
            samples.append((end, now))
        while len(samples) > 1 and samples[1][0] <= position:
            samples.popleft()  # keep one sample at or below the position: the start of its interval
        behind = max(0, end - position)
        labels = (self.group, topic, str(partition))
        self.records.labels(*labels).set(behind)
        self.seconds.labels(*labels).set(round(now - self._arrival(samples, position), 3) if behind else 0.0)

    @staticmethod
    def _arrival(samples, offset: int) -> float:
        """When the record at ``offset`` reached the partition: between the last sample whose end offset
        did not include it and the first that did, in proportion to the offsets."""
        (e0, t0) = samples[0]
        if e0 > offset or len(samples) == 1:
            return t0  # already there at the first sample: at least that old
        e1, t1 = next(((e, t) for e, t in samples if e > offset), (e0, t0))
        if e1 == e0:
            return t0
        return t0 + (t1 - t0) * (offset - e0) / (e1 - e0)

    def forget(self, partitions) -> None:
        for tp in partitions:
            self._samples.pop((tp.topic, tp.partition), None)
            for gauge in (self.records, self.seconds):
                try:
                    gauge.remove(self.group, tp.topic, str(tp.partition))
                except KeyError:
                    pass


class EndOffsets:
    """End offsets of the partitions a consumer holds, asked of the broker every ``refresh_s`` on a thread
    of its own, in one ListOffsets request for all of them. Never on the processing thread: the consumer's
    own query waits behind its pending fetch (up to ``fetch.wait.max.ms`` per partition), and the
    profile showed the scorer stalled 2.6 s in it."""

    def __init__(self, client_config: dict, refresh_s: float = 10.0, timeout_s: float = 5.0) -> None:
        self.refresh_s, self.timeout_s = refresh_s, timeout_s
        self._admin = AdminClient(client_config)
        self._wanted: frozenset[tuple[str, int]] = frozenset()
        self._ends: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="end-offsets", daemon=True)
        self._thread.start()

    def want(self, partitions: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            self._wanted = frozenset(partitions)

    def get(self, topic: str, partition: int) -> int:
        """The broker's last answer for the partition; -1 before the first."""
        with self._lock:
            return self._ends.get((topic, partition), -1)

    def _run(self) -> None:
        while True:
            with self._lock:
                wanted = self._wanted
            if wanted:
                self._ask(wanted)
            if self._stop.wait(self.refresh_s):
                return

    def _ask(self, wanted: frozenset[tuple[str, int]]) -> None:
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in wanted}
        try:
            futures = self._admin.list_offsets(request, request_timeout=self.timeout_s)
            ends = {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
        except KafkaException as exc:  # the next round asks again; the cached offsets serve meanwhile
            log.warning("end_offsets_unavailable", partitions=len(wanted), error=str(exc))
            return
        with self._lock:
            self._ends.update(ends)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 1)
