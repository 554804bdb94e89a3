"""The whole pipeline, as `make demo` runs it, on the session's real brokers:
simulator -> HiveMQ -> bridge -> Kafka -> preprocess -> train v1 -> live scorer -> train v2 -> hot swap.
Quality is computed here from the scores topic, not taken from the demo's own output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from streamtrain.kafka import read_topic
from streamtrain.modelcodec import read_versions
from streamtrain.quality import evaluate, training_ranges


@pytest.mark.e2e
def test_demo_pipeline_reaches_f1_090_from_the_scores_topic(local_stack, tmp_path):
    run = f"t{uuid.uuid4().hex[:6]}"
    st = local_stack.settings
    env = {
        **os.environ,
        "STREAMTRAIN_HOME": str(st.home),
        "STREAMTRAIN_JARS": str(st.jars),
        "STREAMTRAIN_KAFKA_PORT": str(st.kafka_port),
        "STREAMTRAIN_KAFKA_CONTROLLER_PORT": str(st.kafka_controller_port),
        "STREAMTRAIN_MQTT_PORT": str(st.mqtt_port),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamtrain.cli.main",
            "--log-format",
            "console",
            "demo",
            "--run-id",
            run,
            "--keep-stack",
            "--devices",
            "40",
            "--rate",
            "10",
            "--v1-records",
            "12000",
            "--v2-records",
            "8000",
            "--report",
            str(tmp_path / "report"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "precision" in proc.stdout and "f1" in proc.stdout  # the quality table is printed
    assert (tmp_path / "report" / "index.html").exists()

    scores = [
        json.loads(m.value()) for m in read_topic(local_stack.bootstrap, f"streamtrain.demo-{run}.scores", timeout=60)
    ]
    features = read_topic(local_stack.bootstrap, f"streamtrain.demo-{run}.features", timeout=60)
    ev = evaluate(scores)
    print(proc.stdout[-2500:])
    assert ev.duplicates == 0
    assert ev.overall.records == len(features), "every feature record scored exactly once"
    assert {1, 2} <= set(ev.by_version), "the scorer swapped to v2 while traffic flowed"
    assert ev.overall.tp + ev.overall.fn > 100, "the stream carried labelled anomalies"
    assert ev.overall.f1 >= 0.90, ev.overall.as_dict()

    # The demo's own table counts held-out readings only: its scorer's new group starts at the oldest
    # record, so v1 scores its own training range, and those scores are left out and said so.
    models = read_versions(local_stack.bootstrap, f"streamtrain.demo-{run}.models", keep_deleted=True)
    ranges = training_ranges(mv.metadata for mv in models)
    held_out = evaluate(scores, training=ranges)
    trained_on = sum(held_out.trained_on.values())
    print("held out:", held_out.overall.as_dict(), "trained_on:", held_out.trained_on)
    assert 0 < held_out.trained_on[1] <= sum(e - s for s, e in ranges[1].values())
    assert held_out.overall.records == ev.overall.records - trained_on
    assert f"trained_on={trained_on} " in proc.stdout
    all_row = next(line.split() for line in proc.stdout.splitlines() if line.strip().startswith("all "))
    assert all_row[1:3] == [str(held_out.overall.records), str(held_out.overall.tp + held_out.overall.fn)]
    assert f"trained on them: {trained_on} " in (tmp_path / "report" / "index.html").read_text()
