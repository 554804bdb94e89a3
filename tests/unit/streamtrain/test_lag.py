"""The arithmetic of the consumer lag gauges (the real consumer's numbers are checked end to end in
test_prometheus_e2e.py): records behind the end offset, and seconds since the oldest of them arrived."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streamtrain.lag import ConsumerLag


def gauges(registry: CollectorRegistry, partition: str = "0") -> tuple[float, float]:
    labels = {"group": "g", "topic": "t", "partition": partition}
    return (
        registry.get_sample_value("streamtrain_consumer_lag_records", labels),
        registry.get_sample_value("streamtrain_consumer_lag_seconds", labels),
    )


def test_seconds_count_from_when_the_oldest_unprocessed_record_arrived():
    r = CollectorRegistry()
    lag = ConsumerLag(r, "g")
    lag._observe("t", 0, position=0, end=0, now=100.0)  # caught up
    assert gauges(r) == (0, 0)
    lag._observe("t", 0, position=0, end=1000, now=101.0)  # 1000 records arrived within (100, 101]
    assert gauges(r) == (1000, 1.0)
    lag._observe("t", 0, position=500, end=3000, now=103.0)  # record 500 arrived halfway: at 100.5
    assert gauges(r) == (2500, 2.5)
    lag._observe("t", 0, position=2000, end=3000, now=104.0)  # record 2000: half of (101, 103] -> 102
    assert gauges(r) == (1000, 2.0)
    lag._observe("t", 0, position=3000, end=3000, now=105.0)
    assert gauges(r) == (0, 0)


def test_a_backlog_found_at_start_counts_from_the_first_sample():
    r = CollectorRegistry()
    lag = ConsumerLag(r, "g")
    lag._observe("t", 1, position=10, end=5000, now=50.0)
    lag._observe("t", 1, position=20, end=5000, now=80.0)
    assert gauges(r, "1") == (4980, 30.0)


def test_revoked_partitions_leave_no_series():
    from confluent_kafka import TopicPartition

    r = CollectorRegistry()
    lag = ConsumerLag(r, "g")
    lag._observe("t", 2, position=0, end=10, now=1.0)
    lag.forget([TopicPartition("t", 2)])
    assert gauges(r, "2") == (None, None)
