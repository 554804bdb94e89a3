"""The windowed model live: trained from the sequences topic, scored by the real scorer process,
hot-swapped to a new version (with k-of-m smoothing) while sequences flow. Every sequence is
scored exactly once, and each partition switches from v1 to v2 exactly once."""

from __future__ import annotations

import collections
import json
import threading
import time

import pytest
from confluent_kafka import Producer

from streamtrain.kafka import producer_config, read_topic
from streamtrain.preprocessing.engine import Engine
from streamtrain.simulator.hetero import HeteroConfig, HeterogeneousFleet
from streamtrain.trainer.train import TrainSettings, train_once
from tests.fleet.stream import SEQUENCE_LENGTH, spec_with_sequences
from tests.programs import Program, settings_env


class SequenceStream:
    """Fleet readings through the preprocessing engine, sequences straight to the sequences topic."""

    def __init__(self, pipeline, devices: int = 20, seed: int = 17) -> None:
        self.pipeline = pipeline
        self.fleet = HeterogeneousFleet(
            HeteroConfig(devices=devices, seed=seed, fault_fraction=0.05, episode_readings=(15, 60))
        )
        self.engine = Engine(spec_with_sequences())
        self.producer = Producer(producer_config(pipeline.kafka_bootstrap))
        self.sent: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, steps: int) -> None:
        for _ in range(steps):
            ts = [time.time()] * self.fleet.cfg.devices
            for device_id, msg in self.fleet.messages(ts):
                for q in self.engine.process(msg).sequences:
                    self.producer.produce(self.pipeline.topic_sequences, json.dumps(q).encode(), key=device_id.encode())
                    self.sent.append((q["device_id"], q["seq"]))
            self.producer.poll(0)
        assert self.producer.flush(30) == 0

    def start(self, steps_per_second: float) -> None:
        def loop():
            while not self._stop.is_set():
                self.send(1)
                time.sleep(1 / steps_per_second)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.producer.flush(30) == 0


def scores_of(pipeline, until=None, timeout: float = 30) -> list[dict]:
    return [
        json.loads(m.value())
        for m in read_topic(pipeline.kafka_bootstrap, pipeline.topic_scores, until=until, timeout=timeout)
    ]


@pytest.mark.e2e
def test_windowed_model_trains_from_kafka_and_hot_swaps_live_scoring_every_sequence_once(pipeline, tmp_path):
    stream = SequenceStream(pipeline)
    stream.send(100)  # 20 devices x (100 - 15) sequences
    base = dict(
        kafka_bootstrap=pipeline.kafka_bootstrap,
        topic_sequences=pipeline.topic_sequences,
        topic_models=pipeline.topic_models,
        model_kind="windowed",
        baselines="device",
        epochs=3,
        cache=True,
        min_records=500,
        warmup_records=30,
    )
    v1 = train_once(TrainSettings(**base))
    assert v1["input"] == {"kind": "sequences", "length": SEQUENCE_LENGTH}
    assert v1["kafka_reads_during_fit"] >= 1 and v1["source"]["topic"] == pipeline.topic_sequences

    scorer = Program(
        ["score"],
        settings_env(pipeline, group_id=f"scorer-{pipeline.topic_scores}", batch_size=200),
        tmp_path / "scorer.log",
    ).start()
    scorer.wait_log('"new_version": 1', timeout=120)
    stream.start(steps_per_second=10)  # 200 sequences/s
    deadline = time.monotonic() + 60
    while len(stream.sent) < 3000 and time.monotonic() < deadline:
        time.sleep(0.2)
    v2 = train_once(TrainSettings(**base, train_records=1500, from_end=True, smoothing="2/3"))
    assert v2["version"] == 2 and v2["smoothing"] == {"k": 2, "m": 3}
    scorer.wait_log('"new_version": 2', timeout=120)
    scores_of(pipeline, until=lambda ms: any(json.loads(m.value())["model_version"] == 2 for m in ms), timeout=60)
    stream.stop()
    expected = set(stream.sent)

    def complete(msgs):
        return expected <= {(json.loads(m.value())["device_id"], json.loads(m.value())["seq"]) for m in msgs}

    scores = scores_of(pipeline, until=complete, timeout=180)
    assert scorer.stop() == 0, scorer.log()[-3000:]

    keys = collections.Counter((s["device_id"], s["seq"]) for s in scores)
    assert set(keys) == expected
    assert not {k: c for k, c in keys.items() if c > 1}, "a sequence was scored more than once"
    by_partition = collections.defaultdict(list)
    for s in scores:
        by_partition[s["source"]["partition"]].append(s["model_version"])
    for part, versions in by_partition.items():
        switches = [(a, b) for a, b in zip(versions, versions[1:]) if a != b]
        assert switches == [(1, 2)], f"partition {part}: switches {switches}"
    assert {s["baseline"] for s in scores} == {"device"}
    assert '"scoring_topic"' in scorer.log() and pipeline.topic_sequences in scorer.log()
