"""Issue 24, findings 7-9: what anything able to write the raw topic can do to the preprocessor.

The engine and the preprocessor's batch step with records as Kafka hands them over; what it sends
is captured in place of the producer (tests/hostile/test_poisoned_raw_e2e.py runs the same on
real Kafka). Nothing here may raise: an exception is redelivered by exactly-once and crash-loops
every replica.

Readings of devices without seq, whose seq the bridge derives from the timestamp in ms, through the
preprocessor: a device silent for an hour is not a seq jump; a counter seq still is."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from streamtrain.ingest_mapping import is_timestamp_seq
from streamtrain.kafka import headers_dict
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.preprocessor.app import Preprocessor, PreprocessSettings

NOW = time.time()


def reading(device: str = "d", seq: int = 0, ts: float | None = None, **kw) -> dict:
    r = {"device_id": device, "ts": NOW - 100 + seq % 50 if ts is None else ts, "seq": seq, "temperature": 70.0}
    return {**r, "current": 1.0, "vibration": 0.3, "pressure": 3.0, **kw}


@dataclass
class Msg:
    """A consumed record as confluent-kafka's Message answers."""

    body: bytes | None
    key_: bytes | None = b"d"
    offset_: int = 0
    arrived_ms: int = int(NOW * 1000)

    def value(self):
        return self.body

    def key(self):
        return self.key_

    def topic(self):
        return "raw"

    def partition(self):
        return 0

    def offset(self):
        return self.offset_

    def timestamp(self):
        return 2, self.arrived_ms  # LogAppendTime

    def headers(self):
        return []

    def error(self):
        return None


@dataclass
class Sent:
    topic: str
    value: bytes
    headers: list

    def headers_(self):
        return headers_dict(type("M", (), {"headers": lambda _: self.headers})())

    @property
    def reason(self) -> str:
        return self.headers_()["streamtrain.reason"]


@pytest.fixture
def make_preprocessor():
    made = []

    def make(**settings) -> tuple[Preprocessor, list[Sent]]:
        s = PreprocessSettings(kafka_bootstrap="127.0.0.1:1", topic_raw="raw", **settings)
        pp = Preprocessor(s, PreprocessSpec.default())
        sent: list[Sent] = []
        pp._send = lambda topic, value, **kw: sent.append(Sent(topic, value, kw.get("headers") or []))  # type: ignore[method-assign]
        made.append(pp)
        return pp, sent

    yield make
    for pp in made:
        pp.lag.close()
        pp.consumer.close()


def batch(*bodies, first_offset: int = 0, **kw) -> list[Msg]:
    return [
        b
        if isinstance(b, Msg)
        else Msg(b if isinstance(b, bytes) else json.dumps(b).encode(), offset_=first_offset + i, **kw)
        for i, b in enumerate(bodies)
    ]


def dead(sent: list[Sent]) -> list[str]:
    return [s.reason for s in sent if s.topic == "streamtrain.deadletter"]


def features(sent: list[Sent]) -> list[dict]:
    return [json.loads(s.value) for s in sent if s.topic == "streamtrain.telemetry.features"]


def windows(sent: list[Sent]) -> list[dict]:
    return [json.loads(s.value) for s in sent if s.topic == "streamtrain.telemetry.windows"]


# ---------------------------------------------------------------- finding 7: crash-looping on data
POISON = [
    ({"ts": "x"}, "wrong_type"),
    ({"ts": None}, "wrong_type"),
    ({"ts": float("inf")}, "non_finite"),
    ({"ts": 10**400}, "non_finite"),
    ({"device_id": None}, "wrong_type"),
    ({"device_id": 5}, "wrong_type"),
    ({"device_id": "d\n"}, "wrong_type"),
    ({"seq": None}, "wrong_type"),
    ({"temperature": None}, "missing_field"),
]


@pytest.mark.parametrize("change,reason", POISON, ids=[repr(c) for c, _ in POISON])
def test_engine_answers_a_poisoned_identity_with_its_reason_never_an_exception(change, reason):
    engine = Engine(PreprocessSpec.default())
    result = engine.process({**reading(), **change})
    assert result.features is None and result.error is not None and result.error.reason == reason
    assert engine.open == {} and engine.flush() == []  # nothing of it in any window


def test_poisoned_raw_records_are_dead_lettered_with_reasons_and_good_ones_still_come_out(make_preprocessor):
    pp, sent = make_preprocessor()
    poisoned = [
        b'{"device_id":"d","ts":"x","seq":1,"temperature":70}',
        b'{"device_id":"d","ts":Infinity,"seq":2,"temperature":70}',
        b'{"device_id":null,"ts":1,"seq":3,"temperature":70}',
        b'{"device_id":"d","ts":1e999,"seq":4,"temperature":70}',
        b'{"device_id":"d","ts":1,"seq":5,"temperature":null}',
    ]
    msgs = batch(reading(seq=0), *poisoned, Msg(None), reading(seq=6, ts=NOW - 50))
    for i, m in enumerate(msgs):
        m.offset_ = i
    with capture_logs() as logs:
        pp.process_batch(msgs)
    assert dead(sent) == ["wrong_type", "non_finite", "wrong_type", "non_finite", "missing_field", "malformed_json"]
    assert [f["seq"] for f in features(sent)] == [0, 6]
    assert len(windows(sent)) == 1  # the second good reading closed the first one's window
    assert pp.m_dead.labels("wrong_type")._value.get() == 2
    lines = {(x["event"], x.get("reason")): x for x in logs}
    assert lines["records_deadlettered", "non_finite"]["count"] == 2
    assert lines["records_deadlettered", "wrong_type"]["first"][0] == {
        "source": "kafka:raw/0@1",
        "detail": "ts must be a number (epoch seconds)",
    }


# The batch step hands the engine a row of floats with its expressions evaluated already
# (process_evaluated), any other row as it came (process): a failure of either is a dead letter.
@pytest.mark.parametrize(
    "entry,temperature", [("process", 70), ("process_evaluated", 70.0)], ids=["engine_evaluates", "numpy_evaluated"]
)
@pytest.mark.parametrize("step", ["process_batch", "process_records"])
def test_an_engine_failure_nobody_foresaw_is_dead_lettered_as_unprocessable(
    make_preprocessor, monkeypatch, entry, temperature, step
):
    pp, sent = make_preprocessor()

    def broken(*_args):
        raise KeyError("a bug")

    monkeypatch.setattr(pp.engine, "process", broken)
    if step == "process_batch":
        monkeypatch.setattr(pp.engine, entry, broken)
    getattr(pp, step)(batch(reading(seq=0, temperature=temperature)))
    assert dead(sent) == ["unprocessable"] and "KeyError" in sent[0].headers_()["streamtrain.detail"]


# ---------------------------------------------------------------- finding 8: limits at ingestion
def test_a_huge_seq_jump_is_dead_lettered_and_later_readings_still_pass(make_preprocessor):
    pp, sent = make_preprocessor(max_seq_jump=1000)
    pp.process_batch(batch(reading(seq=0), reading(seq=10**30), reading(seq=5000), reading(seq=1)))
    assert dead(sent) == ["seq_jump", "seq_jump"]
    assert [f["seq"] for f in features(sent)] == [0, 1]  # not too_old: the jumps moved nothing
    details = [s.headers_()["streamtrain.detail"] for s in sent if s.topic == "streamtrain.deadletter"]
    assert "64-bit" in details[0] and "limit 1000" in details[1]
    assert pp.m_dead.labels("seq_jump")._value.get() == 2


def test_a_ts_far_ahead_of_its_arrival_is_dead_lettered_and_windows_go_on(make_preprocessor):
    pp, sent = make_preprocessor(max_clock_skew_s=600)
    in_ms = reading(seq=1, ts=NOW * 1000)  # a device that writes milliseconds
    pp.process_batch(batch(reading(seq=0, ts=NOW - 30), in_ms, reading(seq=2, ts=NOW - 10)))
    assert dead(sent) == ["clock_skew"]
    assert [f["seq"] for f in features(sent)] == [0, 2]
    assert len(windows(sent)) == 1 and pp.m_late._value.get() == 0  # seq 2 closed seq 0's window, in time


def test_late_readings_are_counted_and_logged(make_preprocessor):
    pp, sent = make_preprocessor()
    with capture_logs() as logs:
        pp.process_batch(batch(reading(seq=0, ts=NOW - 10), reading(seq=1, ts=NOW - 300)))
    assert [f["seq"] for f in features(sent)] == [0, 1] and windows(sent) == []
    assert pp.m_late._value.get() == 1
    (line,) = [x for x in logs if x["event"] == "late_readings"]
    assert line["count"] == 1 and line["first"][0]["source"] == "kafka:raw/0@1"


# ---------------------------------------------------------------- finding 9: bounded per-device state
def test_a_silent_device_gets_its_last_window_emitted_then_its_state_evicted(make_preprocessor):
    pp, sent = make_preprocessor(window_idle_s=30, device_idle_s=600)
    pp.process_batch(batch(reading(seq=0)))
    start = time.monotonic()
    pp.expire_idle(start + 10)
    assert windows(sent) == []
    with capture_logs() as logs:
        pp.expire_idle(start + 31)
    (w,) = windows(sent)
    assert w["device_id"] == "d" and w["readings"] == 1
    assert pp.m_idle_windows._value.get() == 1 and any(x["event"] == "idle_windows_closed" for x in logs)
    assert "d" in pp.activity and pp.dedup is not None and pp.dedup.newest("d") == 0
    with capture_logs() as logs:
        pp.expire_idle(start + 601)
    assert "d" not in pp.activity and pp.dedup.newest("d") is None and pp.engine.open == {}
    assert pp.devices == {0: set()} and len(windows(sent)) == 1
    assert pp.m_evicted.labels("idle")._value.get() == 1
    assert [x["why"] for x in logs if x["event"] == "devices_evicted"] == ["idle"]


def test_ever_new_device_ids_do_not_grow_the_state_past_max_devices(make_preprocessor):
    pp, sent = make_preprocessor(max_devices=50)
    pp.process_batch(batch(*(reading(f"dev-{i}", seq=0) for i in range(500))))
    assert len(pp.activity) == 50 and len(pp.engine.open) == 50 and pp.dedup is not None and len(pp.dedup) == 50
    assert sum(len(d) for d in pp.devices.values()) == 50
    assert pp.m_evicted.labels("capacity")._value.get() == 450
    assert len(windows(sent)) == 450  # each evicted device's open window was emitted, not lost
    assert list(pp.activity)[0] == "dev-450"


def test_rejected_records_leave_no_state_behind(make_preprocessor):
    pp, _ = make_preprocessor()
    pp.process_batch([Msg(b"{broken", key_=f"k{i}".encode()) for i in range(100)])
    assert pp.devices == {} and len(pp.activity) == 0


def test_a_device_whose_readings_are_all_refused_for_device_idle_s_starts_afresh(make_preprocessor):
    """A real restart of a device's counter far above its old one is refused as seq_jump, but only until
    its state is evicted: then the new counter is its start."""
    pp, sent = make_preprocessor(max_seq_jump=1000, device_idle_s=600)
    pp.process_batch(batch(reading(seq=0)))
    start = time.monotonic()
    pp.process_batch(batch(reading(seq=50_000), first_offset=1))
    pp.expire_idle(start + 601)
    pp.process_batch(batch(reading(seq=50_001), first_offset=2))
    assert dead(sent) == ["seq_jump"] and [f["seq"] for f in features(sent)] == [0, 50_001]


def test_a_device_evicted_at_the_first_look_of_the_timer_still_gets_its_window_emitted(make_preprocessor):
    """A stalled process may first look after device_idle_s: the window is emitted and counted all the same."""
    pp, sent = make_preprocessor(window_idle_s=30, device_idle_s=600)
    pp.process_batch(batch(reading(seq=0)))
    pp.expire_idle(time.monotonic() + 601)
    assert len(windows(sent)) == 1 and pp.m_idle_windows._value.get() == 1
    assert pp.m_evicted.labels("idle")._value.get() == 1 and len(pp.activity) == 0


def _ms(ts: float) -> int:
    return round(ts * 1000)


def test_an_hour_of_silence_is_no_seq_jump_for_timestamp_seqs(make_preprocessor):  # noqa: F811
    pp, sent = make_preprocessor()
    first, later = NOW - 3700, NOW - 100
    pp.process_batch(batch(reading(seq=_ms(first), ts=first), reading(seq=_ms(later), ts=later)))
    assert dead(sent) == []
    assert [f["seq"] for f in features(sent)] == [_ms(first), _ms(later)]


def test_a_counter_seq_jump_is_still_refused(make_preprocessor):  # noqa: F811
    pp, sent = make_preprocessor()
    pp.process_batch(batch(reading(seq=0, ts=NOW - 20), reading(seq=5_000_000, ts=NOW - 10)))
    assert dead(sent) == ["seq_jump"]


def test_without_a_skew_limit_timestamp_seqs_get_no_exemption(make_preprocessor):  # noqa: F811
    pp, sent = make_preprocessor(max_clock_skew_s=0)
    first, later = NOW - 3700, NOW - 100
    pp.process_batch(batch(reading(seq=_ms(first), ts=first), reading(seq=_ms(later), ts=later)))
    assert dead(sent) == ["seq_jump"]


def test_is_timestamp_seq():
    assert is_timestamp_seq(1.5, 1500) and is_timestamp_seq(1.5, 1501)
    assert not is_timestamp_seq(1.5, 17) and not is_timestamp_seq(1.5, 1500 + 10_000)
