"""Ingestion against the broker's own limit, measured in one run on one stack.

1. HiveMQ CE alone: QoS 1 publishes acknowledged per second, no subscriber, from the Go load generator
   (tools/loadgen) with 4 and 16 connections: the ceiling.
2. `streamtrain bridge` (Python) with 1 and 4 MQTT connections: the same load generator publishes, the
   rate is messages until the last one is in the raw topic.
3. HiveMQ with StreamTrain's extension (bridge/hivemq-extension): a PUBACK comes only once Kafka has
   the record, so the load generator's acknowledged rate is the ingestion rate; the raw topic is
   counted to prove it.

Prints one JSON line per figure and a summary with each ratio to the ceiling of the same connections.
Run: `make bench-ingest` (COUNT=... to change the messages per figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from streamtrain import logs
from streamtrain.kafka import client_config
from streamtrain.settings import StackSettings, settings_env
from streamtrain.stack import loadgen
from streamtrain.stack.local import LocalStack, free_port

REPO = Path(__file__).resolve().parents[1]


def raw_count(stack: LocalStack) -> int:
    """Records in the raw topic now (sum of end offsets)."""
    topic = stack.settings.topic_raw
    consumer = Consumer(client_config(stack.bootstrap, **{"group.id": "bench-ingest-count"}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        consumer.close()


def publish(stack: LocalStack, count: int, connections: int, prefix: str) -> dict:
    return loadgen.run(
        stack.settings.mqtt_port, connections=connections, inflight=64, devices=1000, count=count, device_prefix=prefix
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count", type=int, default=int(os.environ.get("COUNT") or 40000), help="messages per figure (default 40000)"
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
        publish(stack, 10000, 4, "warm")  # JIT warm-up of the broker
        for conns in (4, 16):
            figure(f"hivemq_alone_{conns}conn", publish(stack, args.count, conns, f"a{conns}"))
        for bridge_conns in (1, 4):
            figure(f"python_bridge_{bridge_conns}conn", through_bridge(stack, args.count, bridge_conns, home))
        stack.stop_service(stack.hivemq)
        stack.settings = stack.settings.model_copy(update={"ingest": "extension"})
        stack.start_hivemq()
        stack._wait(stack.hivemq, stack.hivemq_ready, 120)
        publish(stack, 10000, 4, "warmx")
        for conns in (4, 16):
            before = raw_count(stack)
            result = publish(stack, args.count, conns, f"x{conns}")
            result["in_raw_topic"] = raw_count(stack) - before
            figure(f"extension_{conns}conn", result)
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
        "extension_ratio": {c: round(figures[f"extension_{c}conn"]["msg_per_s"] / ceiling[c], 3) for c in (4, 16)},
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
        import shutil

        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
