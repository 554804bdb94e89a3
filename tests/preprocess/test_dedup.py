"""Repeated (device, seq) readings are recognised; an aborted transaction's readings are forgotten."""
from hypothesis import given, settings, strategies as st

from streamtrain.dedup import Deduplicator


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
