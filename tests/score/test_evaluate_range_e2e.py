"""`streamtrain evaluate --since/--until` on real Kafka: only the score records whose timestamps fall in the
range are counted, the full read still counts them all, and an empty range fails naming it."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from streamtrain.kafka import iter_topic, producer_config
from tests.programs import STREAMTRAIN, settings_env

pytestmark = pytest.mark.e2e

OLD, NEW = 40, 25  # score records of a first batch, then of a second one


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def evaluate(pipeline, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STREAMTRAIN, "evaluate", "--json", *args],
        env=settings_env(pipeline),
        capture_output=True,
        text=True,
        timeout=180,
    )


def send(pipeline, seqs: range) -> list[int]:
    """Produce a score record per seq; the record timestamps the broker gave them (the scores topic is
    LogAppendTime: a record's time is its arrival)."""
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    for i in seqs:
        record = {"device_id": f"d{i % 5}", "seq": i, "model_version": 1, "is_anomaly": i % 3 == 0, "label": i % 2}
        producer.produce(pipeline.topic_scores, json.dumps(record).encode(), key=f"d{i % 5}")
    assert producer.flush(30) == 0
    read = list(iter_topic(pipeline.kafka_bootstrap, pipeline.topic_scores))
    return [m.timestamp()[1] for m in read if json.loads(m.value())["seq"] in seqs]


def test_evaluate_counts_the_scores_inside_the_range(pipeline):
    first = send(pipeline, range(OLD))
    assert len(first) == OLD
    deadline = time.monotonic() + 10
    while time.time() * 1000 <= max(first) + 2:  # the broker's clock is this machine's: past the first batch
        assert time.monotonic() < deadline
    second = send(pipeline, range(OLD, OLD + NEW))
    assert len(second) == NEW and min(second) > max(first)

    full = evaluate(pipeline)
    assert full.returncode == 0, full.stderr[-3000:]
    assert json.loads(full.stdout)["overall"]["records"] == OLD + NEW
    recent = evaluate(pipeline, "--since", "1h")
    assert recent.returncode == 0, recent.stderr[-3000:]
    assert json.loads(recent.stdout)["overall"]["records"] == OLD + NEW

    later = evaluate(pipeline, "--since", iso(max(first) + 1))
    assert later.returncode == 0, later.stderr[-3000:]
    assert json.loads(later.stdout)["overall"]["records"] == NEW

    earlier = evaluate(pipeline, "--until", iso(max(first)))
    assert earlier.returncode == 0, earlier.stderr[-3000:]
    assert json.loads(earlier.stdout)["overall"]["records"] == OLD

    # Both ends are inclusive.
    exact = evaluate(pipeline, "--since", iso(min(second)), "--until", iso(max(second)))
    assert exact.returncode == 0, exact.stderr[-3000:]
    assert json.loads(exact.stdout)["overall"]["records"] == NEW

    empty = evaluate(pipeline, "--until", iso(min(first) - 1))
    assert empty.returncode == 1, empty.stdout
    assert f"no scores on {pipeline.topic_scores} from the beginning to " in empty.stderr and empty.stdout == ""


def test_a_transaction_left_open_ends_the_read_at_what_was_committed(pipeline):
    """A scorer's transaction still open when evaluate starts: read committed, the end offsets seen at the
    start are the last stable ones, so the read ends there (not stalled behind the open transaction) and
    nothing of the open transaction is counted."""
    done = Producer(producer_config(pipeline.kafka_bootstrap))
    for i in range(10):
        done.produce(pipeline.topic_scores, json.dumps({"seq": i}).encode(), partition=0)
    assert done.flush(30) == 0
    open_tx = Producer(
        producer_config(pipeline.kafka_bootstrap, **{"transactional.id": f"{pipeline.topic_scores}.open"})
    )
    open_tx.init_transactions(30)
    open_tx.begin_transaction()
    open_tx.produce(pipeline.topic_scores, b'{"seq": 99}', partition=0)
    assert open_tx.flush(30) == 0
    try:
        read = [json.loads(m.value())["seq"] for m in iter_topic(pipeline.kafka_bootstrap, pipeline.topic_scores)]
        assert read == list(range(10))
    finally:
        open_tx.abort_transaction(30)
    # Aborted: still the ten, the read past the abort marker.
    assert len(list(iter_topic(pipeline.kafka_bootstrap, pipeline.topic_scores))) == 10
