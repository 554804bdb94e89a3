"""Kafka's own ceiling, measured with Kafka's own Java perf tools (the classes behind
``kafka-producer-perf-test`` and ``kafka-consumer-perf-test``), which are not the bottleneck.

The jars come from Maven Central once (bench/java/kafka-tools-pom.xml, cached under
.streamtrain/lib/kafka-tools-<version>), like the broker's. Each run uses its own topic, the same
record (our telemetry JSON) and the same producer guarantees as our Python clients (idempotent,
acks=all), so ``python / java`` is a fair ratio.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import uuid
from pathlib import Path

from streamtrain.stack import jars
from streamtrain.stack.local import LocalStack

POM = Path(__file__).resolve().parent / "java" / "kafka-tools-pom.xml"
PRODUCER = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER = "org.apache.kafka.tools.ConsumerPerformance"


class PerfToolError(RuntimeError):
    pass


def tools_classpath(stack: LocalStack) -> str:
    version = stack.settings.kafka_version
    # An absolute pom path: jars.resolve joins it onto the stack's java folder, which keeps it as is.
    lib = jars.resolve(str(POM), "kafka.version", version, stack.lib_root / f"kafka-tools-{version}")
    return f"{lib}/*"


def _java(stack: LocalStack, main: str, *args: str) -> str:
    cmd = ["java", "-Xmx512m", "-cp", tools_classpath(stack), main, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise PerfToolError(f"{main} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def produce_rate(stack: LocalStack, topic: str, n: int, payload: bytes) -> float:
    """Records/s that Kafka's Java producer sends and gets acknowledged, flat out."""
    with tempfile.NamedTemporaryFile("wb", suffix=".txt") as f:
        f.write(payload)
        f.flush()
        out = _java(
            stack,
            PRODUCER,
            "--topic",
            topic,
            "--num-records",
            str(n),
            "--throughput",
            "-1",
            "--payload-file",
            f.name,
            "--producer-props",
            f"bootstrap.servers={stack.bootstrap}",
            "acks=all",
            "enable.idempotence=true",
            "linger.ms=5",
            "batch.size=262144",
        )
    # Last line: "N records sent, R records/sec (M MB/sec), ... ms avg latency, ..."
    m = re.search(r"(\d+) records sent, ([\d.]+) records/sec", out.strip().splitlines()[-1])
    if not m or int(m.group(1)) != n:
        raise PerfToolError(f"unexpected producer perf output: {out[-500:]}")
    return float(m.group(2))


def consume_rate(stack: LocalStack, topic: str, n: int) -> float:
    """Records/s that Kafka's Java consumer reads from the start of ``topic`` (group join included)."""
    out = _java(
        stack,
        CONSUMER,
        "--bootstrap-server",
        stack.bootstrap,
        "--topic",
        topic,
        "--messages",
        str(n),
        "--group",
        f"bench-perf-{uuid.uuid4().hex[:6]}",
        "--timeout",
        "60000",
    )
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    header = [h.strip() for h in lines[-2].split(",")]
    values = dict(zip(header, (v.strip() for v in lines[-1].split(","))))
    if int(values.get("data.consumed.in.nMsg", "0")) < n:
        raise PerfToolError(f"consumer perf read fewer than {n}: {out[-500:]}")
    return float(values["nMsg.sec"])
