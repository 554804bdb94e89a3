"""A version whose training was not healthy does not become champion by itself: real Kafka, real
TensorFlow, a real (unhealthy) training run, a running scorer, and `streamtrain models promote`."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

import pytest
from confluent_kafka import Consumer, TopicPartition

from streamtrain.kafka import READER_GROUP, client_config, watermarks
from streamtrain.modelcodec import read_versions
from streamtrain.stack.local import free_port
from tests.programs import STREAMTRAIN, settings_env
from tests.score.test_scorer_e2e import DEVICES, FeatureStream, start_scorer, train, wait_scores

pytestmark = pytest.mark.e2e

#: Exactly representable values: normalized, every reading is exactly 0, so the autoencoder's loss is 0
#: from its first step and cannot fall (the trainer's own health check says ``not_converged``).
CONSTANT = {"temperature": 70.0, "current": 2.5, "vibration": 0.5, "pressure": 3.0}


def ends(pipeline) -> dict[int, int]:
    c = Consumer(client_config(pipeline.kafka_bootstrap, **{"group.id": READER_GROUP}))
    try:
        parts = c.list_topics(pipeline.topic_features, timeout=10).topics[pipeline.topic_features].partitions
        return {p: watermarks(c, TopicPartition(pipeline.topic_features, p))[1] for p in parts}
    finally:
        c.close()


def send_constant(stream: FeatureStream, n_per_device: int) -> None:
    for _ in range(n_per_device):
        for d in DEVICES:
            r = {**stream.record(d), **CONSTANT}
            stream.producer.produce(stream.pipeline.topic_features, json.dumps(r).encode(), key=d.encode())
            stream.sent.append((d, r["seq"]))
    assert stream.producer.flush(30) == 0


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not exported"
    return float(found.group(1))


def versions_of(scores: list[dict], sent: set) -> set[int]:
    return {s["model_version"] for s in scores if (s["device_id"], s["seq"]) in sent}


def test_an_unhealthy_version_is_held_until_promoted_and_the_promotion_outlives_a_restart(pipeline, tmp_path):
    stream = FeatureStream(pipeline, seed=17)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    port = free_port()
    scorer = start_scorer(pipeline, tmp_path, "scorer-a", metrics_port=port)
    scorer.wait_log('"new_version": 1', timeout=120)

    # v2: the trainer's own run over exactly the constant readings, published as it publishes every version.
    before = ends(pipeline)
    send_constant(stream, 50)
    after = ends(pipeline)
    source = {"topic": pipeline.topic_features, "partitions": {str(p): [before[p], after[p]] for p in after}}
    train(pipeline, tmp_path, "train-v2", records=1000, source_range=json.dumps(source))
    v2 = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)[-1].metadata
    assert v2["version"] == 2 and v2["training_health"]["status"] == "not_converged"

    scorer.wait_log('"version_held"', timeout=120)
    held = [json.loads(line) for line in scorer.log().splitlines() if '"version_held"' in line]
    assert held[-1]["version"] == 2 and held[-1]["serving_version"] == 1 and held[-1]["reason"] == "not_converged"
    assert metric(port, 'streamtrain_scorer_versions_held_total{reason="not_converged"}') == 1
    assert metric(port, "streamtrain_scorer_held_version") == 2
    assert metric(port, "streamtrain_scorer_model_version") == 1
    first = len(stream.sent)
    stream.send(20)
    scores = wait_scores(pipeline, set(stream.sent))
    assert versions_of(scores, set(stream.sent[first:])) == {1}, "the held version must not score"

    promoted = subprocess.run(
        [*STREAMTRAIN, "models", "promote", "2"],
        env=settings_env(pipeline),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert promoted.returncode == 0, promoted.stderr
    scorer.wait_log('"held_promoted"', timeout=60)
    assert metric(port, "streamtrain_scorer_model_version") == 2
    assert metric(port, "streamtrain_scorer_champion_unhealthy") == 1
    assert metric(port, "streamtrain_scorer_held_version") == 0
    first = len(stream.sent)
    stream.send(20)
    scores = wait_scores(pipeline, set(stream.sent))
    assert versions_of(scores, set(stream.sent[first:])) == {2}
    assert scorer.stop() == 0, scorer.log()[-3000:]

    # A restart reads the promotion request from the models topic and keeps serving what was asked for.
    restarted = start_scorer(pipeline, tmp_path, "scorer-b")
    restarted.wait_log('"models_caught_up"', timeout=120)
    first = len(stream.sent)
    stream.send(20)
    scores = wait_scores(pipeline, set(stream.sent))
    assert restarted.stop() == 0, restarted.log()[-3000:]
    assert versions_of(scores, set(stream.sent[first:])) == {2}
    assert '"version_held"' not in restarted.log()
