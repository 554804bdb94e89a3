"""Readings of devices without seq, whose seq the bridge derives from the timestamp in ms, through the
preprocessor: a device silent for an hour is not a seq jump; a counter seq still is."""

from __future__ import annotations

from streamtrain.ingest_mapping import is_timestamp_seq
from tests.preprocess.test_poisoned_records import NOW, batch, dead, features, make_preprocessor, reading  # noqa: F401


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
