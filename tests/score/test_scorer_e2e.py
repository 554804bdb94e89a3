"""The live scorer on real Kafka and real TensorFlow: hot swap under load, corrupt models,
SIGKILL recovery. Models are trained by the real trainer from the features topic."""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from streamtrain.kafka import producer_config, read_topic
from streamtrain.train_settings import TrainSettings
from tests.programs import Program, settings_env
from tests.records import assert_valid

DEVICES = [f"sd-{i:03d}" for i in range(20)]


class FeatureStream:
    """Writes correlated sensor records straight to the features topic, like the preprocessor would."""

    def __init__(self, pipeline, seed: int = 3) -> None:
        self.pipeline = pipeline
        self.rng = np.random.default_rng(seed)
        self.producer = Producer(producer_config(pipeline.kafka_bootstrap))
        self.seq: collections.Counter[str] = collections.Counter()
        self.sent: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, device: str, anomalous: bool = False) -> dict:
        load = self.rng.uniform(0.2, 0.8)
        r: dict[str, Any] = {
            "device_id": device,
            "ts": time.time(),
            "seq": self.seq[device],
            "temperature": 60 + 25 * load + self.rng.normal(0, 0.4),
            "current": 1.5 + 2 * load + self.rng.normal(0, 0.03),
            "vibration": 0.3 + 0.4 * load + self.rng.normal(0, 0.008),
            "pressure": 3 + 1.5 * load + self.rng.normal(0, 0.03),
            "label": int(anomalous),
        }
        if anomalous:
            r["temperature"] += 30
        self.seq[device] += 1
        return r

    def send(self, n_per_device: int) -> None:
        for _ in range(n_per_device):
            for d in DEVICES:
                r = self.record(d)
                self.producer.produce(self.pipeline.topic_features, json.dumps(r).encode(), key=d.encode())
                self.sent.append((d, r["seq"]))
            self.producer.poll(0)
        assert self.producer.flush(30) == 0

    def start(self, per_second: int) -> None:
        def loop():
            while not self._stop.is_set():
                self.send(1)
                time.sleep(len(DEVICES) / per_second)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.producer.flush(30) == 0


def train(pipeline, tmp_path, name: str, records: int, **extra) -> dict:
    """One version from the real trainer (``train_once``, real TensorFlow, read from and published to this
    test's Kafka topics), run in the test's process: where training is not the subject, TensorFlow is
    imported once per session instead of once per version. Its metadata, as published. The trainer as a
    program is tested in tests/train and wherever its log or exit code is the subject (``train_process``)."""
    from streamtrain.trainer.train import train_once  # noqa: PLC0415 - TensorFlow only where a test trains

    settings = TrainSettings(**{**pipeline.model_dump(), "train_records": records, "epochs": 3, **extra})
    meta = train_once(settings)
    meta.pop("_model")
    return meta


def train_process(pipeline, tmp_path, name: str, records: int, **extra) -> Program:
    """`streamtrain train` as a process, its log kept in ``tmp_path/<name>.log``."""
    env = settings_env(pipeline, train_records=records, epochs=3, **extra)
    prog = Program(["train"], env, tmp_path / f"{name}.log").start()
    rc = prog.proc.wait(300)
    assert rc == 0, prog.log()[-3000:]
    return prog


def start_scorer(pipeline, tmp_path, name: str = "scorer", **extra) -> Program:
    env = settings_env(pipeline, group_id=f"scorer-{pipeline.topic_scores}", batch_size=200, **extra)
    return Program(["score"], env, tmp_path / f"{name}.log").start()


def wait_scores(pipeline, expected: set, timeout: float = 180) -> list[dict]:
    def complete(msgs):
        return expected <= {(json.loads(m.value())["device_id"], json.loads(m.value())["seq"]) for m in msgs}

    return [
        json.loads(m.value())
        for m in read_topic(pipeline.kafka_bootstrap, pipeline.topic_scores, until=complete, timeout=timeout)
    ]


@pytest.mark.e2e
def test_hot_swap_under_load_scores_every_input_once_and_switches_in_order(pipeline, tmp_path):
    stream = FeatureStream(pipeline)
    stream.send(150)  # 3,000 records for v1
    train(pipeline, tmp_path, "train-v1", records=3000)
    scorer = start_scorer(pipeline, tmp_path)
    scorer.wait_log('"new_version": 1', timeout=120)
    stream.start(per_second=400)
    deadline = time.monotonic() + 60
    while len(stream.sent) < 6000 and time.monotonic() < deadline:
        time.sleep(0.2)
    train(pipeline, tmp_path, "train-v2", records=3000)
    scorer.wait_log('"new_version": 2', timeout=120)
    time.sleep(3)  # v2 scores some of the live stream too
    stream.stop()
    expected = set(stream.sent)
    scores = wait_scores(pipeline, expected)
    assert scorer.stop() == 0, scorer.log()[-3000:]

    keys = collections.Counter((s["device_id"], s["seq"]) for s in scores)
    assert set(keys) == expected
    duplicates = {k: c for k, c in keys.items() if c > 1}
    assert not duplicates, f"{len(duplicates)} inputs scored more than once"
    assert_valid("score", scores)
    by_partition = collections.defaultdict(list)
    for s in scores:  # read_topic returns each partition in offset order
        by_partition[s["source"]["partition"]].append(s["model_version"])
    for part, versions in by_partition.items():
        switches = [(a, b) for a, b in zip(versions, versions[1:]) if a != b]
        assert switches == [(1, 2)], f"partition {part}: switches {switches}"
    assert {s["model_version"] for s in scores} == {1, 2}


@pytest.mark.e2e
def test_corrupt_model_is_refused_and_previous_version_keeps_serving(pipeline, tmp_path):
    from streamtrain.modelcodec import publish_model, read_versions

    stream = FeatureStream(pipeline, seed=5)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    # At least once here (the other tests run the default, exactly once): refusal works in both.
    scorer = start_scorer(pipeline, tmp_path, guarantee="at_least_once")
    scorer.wait_log('"new_version": 1', timeout=120)

    good = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)[-1]
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    # A well-formed envelope around an artefact that is not a model at all.
    publish_model(
        producer,
        pipeline.topic_models,
        b"this is not a keras model" * 100,
        {**good.metadata, "version": 2, "parent_version": 1},
    )
    # Garbage records that are not part of any model.
    producer.produce(pipeline.topic_models, b"\x00\xff garbage", key=b"model/garbage")
    producer.produce(pipeline.topic_models, b"{}", key=None)
    assert producer.flush(10) == 0
    scorer.wait_log('"model_refused"', timeout=60)

    stream.send(50)
    scores = wait_scores(pipeline, set(stream.sent))
    assert scorer.proc.poll() is None, "the scorer must survive a corrupt model"
    assert {s["model_version"] for s in scores} == {1}
    assert scorer.stop() == 0


@pytest.mark.e2e
def test_scorer_sigkill_and_restart_leaves_nothing_unscored(pipeline, tmp_path):
    stream = FeatureStream(pipeline, seed=9)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    scorer = start_scorer(pipeline, tmp_path, "scorer-a")
    scorer.wait_log('"new_version": 1', timeout=120)
    stream.start(per_second=400)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(read_topic(pipeline.kafka_bootstrap, pipeline.topic_scores, timeout=5)) > 3000:
            break
        time.sleep(0.5)
    scorer.kill()
    time.sleep(1)
    restarted = start_scorer(pipeline, tmp_path, "scorer-b")
    time.sleep(3)
    stream.stop()
    expected = set(stream.sent)
    scores = wait_scores(pipeline, expected)
    assert restarted.stop() == 0
    keys = collections.Counter((s["device_id"], s["seq"]) for s in scores)
    assert expected <= set(keys)
    duplicates = sum(c - 1 for c in keys.values())
    print(f"inputs={len(expected)} scores={len(scores)} re-scored after SIGKILL={duplicates}")
    # Exactly once (the default): the killed scorer's open transaction was aborted by the restart.
    assert duplicates == 0
    assert '"transactions_ready"' in restarted.log()


@pytest.mark.e2e
def test_batch_scoring_through_tf_data_matches_the_model(pipeline, tmp_path):
    from streamtrain.model import LoadedModel
    from streamtrain.modelcodec import read_versions

    stream = FeatureStream(pipeline, seed=11)
    stream.send(60)
    train(pipeline, tmp_path, "train-v1", records=1200)
    out = f"{pipeline.topic_scores}.batch"
    prog = Program(
        ["score", "--batch", "--max-records", "600", "--output-topic", out],
        settings_env(pipeline),
        tmp_path / "batch.log",
    ).start()
    assert prog.proc.wait(300) == 0, prog.log()[-3000:]
    scores = [json.loads(m.value()) for m in read_topic(pipeline.kafka_bootstrap, out, timeout=30)]
    assert len(scores) == 600
    assert_valid("score", scores)
    assert {s["scorer"] for s in scores} == {"python-batch"}
    model = LoadedModel.from_version(read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)[-1])
    by_key = {(s["device_id"], s["seq"]): s["score"] for s in scores}
    rows = [
        r
        for r in (
            json.loads(m.value()) for m in read_topic(pipeline.kafka_bootstrap, pipeline.topic_features, timeout=30)
        )
        if (r["device_id"], r["seq"]) in by_key
    ]
    x = np.asarray([[r[f] for f in model.feature_names] for r in rows], np.float32)
    expected = model.score(x)
    got = np.asarray([by_key[(r["device_id"], r["seq"])] for r in rows])
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.e2e
def test_challenger_scores_in_shadow_until_promoted(pipeline, tmp_path):
    stream = FeatureStream(pipeline, seed=13)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    scorer = start_scorer(
        pipeline,
        tmp_path,
        challenger="true",
        metrics_port=(port := __import__("streamtrain.stack.local", fromlist=["free_port"]).free_port()),
    )
    scorer.wait_log('"new_version": 1', timeout=120)
    train(pipeline, tmp_path, "train-v2", records=2000)
    scorer.wait_log('"challenger_loaded"', timeout=120)
    stream.send(30)
    first = set(stream.sent)
    wait_scores(pipeline, first)
    # Ask the running scorer to promote v2, then send more traffic.
    prog = Program(["score", "--promote", "2"], settings_env(pipeline), tmp_path / "promote.log").start()
    assert prog.proc.wait(60) == 0, prog.log()
    scorer.wait_log('"challenger_promoted"', timeout=60)
    metrics = (
        __import__("urllib.request", fromlist=["urlopen"])
        .urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        .read()
        .decode()
    )
    stream.send(30)
    scores = wait_scores(pipeline, set(stream.sent))
    assert scorer.stop() == 0
    shadow = [s for s in scores if "challenger" in s]
    assert shadow and all(s["model_version"] == 1 and s["challenger"]["model_version"] == 2 for s in shadow)
    assert_valid("score", scores)
    after = [s for s in scores if (s["device_id"], s["seq"]) not in first]
    assert after and all(s["model_version"] == 2 and "challenger" not in s for s in after[-200:])
    assert "streamtrain_scorer_challenger_agreement" in metrics
    assert "streamtrain_scorer_model_version 1.0" in metrics or "streamtrain_scorer_model_version 2.0" in metrics
