"""Overload: a steady stream, then a burst at 10x that rate, far above what one bridge forwards.
MQTT back-pressure (Receive Maximum) and the broker's persistent queue absorb it: the bridge's
in-flight count and the RSS of bridge and scorer stay under the documented bounds, and once the
burst is over the backlog drains with every reading scored exactly once.

Run with `make test-faults` (CI runs it after `make test`)."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
import urllib.request
import uuid

import psutil
import pytest

from streamtrain.kafka import read_topic
from streamtrain.simulator.fleet import Fleet, FleetConfig
from streamtrain.simulator.publish import run_fleet
from streamtrain.stack.local import free_port
from tests.faults.test_chaos import wait_until
from tests.programs import Program, settings_env

pytestmark = pytest.mark.faults

#: Documented in the README (Overload): resident memory never exceeds these during the burst.
BRIDGE_RSS_MB = 250
SCORER_RSS_MB = 1200
STEADY, BURST = 100, 1000  # readings per second: 20 devices at 5/s, then 200 devices at 5/s
STEADY_COUNT, BURST_COUNT = 125, 60  # per device: steady for 25 s, the burst for 12 s


class RssSampler(threading.Thread):
    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak: collections.Counter[str] = collections.Counter()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.1)


def gauge(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.fixture
def started():
    """Programs left running by a failed test are killed, not orphaned."""
    programs: list[Program] = []
    yield programs
    for prog in programs:
        if prog.proc.poll() is None:
            prog.kill()


def test_10x_burst_memory_bounded_backlog_drains_nothing_lost(pipeline, tmp_path, started):
    ports = {n: free_port() for n in ("bridge", "preprocess", "score")}

    def start(name: str, args: list[str], **extra) -> Program:
        env = settings_env(
            pipeline,
            metrics_port=ports.get(name, 0),
            client_id=f"ov-{pipeline.topic_raw}",
            share_group=f"ov-{pipeline.topic_raw}",
            group_id=f"{name}-{pipeline.topic_raw}",
            instance_id=f"ov-{name}",
            **extra,
        )
        prog = Program(args, env, tmp_path / f"{name}.log").start()
        started.append(prog)
        return prog

    bridge = start("bridge", ["bridge"])
    bridge.wait_log('"mqtt_subscribed"', 60)
    pre = start("preprocess", ["preprocess"])
    tag = uuid.uuid4().hex[:5]
    warm = Fleet(FleetConfig(devices=20, seed=3, device_prefix=f"w{tag}"))
    asyncio.run(run_fleet(warm, "127.0.0.1", pipeline.mqtt_port, rate=0, count=60, duration=None, connections=2))
    # The trainer takes what the features topic holds when it starts: wait for the warm-up readings there
    # (a preprocessor still joining its group under load made it find none and exit 2).
    wait_until(
        lambda: len(read_topic(pipeline.kafka_bootstrap, pipeline.topic_features, timeout=5)) >= 1000,
        "the warm-up readings in the features topic",
        timeout=180,
        every=2,
    )
    trainer = Program(["train"], settings_env(pipeline, train_records=1000, epochs=2), tmp_path / "train.log").start()
    assert trainer.proc.wait(300) == 0, trainer.log()[-2000:]
    scorer = start("score", ["score"])
    scorer.wait_log('"new_version": 1', 120)

    sampler = RssSampler({"bridge": bridge.proc.pid, "scorer": scorer.proc.pid})
    sampler.start()
    steady = Fleet(FleetConfig(devices=20, seed=4, device_prefix=f"s{tag}"))
    burst = Fleet(FleetConfig(devices=200, seed=5, device_prefix=f"b{tag}"))
    inflight_peak = [0.0]

    async def scenario():
        # Steady load for the whole run; the burst (10x) for 12 s in the middle of it.
        steady_task = asyncio.create_task(
            run_fleet(
                steady,
                "127.0.0.1",
                pipeline.mqtt_port,
                rate=STEADY / 20,
                count=STEADY_COUNT,
                duration=None,
                connections=1,
            )
        )
        await asyncio.sleep(5)
        burst_report = await run_fleet(
            burst, "127.0.0.1", pipeline.mqtt_port, rate=BURST / 200, count=BURST_COUNT, duration=None, connections=4
        )
        return await steady_task, burst_report

    def watch_inflight(stop: threading.Event):
        while not stop.is_set():
            try:
                inflight_peak[0] = max(inflight_peak[0], gauge(ports["bridge"], "streamtrain_bridge_inflight"))
            except OSError:
                pass
            time.sleep(0.2)

    stop_watch = threading.Event()
    threading.Thread(target=watch_inflight, args=(stop_watch,), daemon=True).start()
    t0 = time.monotonic()
    steady_report, burst_report = asyncio.run(scenario())
    offered_s = time.monotonic() - t0
    burst_rate = burst_report.published / burst_report.seconds
    assert steady_report.unacked_at_exit == 0 and burst_report.unacked_at_exit == 0
    expected = {
        (d, q)
        for f, n in ((warm, 60), (steady, STEADY_COUNT), (burst, BURST_COUNT))
        for d in f.device_ids
        for q in range(n)
    }

    def complete(msgs):
        return expected <= {(b["device_id"], b["seq"]) for b in (json.loads(m.value()) for m in msgs)}

    scores = read_topic(pipeline.kafka_bootstrap, pipeline.topic_scores, until=complete, timeout=300)
    drained_s = time.monotonic() - t0
    stop_watch.set()
    sampler.done.set()
    keys = collections.Counter((b["device_id"], b["seq"]) for b in (json.loads(m.value()) for m in scores))
    peak_mb = {name: round(rss / 2**20) for name, rss in sampler.peak.items()}
    print(
        f"\noffered {len(expected)} readings (steady {STEADY}/s; burst {BURST}/s planned, {burst_rate:.0f}/s "
        f"reached, for {burst_report.seconds:.0f} s) in {offered_s:.0f} s, "
        f"all scored after {drained_s:.0f} s; peak RSS MB {peak_mb} (bounds bridge {BRIDGE_RSS_MB}, "
        f"scorer {SCORER_RSS_MB}); peak bridge in-flight {inflight_peak[0]:.0f}"
    )
    for prog in (bridge, pre, scorer):
        assert prog.stop() == 0, prog.log()[-2000:]
    assert set(keys) == expected
    assert sum(c - 1 for c in keys.values()) == 0
    assert inflight_peak[0] <= 1000  # MQTT Receive Maximum: the broker holds the rest
    assert peak_mb["bridge"] <= BRIDGE_RSS_MB
    assert peak_mb["scorer"] <= SCORER_RSS_MB
