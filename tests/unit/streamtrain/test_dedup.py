"""Repeated (device, seq) readings are recognised, a different reading under a seen (device, seq) is told
apart from a repeat; an aborted transaction's readings are forgotten."""

from hypothesis import given, settings
from hypothesis import strategies as st

from streamtrain.dedup import Deduplicator, fingerprint


def test_repeats_are_duplicates_and_far_older_seqs_too_old():
    d = Deduplicator(window=10)
    assert [d.check("a", s) for s in (0, 1, 2, 1, 0)] == ["new", "new", "new", "duplicate", "duplicate"]
    assert d.check("b", 1) == "new"  # per device
    assert d.check("a", 30) == "new"
    assert d.check("a", 25) == "new"  # out of order but inside the window
    assert d.check("a", 19) == "too_old"
    d.remove("a", 25)  # its transaction was aborted: it will come again and must pass
    assert d.check("a", 25) == "new"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 300)), max_size=300))
def test_each_reading_is_new_exactly_once_within_the_window(readings):
    d = Deduplicator(window=1000)
    new = [r for r in readings if d.check(*r) == "new"]
    assert sorted(new) == sorted(set(readings))


def test_a_different_reading_under_a_seen_seq_is_reused_not_a_duplicate():
    first = {"device_id": "a", "ts": 1.0, "seq": 0, "x": 1.5}
    again = {"x": 1.5, "seq": 0, "ts": 1.0, "device_id": "a"}  # the same reading, keys in another order
    other = {"device_id": "a", "ts": 2.0, "seq": 0, "x": 1.5}  # a replay that numbered from 0 again
    assert fingerprint(first) == fingerprint(again) != fingerprint(other)
    d = Deduplicator(window=10)
    assert d.check("a", 0, fingerprint(first)) == "new"
    assert d.check("a", 0, fingerprint(again)) == "duplicate"
    assert d.check("a", 0, fingerprint(other)) == "reused"
    d.add("b", 3, None)  # restored from a features record written before fingerprints: any repeat is a duplicate
    assert d.check("b", 3, fingerprint(other)) == "duplicate"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 50), st.integers(0, 3)), max_size=200))
def test_every_reading_is_new_once_and_every_other_content_is_reused(readings):
    d = Deduplicator(window=1000)
    first: dict = {}
    for device, seq, content in readings:
        verdict = d.check(device, seq, str(content))
        if (device, seq) not in first:
            first[(device, seq)] = content
            assert verdict == "new"
        else:
            assert verdict == ("duplicate" if content == first[(device, seq)] else "reused")
