"""Beyond one machine, on a 3-broker Kafka (one KRaft quorum, replication factor 3, min.insync.replicas 2):
a broker killed with SIGKILL mid-stream, and replicas of every program added and removed while a
fleet publishes. Every reading (device, seq) ends up scored exactly once in the committed scores.

Run with `make test-faults`. Small fleets and counts: three brokers and a dozen programs share two cores."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from streamtrain.kafka import client_config, ensure_topics, producer_config, read_topic
from streamtrain.lifecycle import StopFlag
from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.settings import CommonSettings, StackSettings
from streamtrain.simulator.fleet import Fleet, FleetConfig
from streamtrain.simulator.publish import run_fleet
from streamtrain.stack.local import LocalStack, free_port_range
from streamtrain.topics import pipeline_topics
from tests.conftest import REPO
from tests.faults.test_chaos import covers, distinct, wait_until
from tests.programs import STREAMTRAIN, Program, settings_env
from tests.unit.streamtrain.preprocessing.test_ksql import simulated

pytestmark = pytest.mark.faults

PARTITIONS = 6  # room for four replicas of each consumer


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = free_port_range(7)  # three client ports, three controller ports, MQTT
    stack = LocalStack(
        StackSettings(
            home=tmp_path_factory.mktemp("replicas-stack"),
            jars=REPO / ".streamtrain" / "lib",
            kafka_port=base,
            kafka_brokers=3,
            mqtt_port=base + 6,
            partitions=PARTITIONS,
        )
    )
    try:
        stack.up(create_topics=False)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def model(cluster, tmp_path_factory):
    """One model version trained by the real trainer on feature records of simulated telemetry."""
    s = topics(cluster, "seed")
    engine, producer = Engine(PreprocessSpec.default()), Producer(producer_config(s.kafka_bootstrap))
    for r in simulated(8, 100, seed=11):
        if (f := engine.process(r).features) is not None:
            producer.produce(s.topic_features, json.dumps(f).encode(), key=f["device_id"].encode())
    assert producer.flush(30) == 0
    trainer = Program(
        ["train"], settings_env(s, train_records=500, epochs=1), tmp_path_factory.mktemp("seed") / "train.log"
    ).start()
    assert trainer.proc.wait(300) == 0, trainer.log()[-3000:]
    (version,) = read_versions(s.kafka_bootstrap, s.topic_models)
    return version


def topics(cluster: LocalStack, name: str) -> CommonSettings:
    tag = f"{name}{uuid.uuid4().hex[:6]}"
    names: dict[str, Any] = {
        f"topic_{t}": f"{tag}.{t}"
        for t in ("raw", "deadletter", "features", "windows", "sequences", "models", "scores")
    }
    s = CommonSettings(kafka_bootstrap=cluster.bootstrap, mqtt_port=cluster.settings.mqtt_port, **names)
    ensure_topics(s.kafka_bootstrap, pipeline_topics(s, partitions=PARTITIONS))
    return s


class Replicas:
    """Replicas of the bridge, preprocessor and scorer: one MQTT client id, one transactional id each."""

    def __init__(self, s: CommonSettings, tmp_path, **extra) -> None:
        self.s, self.tmp, self.extra = s, tmp_path, extra
        self.procs: dict[str, Program] = {}

    def start(self, name: str, replica: int) -> Program:
        key = f"{name}-{replica}"
        env = settings_env(
            self.s,
            instance_id=key,
            client_id=f"bridge-{self.s.topic_raw}-{replica}",
            share_group=f"g-{self.s.topic_raw}",
            group_id=f"{name}-{self.s.topic_raw}",
            batch_size=100,
            **self.extra.get(name, {}),
        )
        self.procs[key] = prog = Program([name], env, self.tmp / f"{key}.log").start()
        return prog

    def stop(self, key: str) -> None:
        assert self.procs[key].stop(60) == 0, f"{key}:\n{self.procs[key].log()[-3000:]}"

    def kill_all(self) -> None:
        for prog in self.procs.values():
            if prog.proc.poll() is None:
                prog.kill()


class Publishing:
    """A fleet publishing over MQTT in a thread until stopped."""

    def __init__(self, s: CommonSettings, devices: int, rate: float, tag: str) -> None:
        self.fleet = Fleet(FleetConfig(devices=devices, seed=9, device_prefix=tag))
        self.stop_flag = StopFlag()
        self.result: dict[str, Any] = {}
        self.thread = threading.Thread(
            target=lambda: self.result.update(
                report=asyncio.run(
                    run_fleet(
                        self.fleet,
                        "127.0.0.1",
                        s.mqtt_port,
                        rate=rate,
                        count=None,
                        duration=None,
                        connections=2,
                        stop=self.stop_flag,
                        drain_timeout=120,
                    )
                )
            ),
            daemon=True,
        )
        self.thread.start()

    def stop(self) -> None:
        """Stop publishing (a test's teardown: the next test's bridges share the MQTT topics)."""
        self.stop_flag.set()
        self.thread.join(180)

    def finish(self) -> set[tuple[str, int]]:
        """Stop, and the (device, seq) of every reading published and acknowledged."""
        self.stop()
        report = self.result["report"]
        assert report.unacked_at_exit == 0, report.as_dict()
        return {(d, q) for d, last in report.per_device_last_seq.items() for q in range(last + 1)}


def count(s: CommonSettings, topic: str) -> int:
    return len(read_topic(s.kafka_bootstrap, topic, timeout=30))  # a killed broker can stall one ask for 10 s


def scores_grow(s: CommonSettings, by: int, what: str, timeout: float = 120) -> None:
    target = count(s, s.topic_scores) + by
    wait_until(lambda: count(s, s.topic_scores) >= target, what, timeout, every=1)


def check_exactly_once(s: CommonSettings, published: set) -> tuple[dict, list, list]:
    """Every published reading in raw, each scored once; returns counts and the committed scores."""
    raw_msgs = read_topic(s.kafka_bootstrap, s.topic_raw, until=covers(published), timeout=240)
    raw = distinct(raw_msgs)
    lost = published - set(raw)
    assert not lost, f"{len(lost)} readings never reached Kafka, e.g. {sorted(lost)[:5]}"
    score_msgs = read_topic(s.kafka_bootstrap, s.topic_scores, until=covers(set(raw)), timeout=240)
    scores = distinct(score_msgs)
    numbers = {
        "published": len(published),
        "raw records": sum(raw.values()),
        "raw repeats (at-least-once ingestion)": sum(c - 1 for c in raw.values()),
        "scored": len(scores),
        "missing scores": len(set(raw) - set(scores)),
        "duplicate scores": sum(c - 1 for c in scores.values()),
    }
    print("\n" + " ".join(f"{k}={v}" for k, v in numbers.items()))
    assert numbers["missing scores"] == 0 and numbers["duplicate scores"] == 0 and set(scores) == set(raw)
    return numbers, raw_msgs, score_msgs


def leaders(admin, names: list[str]) -> dict[tuple[str, int], int]:
    md = admin.list_topics(timeout=5)
    return {(t, p): part.leader for t in names if t in md.topics for p, part in md.topics[t].partitions.items()}


def test_topics_are_known_to_every_broker_when_ensure_topics_returns(cluster):
    # Each broker learns a new topic from the metadata log on its own. A DescribeConfigs sent right after
    # creation once met "unknown topic" at a broker that had not learnt it yet (the kill test, below).
    nodes = cluster.admin().list_topics(timeout=10).brokers
    assert len(nodes) == 3
    for round_ in range(5):
        s = topics(cluster, f"seen{round_}")
        for b in nodes.values():
            # A client that knows one broker sends its requests there until it learns the others.
            one = AdminClient(client_config(f"{b.host}:{b.port}"))
            (future,) = one.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, s.topic_scores)]).values()
            assert future.result(10)["min.insync.replicas"].value == "2", f"broker {b.id}, round {round_}"
            md = one.list_topics(timeout=10).topics
            assert all(md[t].error is None for t in (s.topic_raw, s.topic_scores)), f"broker {b.id}"


def test_a_broker_killed_mid_stream_loses_and_repeats_no_score(cluster, model, tmp_path):
    # `stack status` finds the three nodes from the data folder alone (no --kafka-brokers).
    status = subprocess.run(
        STREAMTRAIN
        + [
            "stack",
            "status",
            "--home",
            str(cluster.home),
            "--kafka-port",
            str(cluster.settings.kafka_port),
            "--mqtt-port",
            str(cluster.settings.mqtt_port),
        ],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    nodes = json.loads(status.stdout)["kafka"]["brokers"]
    assert [n["node"] for n in nodes if n["ready"]] == [1, 2, 3]
    s = topics(cluster, "kill")
    admin = cluster.admin()
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, s.topic_scores)])
    config = next(iter(described.values())).result()
    md = admin.list_topics(timeout=10).topics[s.topic_raw]
    assert all(len(p.replicas) == 3 for p in md.partitions.values())
    assert config["min.insync.replicas"].value == "2"
    publish_model(Producer(producer_config(s.kafka_bootstrap)), s.topic_models, model.artefact, model.metadata)
    programs, fleet, victim = Replicas(s, tmp_path), None, None
    try:
        programs.start("bridge", 1).wait_log('"mqtt_subscribed"', 90)
        programs.start("preprocess", 1)
        programs.start("score", 1).wait_log('"new_version": 1', 120)
        fleet = Publishing(s, devices=8, rate=4.0, tag=f"k{uuid.uuid4().hex[:4]}")
        scores_grow(s, 300, "scores flowing before the kill")

        # The broker leading the raw topic's first partition goes, while every program is mid-stream.
        names = [s.topic_raw, s.topic_features, s.topic_scores, "__consumer_offsets", "__transaction_state"]
        victim = leaders(admin, [s.topic_raw])[(s.topic_raw, 0)]
        led = [tp for tp, leader in leaders(admin, names).items() if leader == victim]
        node = cluster.kafka_nodes[victim - 1]
        killed_at = time.monotonic()
        cluster.stop_service(node, kill=True)
        leaderless: dict = {}
        while len(leaderless) < len(led) and time.monotonic() - killed_at < 120:
            try:
                now = leaders(admin, names)
            except Exception:  # noqa: BLE001 - a metadata request that met the dead broker; ask again
                continue
            for tp in led:
                if tp not in leaderless and now.get(tp, -1) not in (-1, victim):
                    leaderless[tp] = time.monotonic() - killed_at
            time.sleep(0.05)
        assert len(leaderless) == len(led), f"partitions without a new leader: {set(led) - set(leaderless)}"
        scores_grow(s, 200, "scores flowing with two brokers")
        down_for = time.monotonic() - killed_at
        cluster.start_kafka_node(victim)
        cluster._wait(node, lambda: cluster.kafka_node_ready(victim), 120)
        scores_grow(s, 200, "scores flowing after the restart")
        published = fleet.finish()
        numbers, _, _ = check_exactly_once(s, published)
        worst = max(leaderless.values())
        print(
            f"broker {victim} SIGKILLed, {len(led)} partitions it led; time without a leader: "
            f"max {worst:.1f} s, median {sorted(leaderless.values())[len(led) // 2]:.1f} s; "
            f"restarted after {down_for:.0f} s"
        )
        for key in list(programs.procs):
            programs.stop(key)
    finally:
        programs.kill_all()
        if fleet is not None:
            fleet.stop()
        if victim is not None and not cluster.kafka_node_ready(victim):
            # The next test needs all three nodes, whatever stopped this one.
            cluster.restart_service(cluster.kafka_nodes[victim - 1])


def test_replicas_added_and_removed_mid_stream_keep_every_score_once_and_in_order(cluster, model, tmp_path):
    s = topics(cluster, "repl")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**PreprocessSpec.default().model_dump(exclude_none=True), "sequences": {"length": 4}}))
    publish_model(Producer(producer_config(s.kafka_bootstrap)), s.topic_models, model.artefact, model.metadata)
    programs, fleet = Replicas(s, tmp_path, preprocess={"spec_path": str(spec)}), None
    try:
        for name in ("bridge", "preprocess", "score"):
            for replica in (1, 2, 3):
                programs.start(name, replica)
        for replica in (1, 2, 3):
            programs.procs[f"bridge-{replica}"].wait_log('"mqtt_subscribed"', 90)
            programs.procs[f"score-{replica}"].wait_log('"new_version": 1', 120)
        fleet = Publishing(s, devices=9, rate=3.0, tag=f"r{uuid.uuid4().hex[:4]}")
        scores_grow(s, 300, "scores flowing from three replicas")
        for name in ("bridge", "preprocess", "score"):
            programs.start(name, 4)
        programs.procs["preprocess-4"].wait_log('"state_restored"', 120)
        programs.procs["score-4"].wait_log('"new_version": 1', 120)
        scores_grow(s, 200, "scores flowing with a fourth replica")
        for name in ("bridge", "preprocess", "score"):
            programs.stop(f"{name}-1")
        scores_grow(s, 200, "scores flowing after the first replicas left")
        published = fleet.finish()
        numbers, raw_msgs, score_msgs = check_exactly_once(s, published)

        # Order: per device, scores in the order the readings reached Kafka (their first arrival).
        arrival, scored = collections.defaultdict(list), collections.defaultdict(list)
        for m in raw_msgs:
            b = json.loads(m.value())
            if b["seq"] not in arrival[b["device_id"]]:
                arrival[b["device_id"]].append(b["seq"])
        for m in score_msgs:
            b = json.loads(m.value())
            scored[b["device_id"]].append(b["seq"])
        assert scored == arrival
        inversions = sum(1 for seqs in arrival.values() for a, b in zip(seqs, seqs[1:]) if b < a)

        # State moved with the partitions: every feature record after a device's first three made one
        # sequence of exactly its last four; no window was emitted twice.
        features = collections.defaultdict(list)
        for m in read_topic(s.kafka_bootstrap, s.topic_features, timeout=60):
            f = json.loads(m.value())
            features[f["device_id"]].append([f[n] for n in PreprocessSpec.default().feature_names])
        sequences = collections.defaultdict(list)
        for m in read_topic(s.kafka_bootstrap, s.topic_sequences, timeout=60):
            q = json.loads(m.value())
            sequences[q["device_id"]].append(q["values"])
        for device, rows in features.items():
            assert sequences[device] == [rows[i - 3 : i + 1] for i in range(3, len(rows))], device
        windows = [json.loads(m.value()) for m in read_topic(s.kafka_bootstrap, s.topic_windows, timeout=60)]
        keys = collections.Counter((w["device_id"], w["window_start_ms"]) for w in windows)
        assert windows and max(keys.values()) == 1
        restored = [
            json.loads(x)
            for p in programs.procs.values()
            for x in p.log().splitlines()
            if x.startswith("{") and '"state_restored"' in x
        ]
        print(
            f"replicas 3 -> 4 -> 3 of bridge, preprocess and score; sequences={sum(map(len, sequences.values()))} "
            f"windows={len(windows)} raw seq inversions from the shared MQTT subscription={inversions} "
            f"state restores={len(restored)} (features replayed {sum(r['features'] for r in restored)})"
        )
        for key in [k for k, p in programs.procs.items() if p.proc.poll() is None]:
            programs.stop(key)
    finally:
        programs.kill_all()
        if fleet is not None:
            fleet.stop()
