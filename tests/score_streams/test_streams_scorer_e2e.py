"""The Kafka Streams scorer (scorer/streams, JVM + ONNX Runtime) on real Kafka, with models
trained by the real trainer: same flags and scores as the Python scorer, exactly-once hot
swap under load, records held for a batched ONNX call forwarded before every commit (SIGKILL
and restart lose or repeat none), corrupt model versions refused while the previous one keeps
serving."""

from __future__ import annotations

import collections
import json
import re
import urllib.request

import numpy as np
import pytest
from confluent_kafka import Producer

from streamtrain.kafka import ensure_topics, producer_config, read_topic
from streamtrain.stack.local import free_port
from streamtrain.topics import TopicSpec
from tests.programs import Program, settings_env
from tests.records import assert_valid
from tests.score.test_scorer_e2e import DEVICES, FeatureStream, train, wait_scores


@pytest.fixture
def programs():
    """Programs a test starts; any still running when it ends (a failed assertion) are killed."""
    started: list[Program] = []
    yield started
    for p in started:
        if p.proc is not None and p.proc.poll() is None:
            p.kill()


def start_streams_scorer(pipeline, tmp_path, programs, name: str = "streams-scorer", **extra) -> Program:
    env = settings_env(pipeline, group_id=f"streams-{pipeline.topic_scores}", instance_id=name, **extra)
    prog = Program(["score", "--engine", "kafka-streams"], env, tmp_path / f"{name}.log").start()
    programs.append(prog)
    return prog


@pytest.mark.e2e
def test_java_and_python_scorers_agree_on_flags_and_scores(pipeline, tmp_path, programs):
    stream = FeatureStream(pipeline, seed=11)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    # Fresh records, a share of them anomalous, plus two that neither scorer can score.
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    for i in range(30):
        for d in DEVICES:
            r = stream.record(d, anomalous=(i % 5 == 0))
            producer.produce(pipeline.topic_features, json.dumps(r).encode(), key=d.encode())
            stream.sent.append((d, r["seq"]))
    producer.produce(pipeline.topic_features, b"{not json", key=b"bad")
    producer.produce(pipeline.topic_features, json.dumps({"device_id": "x", "seq": 0}).encode(), key=b"bad")
    assert producer.flush(30) == 0
    expected = set(stream.sent)

    java_scores = f"{pipeline.topic_scores}.java"
    ensure_topics(pipeline.kafka_bootstrap, [TopicSpec(java_scores, partitions=3)])
    python = Program(
        ["score"],
        settings_env(pipeline, group_id=f"py-{pipeline.topic_scores}", batch_size=200),
        tmp_path / "python-scorer.log",
    ).start()
    programs.append(python)
    java = start_streams_scorer(pipeline.model_copy(update={"topic_scores": java_scores}), tmp_path, programs)
    py_scores = wait_scores(pipeline, expected)
    jv_scores = wait_scores(pipeline.model_copy(update={"topic_scores": java_scores}), expected)
    assert python.stop() == 0, python.log()[-3000:]
    assert java.stop() == 0, java.log()[-3000:]

    py = {(s["device_id"], s["seq"]): s for s in py_scores}
    jv = {(s["device_id"], s["seq"]): s for s in jv_scores}
    assert len(jv_scores) == len(jv) == len(expected), "every input scored once by the Java scorer"
    assert set(py) == set(jv) == expected
    # One contract for both engines: streamtrain/schemas/score.schema.json (closed: no field of one engine alone).
    assert_valid("score", jv_scores)
    assert_valid("score", py_scores)
    keys = sorted(expected)
    flags_py = np.array([py[k]["is_anomaly"] for k in keys])
    flags_jv = np.array([jv[k]["is_anomaly"] for k in keys])
    assert flags_py.any() and not flags_py.all(), "the input must exercise both flags"
    assert (flags_py == flags_jv).all(), f"{int((flags_py != flags_jv).sum())} flags differ"
    # float32 through two engines that order and fuse the same operations differently (ONNX Runtime;
    # TensorFlow's traced graph): up to ~1.2e-5 relative measured on 2,600 scores, flags identical.
    np.testing.assert_allclose([jv[k]["score"] for k in keys], [py[k]["score"] for k in keys], rtol=5e-5, atol=0)
    one_py, one_jv = py[keys[0]], jv[keys[0]]
    assert one_jv["scorer"] == "kafka-streams" and one_py["scorer"] == "python"
    same_fields = {"device_id", "seq", "ts", "model_version", "threshold", "baseline", "label", "source"}
    assert {f: one_jv[f] for f in same_fields} == {f: one_py[f] for f in same_fields}
    assert set(one_jv) == set(one_py)
    dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, timeout=10)
    reasons = collections.Counter(dict(m.headers())["streamtrain.reason"].decode() for m in dead)
    assert reasons == {"malformed_json": 2, "missing_feature": 2}, "one dead letter per scorer and bad record"

    # A new group started at the end (STREAMTRAIN_START_AT, as the operator sets it) scores only what follows.
    late = pipeline.model_copy(update={"topic_scores": f"{pipeline.topic_scores}.late"})
    ensure_topics(pipeline.kafka_bootstrap, [TopicSpec(late.topic_scores, partitions=3)])
    java = start_streams_scorer(late, tmp_path, programs, name="late", start_at="latest", start_at_once="true")
    java.wait_log('"start_position"', timeout=120)
    after = set()
    for d in DEVICES:
        r = stream.record(d)
        producer.produce(pipeline.topic_features, json.dumps(r).encode(), key=d.encode())
        after.add((d, r["seq"]))
    assert producer.flush(30) == 0
    late_scores = wait_scores(late, after)
    assert java.stop() == 0, java.log()[-3000:]
    assert sorted((s["device_id"], s["seq"]) for s in late_scores) == sorted(after)


@pytest.mark.e2e
def test_streams_hot_swap_under_load_scores_every_input_exactly_once_in_version_order(pipeline, tmp_path, programs):
    stream = FeatureStream(pipeline)
    stream.send(150)
    train(pipeline, tmp_path, "train-v1", records=3000)
    scorer = start_streams_scorer(pipeline, tmp_path, programs)
    scorer.wait_log('"new_version": 1', timeout=180)
    stream.start(per_second=400)
    import time

    deadline = time.monotonic() + 60
    while len(stream.sent) < 6000 and time.monotonic() < deadline:
        time.sleep(0.2)
    train(pipeline, tmp_path, "train-v2", records=3000)
    scorer.wait_log('"champion_switched"', timeout=120)
    scorer.wait_log('"new_version": 2', timeout=120)
    sent_at_switch = len(stream.sent)
    while len(stream.sent) < sent_at_switch + 800 and time.monotonic() < deadline + 120:
        time.sleep(0.2)  # v2 scores some of the live stream too
    stream.stop()
    expected = set(stream.sent)
    scores = wait_scores(pipeline, expected)
    assert scorer.stop() == 0, scorer.log()[-3000:]

    keys = collections.Counter((s["device_id"], s["seq"]) for s in scores)
    assert set(keys) == expected
    duplicates = {k: c for k, c in keys.items() if c > 1}
    assert not duplicates, f"{len(duplicates)} inputs scored more than once"
    by_partition = collections.defaultdict(list)
    for s in sorted(scores, key=lambda s: (s["source"]["partition"], s["source"]["offset"])):
        by_partition[s["source"]["partition"]].append(s["model_version"])
    assert len(by_partition) == 3
    for part, versions in by_partition.items():  # in input order
        switches = [(a, b) for a, b in zip(versions, versions[1:]) if a != b]
        assert switches == [(1, 2)], f"partition {part}: switches {switches}"
    assert {s["scorer"] for s in scores} == {"kafka-streams"}
    assert_valid("score", scores)


@pytest.mark.faults  # ~70 s: a SIGKILL and a restart of the JVM scorer (make test-faults)
def test_streams_held_records_are_scored_before_each_commit_and_survive_sigkill(pipeline, tmp_path, programs):
    """Records wait in the processor for a batched ONNX call. With a batch that never fills and a wait
    that never ends, only the flush before each commit can forward them: every score arriving shows it
    runs; a SIGKILL with records held and a restart show no commit took the offset of an unscored record
    (every input scored, none twice, read_committed)."""
    import time

    stream = FeatureStream(pipeline, seed=13)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    # A short transaction timeout: the killed instance's open transaction is aborted sooner.
    held = {"batch_size": 1_000_000, "batch_wait_ms": 3_600_000, "transaction_timeout_ms": 10000}
    first = start_streams_scorer(pipeline, tmp_path, programs, name="held-a", **held)
    wait_scores(pipeline, set(stream.sent))
    stream.start(per_second=400)
    time.sleep(3)
    first.kill()
    restarted = start_streams_scorer(pipeline, tmp_path, programs, name="held-b", **held)
    time.sleep(3)
    stream.stop()
    expected = set(stream.sent)
    scores = wait_scores(pipeline, expected)
    assert restarted.stop() == 0, restarted.log()[-3000:]
    keys = collections.Counter((s["device_id"], s["seq"]) for s in scores)
    assert set(keys) == expected
    assert not {k: c for k, c in keys.items() if c > 1}, "an input scored twice"


@pytest.mark.e2e
def test_streams_scorer_refuses_corrupt_models_and_keeps_serving(pipeline, tmp_path, programs):
    from streamtrain.modelcodec import publish_model, read_versions

    stream = FeatureStream(pipeline, seed=5)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    port = free_port()
    scorer = start_streams_scorer(pipeline, tmp_path, programs, metrics_port=port)
    scorer.wait_log('"new_version": 1', timeout=180)

    good = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)[-1]
    assert "onnx" in good.attachments
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    # v2: a well-formed envelope around an artefact that is not a model at all.
    publish_model(
        producer,
        pipeline.topic_models,
        b"this is not a keras model" * 100,
        {**good.metadata, "version": 2, "parent_version": 1},
        attachments={"onnx": b"not onnx"},
    )
    # v3: the real Keras artefact, but its ONNX graph is garbage (checksums fine).
    publish_model(
        producer,
        pipeline.topic_models,
        good.artefact,
        {**good.metadata, "version": 3},
        attachments={"onnx": good.attachments["onnx"][:100]},
    )
    # v4: a real model without the ONNX export (as published before the trainer exported it).
    publish_model(producer, pipeline.topic_models, good.artefact, {**good.metadata, "version": 4})
    # A record that is not part of any model (a compacted topic takes no record without a key).
    errors = []
    producer.produce(
        pipeline.topic_models,
        b"\x00\xff garbage",
        key=b"model/garbage",
        on_delivery=lambda err, _: errors.append(err) if err else None,
    )
    assert producer.flush(10) == 0 and not errors
    for reason in ("not_a_model", "load_failed", "incompatible", "bad_key"):
        scorer.wait_log(f'"reason": "{reason}"', timeout=60)

    stream.send(50)
    scores = wait_scores(pipeline, set(stream.sent))
    assert scorer.proc.poll() is None, "the scorer must survive corrupt models"
    assert {s["model_version"] for s in scores} == {1}
    assert len(scores) == len(set(stream.sent))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for reason in ("not_a_model", "load_failed", "incompatible", "bad_key"):
        assert f'streamtrain_scorer_models_refused_total{{reason="{reason}"}} 1.0' in metrics, metrics
    assert "streamtrain_scorer_model_version 1.0" in metrics
    scored = re.search(r'^streamtrain_scorer_records_scored_total\{model_version="1"\} (\S+)$', metrics, re.M)
    assert scored and float(scored.group(1)) >= len(scores)  # a retried (aborted) transaction counts again
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10).status == 200
    assert scorer.stop() == 0
