"""Chaos on the whole pipeline, on its own Kafka + HiveMQ (free ports): while a fleet publishes,
the bridge, preprocessor, scorer and trainer are killed with SIGKILL and restarted, then Kafka
and HiveMQ are restarted. At the end every reading (device, seq) is scored exactly once in the
committed scores, and the health endpoints said "not ready" while a broker was down.

Run with `make test-faults` (CI runs it after `make test`)."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from streamtrain.kafka import ensure_topics, read_topic
from streamtrain.lifecycle import StopFlag
from streamtrain.settings import CommonSettings, StackSettings
from streamtrain.simulator.fleet import Fleet, FleetConfig
from streamtrain.simulator.publish import run_fleet
from streamtrain.stack.local import LocalStack, free_port
from streamtrain.topics import pipeline_topics
from tests.conftest import REPO
from tests.programs import Program, settings_env

pytestmark = pytest.mark.faults

DEVICES, RATE = 20, 4.0  # 80 readings/s


@pytest.fixture
def own_stack(tmp_path_factory):
    stack = LocalStack(
        StackSettings(
            home=tmp_path_factory.mktemp("chaos-stack"),
            jars=REPO / ".streamtrain" / "lib",
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
            mqtt_port=free_port(),
            partitions=3,
        )
    )
    try:
        stack.up(create_topics=False)
        yield stack
    finally:
        stack.down()


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10).status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_until(cond, what: str, timeout: float = 90.0, every: float = 0.2) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(every)
    return time.monotonic() - t0


def distinct(messages) -> collections.Counter:
    return collections.Counter((b["device_id"], b["seq"]) for b in (json.loads(m.value()) for m in messages))


def covers(expected: set):
    """``until`` for read_topic: true once the messages read so far hold every (device, seq) expected."""
    seen: set = set()
    done = [0]

    def until(msgs) -> bool:
        for m in msgs[done[0] :]:
            b = json.loads(m.value())
            seen.add((b["device_id"], b["seq"]))
        done[0] = len(msgs)
        return expected <= seen

    return until


class Pipeline:
    def __init__(self, s: CommonSettings, tmp_path) -> None:
        self.s, self.tmp = s, tmp_path
        self.ports = {name: free_port() for name in ("bridge", "preprocess", "score")}
        self.procs: dict[str, Program] = {}
        self.starts: collections.Counter[str] = collections.Counter()

    def start(self, name: str, **extra) -> Program:
        self.starts[name] += 1
        args = {"bridge": ["bridge"], "preprocess": ["preprocess"], "score": ["score"]}[name]
        env = settings_env(
            self.s,
            metrics_port=self.ports[name],
            instance_id=f"chaos-{name}",
            client_id=f"chaos-bridge-{self.s.topic_raw}",
            share_group=f"g-{self.s.topic_raw}",
            group_id=f"{name}-{self.s.topic_raw}",
            batch_size=200,
            **extra,
        )
        prog = Program(args, env, self.tmp / f"{name}-{self.starts[name]}.log").start()
        self.procs[name] = prog
        return prog

    def kill_and_restart(self, name: str) -> Program:
        self.procs[name].kill()
        prog = self.start(name)
        wait_until(lambda: ready(self.ports[name]), f"{name} ready after restart", 120)
        return prog

    def train(self, n: int, records: int) -> Program:
        env = settings_env(self.s, train_records=records, epochs=2, from_end="true")
        return Program(["train"], env, self.tmp / f"train-{n}.log").start()


@pytest.fixture
def cleanup():
    """Programs left running by a failed test are killed, not orphaned."""
    programs: list = []
    yield programs
    for group in programs:
        for prog in list(group.values()) if isinstance(group, dict) else group:
            if prog.proc.poll() is None:
                prog.kill()


def test_kill_everything_and_restart_both_brokers_every_reading_scored_exactly_once(own_stack, tmp_path, cleanup):
    tag = uuid.uuid4().hex[:6]
    s = CommonSettings(
        kafka_bootstrap=own_stack.bootstrap,
        mqtt_port=own_stack.settings.mqtt_port,
        **{f"topic_{t}": f"chaos{tag}.{t}" for t in ("raw", "deadletter", "features", "windows", "models", "scores")},
    )
    ensure_topics(s.kafka_bootstrap, pipeline_topics(s, partitions=3))
    p = Pipeline(s, tmp_path)
    cleanup.append(p.procs)
    table: list[tuple[str, str]] = []
    p.start("bridge").wait_log('"mqtt_subscribed"', 60)
    p.start("preprocess")

    fleet = Fleet(FleetConfig(devices=DEVICES, seed=5, device_prefix=f"c{tag}"))
    stop = StopFlag()
    result = {}

    def publish():
        result["report"] = asyncio.run(
            run_fleet(
                fleet,
                "127.0.0.1",
                s.mqtt_port,
                rate=RATE,
                count=None,
                duration=None,
                connections=2,
                stop=stop,
                drain_timeout=120,
            )
        )

    fleet_thread = threading.Thread(target=publish, daemon=True)
    fleet_thread.start()

    def features() -> int:
        return len(read_topic(s.kafka_bootstrap, s.topic_features, timeout=10))

    wait_until(lambda: features() >= 1200, "1,200 feature records", 120, every=1)
    assert p.train(1, 1200).proc.wait(300) == 0
    scorer = p.start("score")
    scorer.wait_log('"new_version": 1', 120)
    wait_until(lambda: len(read_topic(s.kafka_bootstrap, s.topic_scores, timeout=10)) > 500, "scores flowing", 60)

    for name in ("bridge", "preprocess", "score"):
        time.sleep(2)  # traffic flows between faults
        p.kill_and_restart(name)
        table.append((f"SIGKILL {name}", "restarted at once; ready again"))

    trainer = p.train(2, 1500)
    trainer.wait_log('"training_range"', 120)
    time.sleep(1.5)
    trainer.kill()
    killed_in = "publishing" if '"model_published"' in trainer.log() else "training"
    assert p.train(3, 1500).proc.wait(300) == 0
    p.procs["score"].wait_log('"new_version": 2', 120)
    table.append(("SIGKILL trainer", f"killed while {killed_in}; rerun published v2, scorer switched to it"))

    # Kafka down: every program says not ready, then recovers on its own.
    own_stack.stop_service(own_stack.kafka)
    for n in p.ports:
        wait_until(lambda n=n: not ready(p.ports[n]), f"{n} not ready while Kafka is down", 60)
    time.sleep(3)
    own_stack.start_kafka()
    own_stack._wait(own_stack.kafka, own_stack.kafka_ready, 120)
    back = {
        n: round(wait_until(lambda n=n: ready(p.ports[n]), f"{n} ready after Kafka restart", 120), 1) for n in p.ports
    }
    table.append(("Kafka stopped (SIGTERM) and restarted", f"all not ready while down; ready again after {back} s"))

    own_stack.stop_service(own_stack.hivemq)
    wait_until(lambda: not ready(p.ports["bridge"]), "bridge not ready while HiveMQ is down", 60)
    time.sleep(3)
    own_stack.start_hivemq()
    own_stack._wait(own_stack.hivemq, own_stack.hivemq_ready, 120)
    t = wait_until(lambda: ready(p.ports["bridge"]), "bridge ready after HiveMQ restart", 120)
    table.append(
        (
            "HiveMQ stopped (SIGTERM) and restarted",
            f"bridge not ready while down, reconnected in {t:.1f} s; devices resent unacknowledged messages",
        )
    )

    time.sleep(3)
    stop.set()
    fleet_thread.join(180)
    report = result["report"]
    assert report.unacked_at_exit == 0, report.as_dict()

    complete_rounds = {
        (d, q) for d in fleet.device_ids for q in range(report.per_device_last_seq[fleet.device_ids[0]] + 1)
    }
    raw = distinct(read_topic(s.kafka_bootstrap, s.topic_raw, until=covers(complete_rounds), timeout=240))
    lost = complete_rounds - set(raw)
    assert not lost, f"{len(lost)} readings never reached Kafka, e.g. {sorted(lost)[:5]} ... {sorted(lost)[-5:]}"
    expected = set(raw)
    scores = distinct(read_topic(s.kafka_bootstrap, s.topic_scores, until=covers(expected), timeout=240))
    missing = expected - set(scores)
    duplicates = sum(c - 1 for c in scores.values())
    raw_repeats = sum(c - 1 for c in raw.values())
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{p.ports['preprocess']}/metrics", timeout=5).read().decode()
    dropped = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("streamtrain_preprocess_duplicates_total")
    )
    print(
        f"\npublished={report.published} readings={len(expected)} raw records={sum(raw.values())} "
        f"(repeats from at-least-once ingestion={raw_repeats}) scored={len(scores)} missing={len(missing)} "
        f"duplicate scores={duplicates} repeats dropped by the current preprocessor={dropped:.0f}"
    )
    print("| fault | what happened | messages lost | duplicate scores |")
    for fault, what in table:
        print(f"| {fault} | {what} | 0 | 0 |")
    for name, prog in p.procs.items():
        assert prog.stop() == 0, f"{name}:\n{prog.log()[-2000:]}"
    assert not missing
    assert set(scores) == expected
    assert duplicates == 0
