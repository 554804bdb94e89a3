"""Quality on held-out readings only: scored readings inside their version's training range are left out."""

from __future__ import annotations

from streamtrain.quality import evaluate, format_table, in_training_range, training_ranges

MANIFESTS = [
    {"version": 1, "source": {"topic": "f", "partitions": {"0": [0, 100], "1": [0, 80]}}},
    {"version": 2, "source": {"topic": "f", "partitions": {"0": [100, 200], "1": [80, 160]}}},
    {"version": 3},  # trained before manifests carried a source: nothing to leave out
]


def score(version: int, partition: int, offset: int, seq: int, flagged: bool = False, label: int = 0) -> dict:
    return {
        "device_id": f"d{partition}",
        "seq": seq,
        "model_version": version,
        "is_anomaly": flagged,
        "label": label,
        "source": {"partition": partition, "offset": offset},
    }


def test_training_ranges_are_read_from_the_manifests_sources():
    assert training_ranges(MANIFESTS) == {1: {0: (0, 100), 1: (0, 80)}, 2: {0: (100, 200), 1: (80, 160)}}
    assert training_ranges([{"version": 4, "source": {"partitions": {"0": ["x"]}}}]) == {}


def test_a_reading_is_in_range_only_for_the_version_that_trained_on_it():
    ranges = training_ranges(MANIFESTS)
    assert in_training_range(score(1, 0, 0, 0), ranges)
    assert in_training_range(score(1, 0, 99, 0), ranges)
    assert not in_training_range(score(1, 0, 100, 0), ranges)  # the end is exclusive
    assert not in_training_range(score(2, 0, 99, 0), ranges)  # v1's reading, scored by v2
    assert not in_training_range(score(1, 2, 5, 0), ranges)  # a partition v1 did not read
    assert not in_training_range(score(3, 0, 5, 0), ranges)
    assert not in_training_range({"model_version": 1, "seq": 1}, ranges)  # no source: kept


def test_evaluate_counts_held_out_readings_and_says_how_many_it_left_out():
    # v1 scores all of its own 100 training readings on partition 0 (flagging none of its 10 anomalies)
    # and 20 later ones (catching both anomalies); v2 scores 30 readings after its range.
    scores = [score(1, 0, o, o, label=int(o % 10 == 0)) for o in range(100)]
    scores += [score(1, 0, o, o, flagged=o % 10 == 0, label=int(o % 10 == 0)) for o in range(200, 220)]
    scores += [score(2, 1, o, o) for o in range(160, 190)]
    scores.append(score(1, 0, 5, 5))  # a duplicate of a training reading: a duplicate, not counted twice
    everything = evaluate(scores)
    held_out = evaluate(scores, training=training_ranges(MANIFESTS))
    assert everything.by_version[1].records == 120 and everything.by_version[1].recall == 2 / 12
    assert held_out.by_version[1].records == 20 and held_out.by_version[1].recall == 1.0
    assert held_out.by_version[2].records == 30
    assert held_out.overall.records == 50 and held_out.trained_on == {1: 100}
    assert held_out.duplicates == everything.duplicates == 1
    table = format_table(held_out)
    assert table.splitlines()[-1] == "unlabelled=0 duplicates=1 trained_on=100 (v1: 100; not counted above)"
    assert format_table(everything).splitlines()[-1] == "unlabelled=0 duplicates=1 trained_on=0"
