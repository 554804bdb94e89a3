"""Exit codes that need the brokers: each code a scorer or evaluate documents is what it returns when
nothing arrives (the checks without brokers are in tests/unit/repo/test_exitcodes.py)."""

from __future__ import annotations

import pytest

from streamtrain import exitcodes
from tests.programs import STREAMTRAIN, settings_env
from tests.unit.repo.test_exitcodes import _run


@pytest.mark.e2e
@pytest.mark.parametrize("engine", ["python", "kafka-streams"])
def test_both_scorers_exit_no_model_when_none_arrives_in_time(pipeline, engine):
    done = _run(
        STREAMTRAIN + ["score", "--engine", engine, "--model-wait", "1"],
        settings_env(pipeline, group_id=f"exit-{engine}-{pipeline.topic_scores}"),
    )
    assert done.returncode == exitcodes.NO_MODEL, done.stdout[-2000:] + done.stderr[-2000:]
    assert '"no_model"' in done.stdout + done.stderr


@pytest.mark.e2e
def test_evaluate_exits_failed_when_there_are_no_scores(pipeline):
    done = _run(STREAMTRAIN + ["evaluate"], settings_env(pipeline))
    assert done.returncode == exitcodes.FAILED and "no scores" in done.stderr, done.stderr[-2000:]
