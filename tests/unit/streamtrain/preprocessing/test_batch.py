"""Issue 28 item 1: the batch step (``Preprocessor.process_batch``) against the record-by-record step
(``Preprocessor.process_records``, the engine the agreement and DuckDB tests check), no broker.

Random batches of raw records, good and bad (malformed JSON, NaN and out-of-range numbers, wrong
types, numeric strings, duplicates, reused and jumping seqs, late and out-of-order readings, clock
skew, unknown fields, division by zero), go through both; everything they send must be the same
records in the same order (so the same order per device): features, windows, sequences and dead
letters with their reasons and details, with the same fingerprint headers.
"""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamtrain.dedup import fingerprint
from streamtrain.preprocessing.batch import BatchExpressions, fast_fingerprint, fingerprint_text, loads
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.preprocessor.app import Preprocessor, PreprocessSettings
from tests.unit.preprocessor.test_app import NOW, Msg
from tests.unit.streamtrain.preprocessing.specs import VECTORISED, every_construct

REASON_HEADER = "streamtrain.reason"
SPECS = {"default": PreprocessSpec.default, "every_construct": every_construct, "vectorised": lambda: VECTORISED}


class Captured:
    """What a preprocessor sends, in order, in place of its producer."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, topic: str, value: bytes, key=None, headers=None, **_kw) -> None:
        self.sent.append((topic, key, value, headers or []))

    def take(self) -> list[tuple]:
        out, self.sent = self.sent, []
        return out


def comparable(sent: list[tuple]) -> list[tuple]:
    """Records as values: JSON outputs parsed (msgspec writes them compactly), dead letters as bytes."""
    out = []
    for topic, key, value, headers in sent:
        if topic == "streamtrain.deadletter":
            out.append((topic, key, value, sorted(headers)))
        else:  # NaN passes through a label as NaN in both: compare the canonical text of the parsed value
            out.append((topic, key, json.dumps(json.loads(value), sort_keys=True), sorted(headers)))
    return out


@pytest.fixture(scope="module")
def pairs():
    """Per spec, a record-step and a batch-step preprocessor (each example uses devices of its own)."""
    made: dict[str, tuple] = {}

    def pair(name: str):
        if name not in made:
            both = []
            for _ in range(2):
                s = PreprocessSettings(kafka_bootstrap="127.0.0.1:1", topic_raw="raw", max_seq_jump=1000)
                pp = Preprocessor(s, SPECS[name]())
                cap = Captured()
                pp._send = cap.send  # type: ignore[method-assign]
                both.append((pp, cap))
            made[name] = tuple(both)
        return made[name]

    yield pair
    for both in made.values():
        for pp, _ in both:
            pp.lag.close()
            pp.consumer.close()


_prefix = itertools.count()


def raw_batch(rng: random.Random, n: int) -> list[Msg]:
    """``n`` raw records of a few devices, most of them good, every kind of bad one among them."""
    devices = [f"e{next(_prefix)}-{i}" for i in range(3)]
    seqs = dict.fromkeys(devices, 0)
    sent: list[bytes] = []
    out: list[Msg] = []

    def number():
        return rng.choice(
            [
                round(rng.uniform(-60, 220), 3),
                rng.uniform(0, 5),
                0.0,
                -0.0,
                3.5,
                1e-7,
                2.5e17,
                rng.randint(-5, 300),
                "1.5",
                True,
                None,
                [1.0],
            ]
        )

    for i in range(n):
        device = rng.choice(devices)
        kind = rng.random()
        seq = seqs[device]
        seqs[device] += 1
        r: dict = {"device_id": device, "ts": NOW - 200 + seq * rng.choice([0.7, 1.3, 2.9]), "seq": seq}
        for f in ("temperature", "current", "vibration", "pressure"):
            r[f] = round(rng.uniform(0.2, 90), 4) if kind < 0.55 else number()
        r.update(device_type="pump", label=rng.choice([0, 1]), anomaly=rng.choice([None, "spike"]))
        body: bytes | None = json.dumps(r, separators=(",", ":")).encode()
        k = rng.random()
        if k < 0.04:
            r["ts"] -= rng.uniform(5, 60)  # late / out of order
        elif k < 0.06:
            r["ts"] = NOW + 3600 * 24  # clock skew
        elif k < 0.08:
            r["seq"] = seq + 10**6  # seq jump
        elif k < 0.10:
            r["seq"] = max(0, seq - rng.randint(1, 3))  # reused (different reading) or a repeat
        elif k < 0.12:
            r["note"] = rng.choice(["é✓", "\x7f", {"nested": [1, 2]}, 10**30, 1e-9, "a" * 40])  # unknown field
        elif k < 0.14:
            r[rng.choice(["device_id", "ts", "seq"])] = rng.choice([None, "x", -1, 3.0, 5, 1e400])
        elif k < 0.16:
            r.pop(rng.choice(["device_id", "ts", "seq", "temperature"]))
        elif k < 0.18:
            r["label"] = float("nan")
        if k < 0.18:
            body = json.dumps(r, separators=(",", ":")).encode()
        elif k < 0.20:
            body = body[: rng.randint(0, len(body) - 1)]  # cut: malformed
        elif k < 0.21:
            body = rng.choice([b"[1,2]", b'"x"', b"null", b"\xff\xfe{", b'{"a":NaN}', b"[" * 5000, None])
        elif k < 0.22:
            body = body.replace(b'"temperature":', b'"temperature":NaN,"t":')
        elif k < 0.25 and sent:
            body = rng.choice(sent)  # redelivered as it was
        if body is not None:
            sent.append(body)
        arrived = int((NOW - rng.uniform(0, 100)) * 1000)
        out.append(Msg(body, key_=device.encode(), offset_=i, arrived_ms=arrived))
    return out


def run_both(pair, msgs: list[Msg], batch_size: int) -> tuple[list[tuple], list[tuple]]:
    (ref, ref_cap), (fast, fast_cap) = pair
    for i in range(0, len(msgs), batch_size):
        ref.process_records(msgs[i : i + batch_size])
        fast.process_batch(msgs[i : i + batch_size])
    return comparable(ref_cap.take()), comparable(fast_cap.take())


def assert_same(expected: list[tuple], got: list[tuple]) -> None:
    assert len(got) == len(expected)
    for i, (e, g) in enumerate(zip(expected, got)):
        assert g == e, f"record {i} differs"


@pytest.mark.parametrize("spec", sorted(SPECS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120), batch_size=st.sampled_from([1, 7, 50, 1000]))
def test_batch_step_sends_what_the_record_step_sends(pairs, spec, seed, n, batch_size):
    expected, got = run_both(pairs(spec), raw_batch(random.Random(seed), n), batch_size)
    assert_same(expected, got)


def test_a_mixed_batch_covers_every_outcome_and_agrees(pairs):
    """One long seeded stream, so the property above is known to meet each outcome (not only good rows)."""
    (ref, _), _fast = pair = pairs("vectorised")
    msgs = raw_batch(random.Random(28), 3000)
    expected, got = run_both(pair, msgs, 500)
    assert_same(expected, got)
    topics = {t for t, *_ in expected}
    assert {"streamtrain.telemetry.features", "streamtrain.telemetry.windows", "streamtrain.deadletter"} <= topics
    assert "streamtrain.telemetry.sequences" in topics
    reasons = {dict(h)[REASON_HEADER].decode() for t, _, _, h in expected if t == "streamtrain.deadletter"}
    assert {"malformed_json", "wrong_type", "missing_field", "seq_reused", "clock_skew", "seq_jump"} <= reasons
    assert {"non_finite", "division_by_zero"} & reasons
    assert ref.m_duplicates._value.get() > 0 and ref.m_late._value.get() > 0


def test_the_batch_step_counts_what_the_record_step_counts(pairs):
    (ref, _), (fast, _) = pair = pairs("default")
    before = {c: (getattr(ref, c)._value.get(), getattr(fast, c)._value.get()) for c in COUNTERS}
    run_both(pair, raw_batch(random.Random(7), 800), 100)
    for c in COUNTERS:
        assert getattr(ref, c)._value.get() - before[c][0] == getattr(fast, c)._value.get() - before[c][1], c


COUNTERS = ("m_in", "m_out", "m_filtered", "m_late", "m_windows", "m_duplicates", "m_sequences")


def test_numpy_evaluates_most_good_rows_of_a_vectorisable_spec():
    """The speed comes from here: a good row of floats is answered by numpy, not the closures."""
    batch = BatchExpressions(VECTORISED)
    assert batch.enabled and not BatchExpressions(every_construct()).enabled
    rows = [{"temperature": 50.5, "current": 2.0, "vibration": 0.25, "pressure": p} for p in (4.0, 3.5, 0.0)]
    rows.append({"temperature": 50, "current": 2.0, "vibration": 0.25, "pressure": 4.0})  # an int: the engine's
    answers = batch.evaluate(rows)
    for row, answer in zip(rows[:2], answers):
        ratio = row["current"] / row["pressure"]
        spread = -abs(row["vibration"] - 0.3) * 2.5e-3 + (row["temperature"] - 60) / 2
        assert answer == [ratio, spread, ratio * 1e15 - spread]
    assert answers[2] is None and answers[3] is None  # division by zero, an int: the engine answers


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@given(st.dictionaries(st.text(max_size=6), VALUES, max_size=8))
def test_fingerprint_text_is_json_dumps_sorted(record):
    assert fingerprint_text(record) == json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    assert fast_fingerprint(record) == fingerprint(record)


@given(st.dictionaries(st.text(max_size=6), VALUES, max_size=8))
def test_loads_is_json_loads_on_what_json_writes(record):
    for body in (json.dumps(record).encode(), json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")):
        try:
            expected = json.loads(body)
        except ValueError as exc:
            with pytest.raises(type(exc)):
                loads(body)
            continue
        got = loads(body)
        assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


@given(st.binary(max_size=40) | st.sampled_from([b"1e400", b'{"a":-1e400}', b"NaN", b'"\\ud800"', b"  {}  "]))
def test_loads_fails_as_json_loads_fails(body):
    try:
        expected = json.loads(body)
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)) as got:
            loads(body)
        assert str(got.value) == str(exc)
        return
    got = loads(body)
    assert json.dumps(got) == json.dumps(expected) or (isinstance(got, float) and math.isnan(got))
