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
import time

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry, Gauge

#: At most this many (end offset, first seen) samples per partition; the oldest go first.
MAX_SAMPLES = 10_000


class ConsumerLag:
    """Call ``update(consumer)`` after each batch's work is done (it rate-limits itself) and
    ``forget(partitions)`` when partitions are revoked or lost."""

    def __init__(
        self, registry: CollectorRegistry, group: str, interval_s: float = 0.5, refresh_s: float = 10.0
    ) -> None:
        self.group = group
        self.interval_s, self.refresh_s = interval_s, refresh_s
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
        self._last = self._last_refresh = float("-inf")

    def update(self, consumer, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._last < self.interval_s:
            return
        self._last = now
        assigned = consumer.assignment()
        if not assigned:
            return
        # The cached end offset comes with every fetch response; a consumer far behind stops fetching
        # (its queue is full), so now and then the broker is asked.
        ask_broker = now - self._last_refresh >= self.refresh_s
        if ask_broker:
            self._last_refresh = now
        for tp in consumer.position(assigned):
            end = self._end_offset(consumer, tp, ask_broker)
            if end < 0 or tp.offset < 0:
                continue  # nothing fetched yet: unknown, not zero
            self._observe(tp.topic, tp.partition, tp.offset, end, now)

    @staticmethod
    def _end_offset(consumer, tp: TopicPartition, ask_broker: bool) -> int:
        probe = TopicPartition(tp.topic, tp.partition)
        if ask_broker:
            try:
                return consumer.get_watermark_offsets(probe, timeout=1.0, cached=False)[1]
            except Exception:  # noqa: BLE001 - the cached value below is the fallback
                pass
        return consumer.get_watermark_offsets(probe, cached=True)[1]

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
