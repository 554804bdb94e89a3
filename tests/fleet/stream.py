"""A heterogeneous fleet stream on real Kafka for the fleet tests: raw telemetry produced to the
raw topic (the bridge is covered by tests/ingest), the real preprocessor builds features and
per-device sequences, trainers and scorers run in-process on top."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from confluent_kafka import KafkaException, Producer

from streamtrain.kafka import ensure_topics, producer_config, read_topic, watermarks
from streamtrain.lifecycle import StopFlag
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.preprocessor.app import Preprocessor, PreprocessSettings
from streamtrain.scorer.app import Scorer, ScoreSettings
from streamtrain.settings import CommonSettings
from streamtrain.simulator.hetero import HeteroConfig, HeterogeneousFleet
from streamtrain.topics import pipeline_topics

SEQUENCE_LENGTH = 16


def fleet_settings(bootstrap: str, tag: str | None = None) -> CommonSettings:
    tag = tag or uuid.uuid4().hex[:8]
    topics: dict[str, Any] = {
        f"topic_{t}": f"f{tag}.{t}"
        for t in ("raw", "deadletter", "features", "windows", "sequences", "models", "scores")
    }
    s = CommonSettings(kafka_bootstrap=bootstrap, **topics)
    ensure_topics(bootstrap, pipeline_topics(s, partitions=3))
    return s


def spec_with_sequences() -> PreprocessSpec:
    data = PreprocessSpec.default().model_dump(exclude_none=True)
    data["sequences"] = {"length": SEQUENCE_LENGTH}
    return PreprocessSpec.model_validate(data)


def count(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fleet-test-count"})
    try:
        total = 0
        for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
            low, high = watermarks(c, TopicPartition(topic, p))
            total += high - low
        return total
    finally:
        c.close()


def wait_until(what: str, check, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    detail = None
    while time.monotonic() < deadline:
        try:
            ok, detail = check()
        except KafkaException as exc:  # e.g. a leader not elected yet for a topic just created
            ok, detail = False, str(exc)
        if ok:
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} not reached within {timeout}s ({detail})")


class FleetFeed:
    """Produces a heterogeneous fleet's readings, step by step, to the raw topic (keyed by device)."""

    def __init__(self, s: CommonSettings, cfg: HeteroConfig) -> None:
        self.s = s
        self.fleet = HeterogeneousFleet(cfg)
        self.producer = Producer(producer_config(s.kafka_bootstrap))
        self.produced = 0
        self.t0 = time.time() - 3600  # recent: the stream topics keep 72 h by record timestamp

    def steps(self, n: int, extra: list[tuple[str, HeterogeneousFleet]] | None = None) -> None:
        """n more readings of every device (and of the ``extra`` fleets, e.g. devices that join late)."""
        for _ in range(n):
            for fleet in [self.fleet] + [f for _, f in (extra or [])]:
                ts = [self.t0 + fleet.seq] * fleet.cfg.devices
                for device_id, msg in fleet.messages(ts):
                    self.producer.produce(self.s.topic_raw, json.dumps(msg).encode(), key=device_id.encode())
                    self.produced += 1
                self.producer.poll(0)
        assert self.producer.flush(30) == 0


class InProcess:
    """A StreamTrain program's loop in a thread of the test, stopped like SIGTERM would."""

    def __init__(self, program) -> None:
        self.program = program
        self.stop_flag = program.stop
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.rc = self.program.run()

    def start(self) -> "InProcess":
        self.thread.start()
        return self

    def stop(self) -> int | None:
        self.stop_flag.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "program did not stop"
        return self.rc


def preprocessor(s: CommonSettings) -> InProcess:
    ps = PreprocessSettings(**s.model_dump(), group_id=f"pre-{s.topic_raw}")
    return InProcess(Preprocessor(ps, spec_with_sequences(), StopFlag())).start()


def score_all(
    s: CommonSettings, topic_models: str, topic_scores: str, expected: int, timeout: float = 180.0
) -> list[dict]:
    """Run the live scorer on one models topic until every input of ``input_topic`` is scored."""
    ensure_topics(
        s.kafka_bootstrap,
        [
            t
            for t in pipeline_topics(
                s.model_copy(update={"topic_models": topic_models, "topic_scores": topic_scores}), partitions=3
            )
            if t.name in (topic_models, topic_scores)
        ],
    )
    ss = ScoreSettings(
        **{**s.model_dump(), "topic_models": topic_models, "topic_scores": topic_scores},
        group_id=f"score-{topic_scores}",
        batch_size=500,
        instance_id="fleet-test",
    )
    prog = InProcess(Scorer(ss, StopFlag())).start()
    try:
        wait_until(
            f"{expected} scores on {topic_scores}",
            lambda: ((n := count(s.kafka_bootstrap, topic_scores)) >= expected, f"{n}/{expected}"),
            timeout,
        )
    finally:
        assert prog.stop() == 0
    return [json.loads(m.value()) for m in read_topic(s.kafka_bootstrap, topic_scores, timeout=60)]
