"""`streamtrain evaluate` on real Kafka counts only readings the scoring version did not train on: a new
scorer group starts at the oldest record, so the live scorer scores the version's own training range too."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.programs import STREAMTRAIN, settings_env
from tests.score.test_scorer_e2e import DEVICES, FeatureStream, start_scorer, train, wait_scores

pytestmark = pytest.mark.e2e


def test_evaluate_leaves_out_the_readings_the_version_trained_on(pipeline, tmp_path):
    stream = FeatureStream(pipeline, seed=19)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=1500)  # the oldest 1,500 of 2,000
    stream.send(30)
    scorer = start_scorer(pipeline, tmp_path)
    scores = wait_scores(pipeline, set(stream.sent))
    assert scorer.stop() == 0, scorer.log()[-3000:]
    assert {s["model_version"] for s in scores} == {1} and len(scores) == len(DEVICES) * 130

    done = subprocess.run(
        [*STREAMTRAIN, "evaluate", "--json"], env=settings_env(pipeline), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["trained_on"] == {"total": 1500, "by_version": {"1": 1500}}
    assert result["overall"]["records"] == len(scores) - 1500 == result["by_version"]["1"]["records"]

    table = subprocess.run(
        [*STREAMTRAIN, "evaluate"], env=settings_env(pipeline), capture_output=True, text=True, timeout=180
    )
    assert table.returncode == 0, table.stderr[-3000:]
    assert "trained_on=1500 (v1: 1500; not counted above)" in table.stdout
