"""A partition's watermarks are asked again while its leadership settles, and only then (unit)."""

from __future__ import annotations

import pytest
import structlog.testing
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamtrain.kafka import watermarks


class Broker:
    """Answers get_watermark_offsets with the queued errors first, then (low, high)."""

    def __init__(self, *errors: int) -> None:
        self.errors, self.asked = list(errors), 0

    def get_watermark_offsets(self, partition, timeout):
        self.asked += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return (3, 30)


def test_not_leader_right_after_creation_is_asked_again():
    # What CI met: a topic created a moment before, its leader not yet known to the broker answering.
    broker = Broker(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    assert watermarks(broker, TopicPartition("t", 0)) == (3, 30)
    assert broker.asked == 3


def test_a_new_leader_whose_high_watermark_lags_is_asked_again():
    # What test_replicas met right after a broker was SIGKILLed: "Leader high watermark is not caught up".
    broker = Broker(KafkaError.OFFSET_NOT_AVAILABLE, KafkaError._TIMED_OUT_QUEUE)
    assert watermarks(broker, TopicPartition("t", 0)) == (3, 30)
    assert broker.asked == 3


def test_other_errors_are_raised_at_once():
    broker = Broker(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        watermarks(broker, TopicPartition("t", 0))
    assert broker.asked == 1


def test_settling_that_outlasts_the_timeout_is_raised():
    broker = Broker(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 100)
    with pytest.raises(KafkaException):
        watermarks(broker, TopicPartition("t", 0), timeout=0.5)
    assert 2 <= broker.asked < 100


class StuckClient:
    """A consumer whose watermark requests all wait behind a broker that went away; later ones answer."""

    made: list[StuckClient] = []

    def __init__(self, conf) -> None:
        self.stuck, self.closed = not StuckClient.made, False
        StuckClient.made.append(self)

    def list_topics(self, topic, timeout):
        partitions = {0: object(), 1: object()}
        return type("Md", (), {"topics": {topic: type("T", (), {"error": None, "partitions": partitions})}})

    def get_watermark_offsets(self, partition, timeout):
        if self.stuck:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT_QUEUE))
        return (0, 0)

    def assign(self, partitions):
        pass

    def consume(self, n, timeout):
        return []

    def position(self, partitions):
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]

    def close(self):
        assert not self.closed, "closed twice"
        self.closed = True


def test_read_topic_asks_through_a_new_client_when_one_stays_stuck(monkeypatch):
    # What test_replicas met after a broker was SIGKILLed: one client's requests stayed queued for it
    # for 30 s, while clients made later were answered.
    from streamtrain.kafka import reading

    StuckClient.made = []
    monkeypatch.setattr(reading, "Consumer", StuckClient)
    monkeypatch.setattr(reading, "_STALL", 0.3)
    with structlog.testing.capture_logs() as logged:
        assert reading.read_topic("127.0.0.1:1", "t", timeout=5) == []
    assert len(StuckClient.made) == 2 and all(c.closed for c in StuckClient.made)
    (stalled,) = [e for e in logged if e["event"] == "watermarks_stalled"]
    assert (stalled["topic"], stalled["partition"], stalled["log_level"]) == ("t", 0, "warning")


def test_read_topic_gives_up_on_a_stall_that_outlasts_its_timeout(monkeypatch):
    from streamtrain.kafka import reading

    class AlwaysStuck(StuckClient):
        def __init__(self, conf) -> None:
            super().__init__(conf)
            self.stuck = True

    monkeypatch.setattr(reading, "Consumer", AlwaysStuck)
    monkeypatch.setattr(reading, "_STALL", 0.3)
    with pytest.raises(KafkaException):
        reading.read_topic("127.0.0.1:1", "t", timeout=1)
