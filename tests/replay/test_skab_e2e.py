"""A slice of SKAB (the Skoltech Anomaly Benchmark, real recordings of a water-circulation testbed)
replayed live as the README tells a user: one spec for its eight channels, the first 400 rows of
each experiment replayed and trained on with `train --model windowed --baselines device` (every
other setting at its default), a scorer started at the end of the topics, the rest replayed and
scored. Quality is measured only on the readings the model did not train on (SKAB's protocol).

The data is not in the repository (GPL-3.0, its authors publish it: github.com/waico/SKAB); the
test reads it from ../shared/data/skab (or STREAMTRAIN_SKAB_DATA) and is skipped, saying why,
when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamtrain.simulator import skab
from tests.replay.live import train_and_score

DATA = Path(os.environ.get("STREAMTRAIN_SKAB_DATA", Path(__file__).resolve().parents[3] / "shared" / "data" / "skab"))
#: A slice across SKAB's three folders: valve closures at the outlet and inlet, and the "other" faults.
SLICE = ["valve1-1", "valve1-6", "valve1-11", "valve2-0", "other-9", "other-14"]


@pytest.mark.e2e
def test_a_skab_slice_replayed_live_with_the_defaults_is_caught_with_few_false_alarms(pipeline, tmp_path):
    try:
        experiments = skab.load(DATA, only=SLICE)
    except skab.SkabMissing as exc:
        pytest.skip(str(exc))
    n_train = skab.write_csv(tmp_path / "train.csv", experiments, "train")
    n_test = skab.write_csv(tmp_path / "test.csv", experiments, "test")
    n_windows = n_train - len(experiments) * (skab.WINDOW - 1)
    meta, scores = train_and_score(
        pipeline, tmp_path, skab.SPEC, tmp_path / "train.csv", tmp_path / "test.csv", n_windows, n_test, skab.TRAIN_ARGS
    )
    assert meta["record_count"] == n_windows and meta["training_health"]["status"] == "ok", meta["training_health"]
    # Only the test rows are scored (the scorer started after training), each once.
    keys = sorted((s["device_id"], s["seq"]) for s in scores)
    assert keys == sorted((e.name, q) for e in experiments for q in range(skab.TRAIN_ROWS, len(e.x)))
    q = skab.pooled(skab.live_flags(scores, experiments))
    print("skab slice", q.as_dict())
    # Measured 2026-12-07 on this slice: F1 0.754 at 31.4 % false alarms (all 34 experiments: 0.788 at
    # 23.6 %, the README's SKAB table). The windowed model before the window score (the newest reading's
    # error alone, STREAMTRAIN_WINDOW_SCORE=newest) scored 0.733 at 29.6 % here and fails the F1 bound.
    assert q.f1 >= 0.745 and q.false_alarm_rate <= 0.34, q.as_dict()
