"""A version that fails on live input after its load and warm-up passed, on real Kafka with a running scorer
of each engine: v1 from the real trainer, v2 a real artefact (tests/score/failing_model.py) published with the
trainer's codec while scoring. v1 serves again, every reading is scored exactly once, none by v2, and the
failure is logged (``version_failed``) and counted; a later promotion of v2 is refused."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from streamtrain.kafka import producer_config, read_topic
from streamtrain.model import ARTEFACT_FORMAT
from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.modelcontrol import promote_record
from streamtrain.stack.local import free_port
from tests.cli.test_models_pin_e2e import events, served_by, start_engine, wait_event
from tests.score.failing_model import failing_version
from tests.score.test_scorer_e2e import FeatureStream, start_scorer, train, wait_scores
from tests.score.test_unhealthy_version_e2e import metric
from tests.score_streams.test_streams_scorer_e2e import programs, start_streams_scorer  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("engine", ["python", "kafka-streams"])
def test_a_version_failing_after_warm_up_gives_way_to_the_previous_one(pipeline, tmp_path, programs, engine):  # noqa: F811
    stream = FeatureStream(pipeline, seed=29)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    scorer, port = start_engine(engine, pipeline, tmp_path, programs)
    assert served_by(stream, pipeline) == {1}

    v1 = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)[-1]
    artefact, meta, attachments = failing_version(v1.metadata, 2)
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    publish_model(producer, pipeline.topic_models, artefact, meta, attachments=attachments)
    assert wait_event(scorer, "model_loaded", 2, stream=stream)["version"] == 2  # load and warm-up passed
    failed = wait_event(scorer, "version_failed", 1, stream=stream)
    assert failed["version"] == 2 and failed["serving_version"] == 1, failed
    assert "out of" in failed["error"] or "not in" in failed["error"], failed["error"]
    assert served_by(stream, pipeline) == {1}
    assert metric(port, "streamtrain_scorer_versions_failed_total") == 1
    assert metric(port, "streamtrain_scorer_model_version") == 1

    # A promotion naming the bad version is refused and counted; v1 keeps serving.
    key, value = promote_record(2)
    producer.produce(pipeline.topic_models, value, key=key)
    assert producer.flush(30) == 0
    refused = wait_event(scorer, "version_refused", 1, stream=stream)
    assert refused["version"] == 2 and refused["serving_version"] == 1
    assert metric(port, 'streamtrain_scorer_models_refused_total{reason="version_failed"}') == 1
    assert served_by(stream, pipeline) == {1}

    # One process all along, every reading scored exactly once, none by v2, nothing dead-lettered.
    assert len(events(scorer, "models_caught_up")) == 1 and len(events(scorer, "version_failed")) == 1
    assert metric(port, 'streamtrain_scorer_deadlettered_total{reason="model_failed"}') == 0
    assert scorer.stop() == 0, scorer.log()[-3000:]
    scores = wait_scores(pipeline, set(stream.sent))
    keys = [(s["device_id"], s["seq"]) for s in scores]
    assert len(keys) == len(set(keys)) == len(stream.sent)
    assert {s["model_version"] for s in scores} == {1}


def _dead_letters(pipeline, expected: set, timeout: float = 120) -> list[tuple[tuple[str, int], str]]:
    def key(m) -> tuple[str, int]:
        body = json.loads(m.value())
        return body["device_id"], body["seq"]

    msgs = read_topic(
        pipeline.kafka_bootstrap,
        pipeline.topic_deadletter,
        until=lambda got: expected <= {key(m) for m in got},
        timeout=timeout,
    )
    return [(key(m), dict(m.headers() or [])["streamtrain.reason"].decode()) for m in msgs]


@pytest.mark.parametrize("engine", ["python", "kafka-streams"])
def test_with_no_other_version_the_readings_are_dead_lettered_until_a_new_one_serves(
    pipeline,
    tmp_path,
    programs,  # noqa: F811
    engine,
):
    stream = FeatureStream(pipeline, seed=31)
    stream.send(100)  # the trainer's input, later
    meta = {
        "feature_names": ["temperature", "current", "vibration", "pressure"],
        "format": ARTEFACT_FORMAT,
        "threshold": 1.0,
        "normalization": {"mean": [72.0, 1.5, 0.3, 3.0], "std": [7.0, 0.4, 0.1, 0.5]},
        "training_health": {"status": "ok"},
    }
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    artefact, meta, attachments = failing_version(meta, 1)
    publish_model(producer, pipeline.topic_models, artefact, meta, attachments=attachments)
    port = free_port()
    if engine == "python":
        scorer = start_scorer(pipeline, tmp_path, metrics_port=port, start_at="latest")
        programs.append(scorer)
    else:
        scorer = start_streams_scorer(pipeline, tmp_path, programs, metrics_port=port, start_at="latest")
    wait_event(scorer, "models_caught_up", 1)
    first = len(stream.sent)
    failed = wait_event(scorer, "version_failed", 1, stream=stream)
    assert failed["version"] == 1 and failed["serving_version"] is None, failed
    wait_event(scorer, "batch_deadlettered", 1, stream=stream)
    assert metric(port, "streamtrain_scorer_versions_failed_total") == 1

    train(pipeline, tmp_path, "train-v2", records=2000)
    assert wait_event(scorer, "champion_switched", 2, stream=stream)["new_version"] == 2
    mark = len(stream.sent)
    stream.send(10)
    fresh = set(stream.sent[mark:])
    scores = wait_scores(pipeline, fresh)
    assert {s["model_version"] for s in scores if (s["device_id"], s["seq"]) in fresh} == {2}
    assert scorer.proc.poll() is None  # one process all along: no crash loop
    assert len(events(scorer, "version_failed")) == 1
    assert scorer.stop() == 0, scorer.log()[-3000:]

    # Every reading sent since the scorer started: scored by v2 or dead-lettered (model_failed), never both.
    live = set(stream.sent[first:])
    scored = [(s["device_id"], s["seq"]) for s in wait_scores(pipeline, fresh) if (s["device_id"], s["seq"]) in live]
    assert len(scored) == len(set(scored))
    dead = [(k, reason) for k, reason in _dead_letters(pipeline, live - set(scored)) if k in live]
    dead_keys = [k for k, _ in dead]
    assert dead and {reason for _, reason in dead} == {"model_failed"}
    assert len(dead_keys) == len(set(dead_keys)) and not set(dead_keys) & set(scored)
    assert set(dead_keys) | set(scored) == live
