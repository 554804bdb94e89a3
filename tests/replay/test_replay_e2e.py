"""A recording from years ago, replayed as a user would (CSV replay in two parts: training, then test),
through the real bridge, preprocessor, trainer and scorer on the session's Kafka and HiveMQ.

Every reading is counted at each stage (raw, features, sequences, training, scores) and nothing is
dropped silently; Kafka keeps the records by arrival time (their timestamps are when they arrived,
the readings' own `ts` stays years old); the second replay continues the devices' seqs; a reused seq
with other content is dead-lettered with its reason, a true repeat is dropped and logged; the scorer
started with `--start-at latest` scores exactly what arrives after it started.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
import urllib.request
import uuid
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamtrain.kafka import headers_dict, read_topic
from streamtrain.stack.local import free_port
from tests.fleet.stream import wait_until
from tests.programs import STREAMTRAIN, Program, drop_mqtt_session, settings_env

DEVICES = [f"rec-{i}" for i in range(4)]
TRAIN, TEST, WINDOW = 150, 100, 4
RECORDED = datetime(2019, 6, 1, tzinfo=timezone.utc).timestamp()  # years before the test runs
SPEC = f"features: [a, b, c]\nsequences: {{length: {WINDOW}}}\nlabel: label\n"


def write_recording(path, first: int, n: int) -> list[dict]:
    """Rows ``first``..``first+n`` of the recording of every device (2019, one reading a second)."""
    rows = []
    for i in range(first, first + n):
        for d, device in enumerate(DEVICES):
            fault = int(TRAIN + 40 <= i < TRAIN + 60)
            rows.append(
                {
                    "timestamp": datetime.fromtimestamp(RECORDED + i, timezone.utc).isoformat(),
                    "machine": device,
                    "a": round(10 + d + 0.01 * (i % 17), 3),
                    "b": round(2 * (10 + d) + (8 if fault else 0.02 * (i % 5)), 3),
                    "c": round(-5 + 0.1 * d, 3),
                    "fault": fault,
                }
            )
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def records(bootstrap: str, topic: str) -> int:
    """Records on ``topic`` (offsets also count transaction markers)."""
    return len(read_topic(bootstrap, topic, timeout=10))


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        f"{s.name}{json.dumps(s.labels, sort_keys=True) if s.labels else ''}": s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.mark.e2e
def test_a_years_old_recording_replayed_twice_is_kept_trained_on_and_scored_completely(pipeline, tmp_path):
    started_ms = time.time() * 1000
    tag = uuid.uuid4().hex[:6]
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    seq_state = tmp_path / "replay-seqs.json"
    pre_port, score_port = free_port(), free_port()
    bridge = Program(
        ["bridge"], settings_env(pipeline, client_id=f"rb-{tag}", share_group=f"rb-{tag}"), tmp_path / "bridge.log"
    ).start()
    pre = Program(
        ["preprocess", "--spec", str(spec), "--group-id", f"rp-{tag}", "--metrics-port", str(pre_port)],
        settings_env(pipeline),
        tmp_path / "preprocess.log",
    ).start()
    scorer = None
    try:
        bridge.wait_log('"mqtt_subscribed"')

        def replay(path) -> dict:
            done = subprocess.run(
                [
                    *STREAMTRAIN,
                    "simulate",
                    "--csv",
                    str(path),
                    "--device-column",
                    "machine",
                    "--label-column",
                    "fault",
                    "--speed",
                    "0",
                    "--seq-state",
                    str(seq_state),
                ],
                env=settings_env(pipeline),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            return json.loads(done.stdout.strip().splitlines()[-1])

        # ---- the training part: raw -> features -> sequences, all of it, kept by arrival time
        train_rows = write_recording(tmp_path / "train.csv", 0, TRAIN)
        assert replay(tmp_path / "train.csv")["acked"] == len(train_rows)
        n_train = len(train_rows)
        wait_until(
            "training part in features and sequences",
            lambda: (
                (f := records(pipeline.kafka_bootstrap, pipeline.topic_features)) == n_train
                and records(pipeline.kafka_bootstrap, pipeline.topic_sequences)
                == n_train - len(DEVICES) * (WINDOW - 1),
                f"{f}/{n_train}",
            ),
        )

        # ---- training: every training reading, nothing skipped
        done = subprocess.run(
            [*STREAMTRAIN, "train", "--epochs", "2", "--features", "a,b,c"],
            env=settings_env(pipeline, min_records=100),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        trained = json.loads(done.stdout.strip().splitlines()[-1])
        assert trained["record_count"] == n_train, trained

        # ---- a scorer that starts at the end: the training part is not scored
        scorer = Program(
            ["score", "--start-at", "latest", "--group-id", f"rs-{tag}", "--metrics-port", str(score_port)],
            settings_env(pipeline, instance_id=f"rs-{tag}"),
            tmp_path / "score.log",
        ).start()
        scorer.wait_log('"start_position"', timeout=120)
        moved = next(json.loads(x) for x in scorer.log().splitlines() if '"start_position"' in x)
        assert moved["start_at"] == "latest" and moved["offsets_skipped"] >= n_train, moved  # + transaction markers

        # ---- the test part, replayed separately: its seqs continue after the training part's
        test_rows = write_recording(tmp_path / "test.csv", TRAIN, TEST)
        assert replay(tmp_path / "test.csv")["acked"] == len(test_rows)
        n_all = n_train + len(test_rows)
        wait_until(
            "test part scored",
            lambda: ((n := records(pipeline.kafka_bootstrap, pipeline.topic_scores)) >= len(test_rows), n),
            timeout=180,
        )

        # ---- identities: the same reading again is a duplicate; another reading under a used seq is not
        first = dict(train_rows[0])
        other = {**train_rows[1], "a": 99.0}
        with open(tmp_path / "again.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=[*first, "seq"])
            w.writeheader()
            w.writerows([{**first, "seq": 0}, {**other, "seq": 0}])
        assert replay(tmp_path / "again.csv")["acked"] == 2
        wait_until(
            "the reused seq dead-lettered",
            lambda: ((n := records(pipeline.kafka_bootstrap, pipeline.topic_deadletter)) == 1, n),
        )
        wait_until(
            "the duplicate counted",
            lambda: ((m := metrics(pre_port)).get("streamtrain_preprocess_duplicates_total") == 1, m),
        )
        lag = metrics(score_port)
    finally:
        for prog in (scorer, pre, bridge):
            if prog is not None:
                assert prog.stop() == 0, prog.log()[-3000:]
        drop_mqtt_session(pipeline.mqtt_port, f"rb-{tag}")

    # Every stage, counted: nothing lost, nothing silently dropped.
    raw = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=30)
    features = read_topic(pipeline.kafka_bootstrap, pipeline.topic_features, timeout=30)
    sequences = read_topic(pipeline.kafka_bootstrap, pipeline.topic_sequences, timeout=30)
    scores = [json.loads(m.value()) for m in read_topic(pipeline.kafka_bootstrap, pipeline.topic_scores, timeout=30)]
    assert len(raw) == n_all + 2
    assert len(features) == n_all
    assert len(sequences) == n_all - len(DEVICES) * (WINDOW - 1)
    seqs = {(d, s) for d in DEVICES for s in range(TRAIN + TEST)}
    assert sorted((b["device_id"], b["seq"]) for b in map(lambda m: json.loads(m.value()), features)) == sorted(seqs)
    assert sorted((s["device_id"], s["seq"]) for s in scores) == sorted((d, s) for d, s in seqs if s >= TRAIN), (
        "the test part scored once each, the training part not at all (--start-at latest)"
    )

    # Kept by arrival: Kafka timestamps are when records arrived; the readings' own times are from 2019.
    for topic, msgs in (("raw", raw), ("features", features), ("sequences", sequences)):
        assert min(m.timestamp()[1] for m in msgs) >= started_ms - 1000, f"{topic} stamped with event time"
    assert max(json.loads(m.value())["ts"] for m in raw) < RECORDED + 3600

    # The dead letter says why; the preprocessor said so in its log too.
    (dead,) = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, timeout=10)
    assert headers_dict(dead)["streamtrain.reason"] == "seq_reused"
    assert json.loads(dead.value())["a"] == 99.0
    log_lines = [json.loads(x) for x in pre.log().splitlines() if x.startswith("{")]
    assert any(
        x["event"] == "seq_reused_deadlettered" and x["level"] == "warning" and x["count"] == 1 for x in log_lines
    )
    assert any(x["event"] == "duplicates_dropped" and x["count"] == 1 for x in log_lines)

    # Processing lag and event-time age are told apart: seconds versus years.
    n_scored = lag["streamtrain_scorer_end_to_end_seconds_count"]
    assert n_scored == len(test_rows) == lag["streamtrain_scorer_event_age_seconds_count"]
    assert lag["streamtrain_scorer_end_to_end_seconds_sum"] / n_scored < 600
    assert lag["streamtrain_scorer_event_age_seconds_sum"] / n_scored > 5 * 365 * 86400
