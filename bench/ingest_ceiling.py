"""Ingestion against the broker's own limit, measured in one run on one stack.

1. HiveMQ CE alone: QoS 1 publishes acknowledged per second, no subscriber, from the Go load generator
   (tools/loadgen) with 4 and 16 connections: the ceiling.
2. `streamtrain bridge` (Python) with 1 and 4 MQTT connections: the same load generator publishes, the
   rate is messages until the last one is in the raw topic.
3. HiveMQ with StreamTrain's extension (bridge/hivemq-extension): a PUBACK comes only once Kafka has
   the record, so the load generator's acknowledged rate is the ingestion rate; the raw topic is
   counted to prove it.

Each HiveMQ figure is measured at steady state: the same number of messages, on the same connections,
is published first (the JVM compiles the broker's and the extension's paths while it runs; a short
cold run measures the JIT compiler, not the path). Every figure also reports the CPU time each process
spent per message (HiveMQ, Kafka, the load generator): the extension's work is HiveMQ's CPU beyond
the ceiling's, plus Kafka's. `--profile` records the extension's broker with Java Flight Recorder and
writes where its CPU time goes to bench/profiles/ingest-extension.txt.

Prints one JSON line per figure and a summary with each ratio to the ceiling of the same connections.
Run: `make bench-ingest` (COUNT=... to change the messages per figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from confluent_kafka import Consumer, TopicPartition

from streamtrain import logs
from streamtrain.kafka import client_config, watermarks
from streamtrain.settings import StackSettings, settings_env
from streamtrain.stack import loadgen
from streamtrain.stack.local import LocalStack, free_port
from streamtrain.stack.processes import java

REPO = Path(__file__).resolve().parents[1]


def raw_count(stack: LocalStack) -> int:
    """Records in the raw topic now (sum of end offsets)."""
    topic = stack.settings.topic_raw
    consumer = Consumer(client_config(stack.bootstrap, **{"group.id": "bench-ingest-count"}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(watermarks(consumer, TopicPartition(topic, p))[1] for p in parts)
    finally:
        consumer.close()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


class CpuMeter:
    """CPU time (user + system) of named processes from now on."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.before = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def spent(self) -> dict[str, float]:
        """CPU seconds of each process since the meter started."""
        return {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}

    def per_record(self, records: int) -> dict[str, float]:
        """Microseconds of CPU per record of each process since the meter started."""
        return {name: round(1e6 * sec / max(records, 1), 1) for name, sec in self.spent().items()}


def jdk_tool(name: str) -> str:
    """A tool of the JDK that runs the brokers (jcmd, jfr): on PATH, else beside its java."""
    return shutil.which(name) or str(Path(os.path.realpath(java())).parent / name)


def publish(stack: LocalStack, count: int, connections: int, prefix: str) -> dict:
    """Publish with the load generator; its summary plus the CPU microseconds per message of each process."""
    brokers = CpuMeter({"hivemq": stack.hivemq.pid(), "kafka": stack.kafka.pid()})
    children = os.times()
    result = loadgen.run(
        stack.settings.mqtt_port, connections=connections, inflight=64, devices=1000, count=count, device_prefix=prefix
    )
    after = os.times()
    spent = brokers.spent()
    spent["loadgen"] = (after.children_user - children.children_user) + (
        after.children_system - children.children_system
    )
    acked = max(result.get("acked") or 0, 1)
    result["cpu_us_per_msg"] = {name: round(1e6 * sec / acked, 1) for name, sec in spent.items()}
    return result


def steady(stack: LocalStack, count: int, connections: int, prefix: str) -> dict:
    """A figure at steady state: ``count`` messages on the same connections first, unmeasured."""
    publish(stack, count, connections, f"w{prefix}")
    return publish(stack, count, connections, prefix)


def through_bridge(stack: LocalStack, count: int, bridge_connections: int, home: Path) -> dict:
    """Load generator (4 connections) -> HiveMQ -> `streamtrain bridge` -> raw topic: msgs/s until the last is in Kafka."""
    group = f"bench-bridge-{bridge_connections}-{int(time.time())}"
    env = {
        **os.environ,
        **settings_env(
            stack.settings,
            kafka_bootstrap=stack.bootstrap,
            client_id=group,
            share_group=group,
            connections=bridge_connections,
            log_format="json",
        ),
    }
    log_file = home / f"{group}.log"
    with open(log_file, "wb") as out:
        bridge = subprocess.Popen(
            [sys.executable, "-m", "streamtrain.cli.main", "bridge"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while b'"mqtt_subscribed"' not in log_file.read_bytes():
            if bridge.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bridge did not start:\n{log_file.read_text()[-2000:]}")
            time.sleep(0.2)
        before = raw_count(stack)
        t0 = time.monotonic()
        pub = publish(stack, count, 4, f"b{bridge_connections}")
        while raw_count(stack) - before < pub["acked"]:
            if time.monotonic() - t0 > 600:
                raise RuntimeError("the bridge did not deliver every message within 600 s")
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        return {"acked": pub["acked"], "seconds": round(seconds, 3), "msg_per_s": round(pub["acked"] / seconds, 1)}
    finally:
        bridge.terminate()
        bridge.wait(60)


# Where the broker's CPU time goes, by the frames a sampled stack contains (a sample counts once in each).
PROFILE_PARTS = [
    ("HiveMQ's extension task executor (queues the interceptor calls)", "com/hivemq/extensions/executor"),
    ("our publish interceptor, all of it", "io/streamtrain/ingest/KafkaIngestInterceptor.onInboundPublish"),
    (
        "  validating the payload and writing the record (TelemetryValidator)",
        "io/streamtrain/ingest/TelemetryValidator",
    ),
    ("  KafkaProducer.send (partition, append to a batch)", "org/apache/kafka/clients/producer/KafkaProducer.doSend"),
    ("Kafka producer's network thread (compress, send, acks)", "org/apache/kafka/clients/producer/internals/Sender"),
    ("lz4 compression", "org/apache/kafka/common/compress"),
    ("holding PUBACKs until Kafka confirms (PubackGate)", "io/streamtrain/ingest/PubackGate"),
    ("HiveMQ's MQTT codec", "com/hivemq/codec"),
    ("netty event loops (sockets)", "io/netty/channel/nio/NioEventLoop"),
]


def jfr_summary(jfr_file: Path, msg_per_s: float) -> str:
    """Java Flight Recorder's execution samples of the broker, as shares by thread and by part of the path."""
    import collections
    import re

    text = subprocess.run(
        [jdk_tool("jfr"), "print", "--stack-depth", "64", "--events", "jdk.ExecutionSample", "--json", str(jfr_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    events = json.loads(text)["recording"]["events"]
    threads: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for event in events:
        values = event["values"]
        frames = [
            f["method"]["type"]["name"] + "." + f["method"]["name"]
            for f in (values.get("stackTrace") or {}).get("frames", [])
        ]
        threads[re.sub(r"-?\d+$", "", (values.get("sampledThread") or {}).get("javaName") or "?")] += 1
        for name, marker in PROFILE_PARTS:
            if any(marker in f for f in frames):
                parts[name] += 1
        if frames:
            leaves[frames[0]] += 1
    n = max(len(events), 1)
    pct = lambda c: f"{100 * c / n:5.1f}%"  # noqa: E731
    return (
        "\n".join(
            [
                f"HiveMQ CE with the StreamTrain extension, 16 connections, {msg_per_s:,.0f} msg/s while recorded "
                f"(Java Flight Recorder, settings=profile, slows it): {len(events)} execution samples of Java code",
                "",
                "by thread:",
                *(f"  {pct(c)}  {k}" for k, c in threads.most_common(6)),
                "",
                "samples whose stack contains (a sample counts in every line it matches):",
                *(f"  {pct(parts[name])}  {name}" for name, _ in PROFILE_PARTS),
                "",
                "hottest methods (self):",
                *(f"  {pct(c)}  {k}" for k, c in leaves.most_common(20)),
            ]
        )
        + "\n"
    )


def profile_extension(stack: LocalStack, count: int) -> None:
    """Record HiveMQ (with the extension, warm) under JFR while 16 connections publish; write the summary."""
    pid = str(stack.hivemq.pid())
    jcmd = jdk_tool("jcmd")
    jfr_file = stack.settings.home / "extension.jfr"
    subprocess.run(
        [jcmd, pid, "JFR.start", "name=bench", "settings=profile", f"filename={jfr_file}"],
        check=True,
        capture_output=True,
    )
    result = publish(stack, count, 16, "profile")
    subprocess.run([jcmd, pid, "JFR.stop", "name=bench"], check=True, capture_output=True)
    target = REPO / "bench" / "profiles" / "ingest-extension.txt"
    target.write_text(jfr_summary(jfr_file, result["msg_per_s"]))
    print(json.dumps({"profile": str(target), "msg_per_s_while_recorded": result["msg_per_s"]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count",
        type=int,
        default=int(os.environ.get("COUNT") or 100000),
        help="messages per figure, and as many before it to reach steady state (default 100000)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        default=bool(os.environ.get("PROFILE")),
        help="also record the extension's broker with Java Flight Recorder (16 connections) and write "
        "bench/profiles/ingest-extension.txt",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack's folder for a look at its logs")
    args = parser.parse_args()
    logs.configure("WARNING", "console")
    loadgen.build()
    home = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    settings = StackSettings(
        home=home,
        jars=REPO / ".streamtrain" / "lib",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        mqtt_port=free_port(),
        partitions=6,
    )
    stack = LocalStack(settings)
    figures: dict[str, dict] = {}

    def figure(name: str, result: dict) -> None:
        figures[name] = result
        print(json.dumps({"figure": name, **result}), flush=True)

    try:
        stack.up()
        for conns in (4, 16):
            figure(f"hivemq_alone_{conns}conn", steady(stack, args.count, conns, f"a{conns}"))
        for bridge_conns in (1, 4):
            figure(f"python_bridge_{bridge_conns}conn", through_bridge(stack, args.count, bridge_conns, home))
        stack.stop_service(stack.hivemq)
        stack.settings = stack.settings.model_copy(update={"ingest": "extension"})
        stack.start_hivemq()
        stack._wait(stack.hivemq, stack.hivemq_ready, 120)
        for conns in (4, 16):
            publish(stack, args.count, conns, f"wx{conns}")
            before = raw_count(stack)
            result = publish(stack, args.count, conns, f"x{conns}")
            result["in_raw_topic"] = raw_count(stack) - before
            figure(f"extension_{conns}conn", result)
        if args.profile:
            profile_extension(stack, args.count)
        # ack.mode=async for comparison: HiveMQ lets one async interceptor call per connection wait at a time.
        stack.stop_service(stack.hivemq)
        os.environ["STREAMTRAIN_INGEST_ACK_MODE"] = "async"
        stack.start_hivemq()
        stack._wait(stack.hivemq, stack.hivemq_ready, 120)
        for conns in (4, 16):
            figure(f"extension_async_{conns}conn", publish(stack, max(args.count // 4, 2000), conns, f"y{conns}"))
    finally:
        os.environ.pop("STREAMTRAIN_INGEST_ACK_MODE", None)
        stack.down()
    ceiling = {c: figures[f"hivemq_alone_{c}conn"]["msg_per_s"] for c in (4, 16)}
    summary = {
        "count": args.count,
        "hivemq_alone_msg_per_s": ceiling,
        "cpu_us_per_msg": {name: f["cpu_us_per_msg"] for name, f in figures.items() if "cpu_us_per_msg" in f},
        "extension_ratio": {c: round(figures[f"extension_{c}conn"]["msg_per_s"] / ceiling[c], 3) for c in (4, 16)},
        # On a machine the processes share, the ratio cannot pass CPU per message alone / with the extension.
        "extension_cpu_bound_ratio": {
            c: round(
                sum(figures[f"hivemq_alone_{c}conn"]["cpu_us_per_msg"].values())
                / max(sum(figures[f"extension_{c}conn"]["cpu_us_per_msg"].values()), 1e-9),
                3,
            )
            for c in (4, 16)
        },
        "extension_lost": {
            c: figures[f"extension_{c}conn"]["acked"] - figures[f"extension_{c}conn"]["in_raw_topic"] for c in (4, 16)
        },
        "extension_async_ratio": {
            c: round(figures[f"extension_async_{c}conn"]["msg_per_s"] / ceiling[c], 3) for c in (4, 16)
        },
        "python_bridge_ratio_vs_4conn": {
            b: round(figures[f"python_bridge_{b}conn"]["msg_per_s"] / ceiling[4], 3) for b in (1, 4)
        },
    }
    print(json.dumps({"summary": summary}), flush=True)
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
