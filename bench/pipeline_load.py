"""The whole pipeline under load: load generator -> HiveMQ -> ingestion -> preprocess -> score.

Offered rates rise (devices at 1 Hz each: 1,000 devices for 1,000 readings/s, ...); each rate runs for
a while and reports, per rate: what each stage sustained (raw, features, scores), device->score
latency p50/p99, CPU (cores) and peak RSS of every program and broker, and every acknowledged
reading that did not come out scored or dead-lettered (must be 0). Figures go into the bench table
and bench/results/load.json (docs/capacity.md is computed from it).

``python -m bench.pipeline_load [--quick] [--rates 1000,2500] [--seconds 60] [--ingest bridge|extension]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.quality import Program
from streamtrain.kafka import client_config, read_topic
from streamtrain.settings import CommonSettings, settings_env

REPO = Path(__file__).resolve().parents[1]
LOADGEN = REPO / ".streamtrain" / "bin" / "loadgen"
#: Readings used to train the model the scorer runs (published before the measured rates).
WARMUP = 20_000
#: A phase's readings all have seq >= phase * SEQ_BLOCK, so phases never reuse a (device, seq).
SEQ_BLOCK = 10_000_000


def loadgen() -> Path:
    """The Go load generator (tools/loadgen), built when missing (seconds with a warm Go cache)."""
    if not LOADGEN.exists():
        LOADGEN.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["go", "build", "-trimpath", "-o", str(LOADGEN), "."], cwd=REPO / "tools" / "loadgen", check=True
        )
    return LOADGEN


@dataclass
class Usage:
    """CPU seconds and peak RSS of one process over a phase."""

    cpu_start: float = 0.0
    cpu_end: float = 0.0
    rss_peak: int = 0


@dataclass
class Sampler:
    """Samples CPU and RSS of named processes once a second on its own thread."""

    procs: dict[str, psutil.Process]
    usage: dict[str, Usage] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> "Sampler":
        self.started = time.monotonic()
        self.usage = {n: Usage(cpu_start=self._cpu(p)) for n, p in self.procs.items()}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def _sample(self) -> None:
        for n, p in self.procs.items():
            try:
                u = self.usage[n]
                u.cpu_end = self._cpu(p)
                u.rss_peak = max(u.rss_peak, p.memory_info().rss)
            except psutil.Error:
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        self.seconds = time.monotonic() - self.started

    def report(self) -> dict[str, dict]:
        return {
            n: {
                "cores": round((u.cpu_end - u.cpu_start) / self.seconds, 3),
                "cpu_s": round(u.cpu_end - u.cpu_start, 3),
                "rss_mb": round(u.rss_peak / 2**20, 1),
            }
            for n, u in self.usage.items()
        }


def broker_processes(home: Path) -> dict[str, psutil.Process]:
    """The stack's JVMs (Kafka, HiveMQ), found by their command line under the stack's home."""
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(home) not in cmd or "java" not in cmd:
            continue
        name = "kafka" if "kafka.Kafka" in cmd else "hivemq" if "hivemq" in cmd.lower() else None
        if name:
            found[name if name not in found else f"{name}-{len(found)}"] = p
    return found


def run_loadgen(
    s: CommonSettings,
    *,
    rate: float,
    devices: int,
    prefix: str,
    seq_start: int,
    count: int | None = None,
    seconds: float | None = None,
    acked: Path | None = None,
) -> dict:
    cmd = [
        str(loadgen()),
        "--port",
        str(s.mqtt_port),
        "--connections",
        "8",
        "--inflight",
        "64",
        "--devices",
        str(devices),
        "--device-prefix",
        prefix,
        "--rate",
        str(rate),
        "--seq-start",
        str(seq_start),
        "--client-prefix",
        f"load-{uuid.uuid4().hex[:5]}",
    ]
    cmd += ["--count", str(count)] if count else ["--duration", f"{seconds}s"]
    if acked:
        cmd += ["--acked-out", str(acked)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: some publishes unacknowledged (counted, not fatal)
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Tail:
    """Follows one topic from its beginning (no group, read_committed) and keeps the records of the
    current phase's devices: (record, broker append time in s)."""

    def __init__(self, s: CommonSettings, topic: str) -> None:
        self.consumer = Consumer(
            client_config(
                s.kafka_bootstrap,
                **{
                    "group.id": f"bench-tail-{uuid.uuid4().hex[:6]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                },
            )
        )
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.prefix, self.records = "\0", []

    def start_phase(self, prefix: str) -> None:
        self.poll(idle=1.0)  # what came before the phase is not counted
        self.prefix, self.records = prefix, []

    def poll(self, idle: float = 0.5) -> int:
        while True:
            batch = self.consumer.consume(5000, idle)
            for m in batch:
                if m.error() or self.prefix.encode() not in m.value()[:64]:
                    continue
                try:
                    body = json.loads(m.value())
                except ValueError:  # a dead letter's unreadable payload: not one of the phase's readings
                    continue
                if isinstance(body, dict) and str(body.get("device_id", "")).startswith(self.prefix):
                    self.records.append((body, m.timestamp()[1] / 1000))
            if not batch:
                return len(self.records)

    def close(self) -> None:
        self.consumer.close()


def _rate(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (max(stamps) - min(stamps)) if len(stamps) > 1 and max(stamps) > min(stamps) else 0.0


def _wait_scored(scores: Tail, expected: int, patience: float) -> None:
    """Until every acknowledged reading of the phase is scored, or nothing moved for ``patience`` s."""
    seen, moved = -1, time.monotonic()
    while time.monotonic() - moved < patience:
        n = scores.poll()
        if n >= expected:
            return
        if n != seen:
            seen, moved = n, time.monotonic()


def measure_rate(
    bench, s: CommonSettings, procs: dict, tails: dict[str, Tail], rate: int, seconds: float, phase: int
) -> dict:
    prefix, seq_from = f"L{phase}x{uuid.uuid4().hex[:4]}", phase * SEQ_BLOCK
    acked_path = bench.stack.home / f"acked-{phase}.tsv"
    for t in tails.values():
        t.start_phase(prefix)
    with Sampler(procs) as sampler:
        summary = run_loadgen(
            s, rate=rate, devices=rate, prefix=prefix, seq_start=seq_from, seconds=seconds, acked=acked_path
        )
        _wait_scored(tails["scores"], summary["acked"], patience=30)
    for t in tails.values():
        t.poll()
    acked = {(d, int(q)) for d, q in (ln.split("\t") for ln in acked_path.read_text().splitlines() if ln)}
    dead = {(b.get("device_id"), b.get("seq")) for b, _ in tails["deadletter"].records}
    scored = [b for b, _ in tails["scores"].records]
    keys = [(b["device_id"], b["seq"]) for b in scored]
    latency = sorted((b["scored_at"] - b["ts"]) * 1000 for b in scored)
    return {
        "offered": rate,
        "seconds": seconds,
        "devices": rate,
        "loadgen": summary,
        "raw_per_s": round(_rate([t for _, t in tails["raw"].records]), 1),
        "features_per_s": round(_rate([t for _, t in tails["features"].records]), 1),
        "scores_per_s": round(_rate([b["scored_at"] for b in scored]), 1),
        "scored": len(keys),
        "duplicate_scores": len(keys) - len(set(keys)),
        "lost": len(acked - set(keys) - dead),
        "deadlettered": len(dead),
        "latency_p50_ms": round(statistics.median(latency), 1) if latency else None,
        "latency_p99_ms": round(latency[max(0, int(len(latency) * 0.99) - 1)], 1) if latency else None,
        "programs": sampler.report(),
    }


def cpu_per_reading(r: dict) -> dict[str, float]:
    """CPU microseconds each sampled process (programs and brokers) spent per reading scored in the phase,
    and their sum from MQTT to score (``pipeline``): the cost a fleet plan scales from."""
    n = r["scored"]
    if not n:
        return {}
    out = {name: round(u["cpu_s"] / n * 1e6, 1) for name, u in r["programs"].items()}
    out["pipeline"] = round(sum(out.values()), 1)
    return out


def add_figures(bench, r: dict) -> None:
    rate, n = r["offered"], r["scored"]
    note = (
        f"lost={r['lost']} dup={r['duplicate_scores']} raw {r['raw_per_s']:.0f}/s features {r['features_per_s']:.0f}/s"
    )
    bench.add(
        bench.Figure(f"pipeline @{rate}/s: scored", n, "scores", r["scores_per_s"], "offered", rate, "rec/s", note)
    )
    for q in ("p50", "p99"):
        if r[f"latency_{q}_ms"] is not None:
            bench.add(
                bench.Figure(f"pipeline @{rate}/s: device->score {q}", n, "latency", r[f"latency_{q}_ms"], "", 0, "ms")
            )
    per_reading = r.get("cpu_us_per_reading") or cpu_per_reading(r)
    hivemq = per_reading.get("hivemq", 0.0)
    for name, us in per_reading.items():
        # Beside HiveMQ alone: what each program (and the whole path) costs per reading relative to the broker.
        bench.add(
            bench.Figure(f"pipeline @{rate}/s: {name} CPU per reading", n, "us/reading", us, "hivemq", hivemq, "us")
        )
    for name, u in r["programs"].items():
        bench.add(
            bench.Figure(
                f"pipeline @{rate}/s: {name} CPU",
                n,
                "cpu",
                100 * u["cores"],
                "",
                0,
                "% core",
                f"peak RSS {u['rss_mb']:.0f} MB",
            )
        )


@contextlib.contextmanager
def pipeline(bench, ingest: str = "bridge", group: str = "load") -> Iterator[tuple[CommonSettings, list[Program]]]:
    """The programs on the bench's stack (ingestion, preprocessor, scorer) with a model trained on WARMUP
    readings serving; yields the settings and the programs (stopped with SIGTERM at the end)."""
    from streamtrain.trainer.train import TrainSettings, train_once

    s = bench.settings()
    logdir = bench.stack.home / f"{group}-logs"
    logdir.mkdir(exist_ok=True)
    programs = []
    if ingest == "extension":
        # HiveMQ writes to Kafka itself: the extension is installed with this run's topics and the broker
        # restarted to load it.
        stack = bench.stack
        stack.settings = stack.settings.model_copy(
            update={"ingest": "extension", "topic_raw": s.topic_raw, "topic_deadletter": s.topic_deadletter}
        )
        stack.restart_service(stack.hivemq)
    else:
        bridge = Program(
            "bridge",
            ["bridge"],
            settings_env(s, log_format="json", share_group=group, client_id=group, connections=4),
            logdir,
        )
        programs.append(bridge)
        bridge.wait_log('"mqtt_subscribed"')
    env = settings_env(s, log_format="json", group_id=f"{group}-pre")
    preprocess = Program("preprocess", ["preprocess"], env, logdir)
    programs.append(preprocess)
    try:
        run_loadgen(s, rate=2000, devices=500, prefix="warm", seq_start=0, count=WARMUP)
        _wait_features = time.monotonic() + 300
        while len(read_topic(s.kafka_bootstrap, s.topic_features, timeout=30)) < WARMUP:
            if time.monotonic() > _wait_features:
                raise RuntimeError("warm-up readings did not reach the features topic")
            time.sleep(2)
        train_once(
            TrainSettings(
                kafka_bootstrap=s.kafka_bootstrap,
                topic_features=s.topic_features,
                topic_models=s.topic_models,
                train_records=WARMUP,
                epochs=2,
            )
        )
        env = settings_env(s, log_format="json", group_id=f"{group}-score")
        scorer = Program("scorer", ["score"], env, logdir)
        programs.append(scorer)
        scorer.wait_log('"champion_switched"')
        yield s, programs
    finally:
        for p in reversed(programs):
            p.stop()


def program_processes(bench, programs: list[Program]) -> dict[str, psutil.Process]:
    """Every program and broker of the run, by name, for the samplers."""
    return {p.name: psutil.Process(p.proc.pid) for p in programs} | broker_processes(bench.stack.home)


def run(bench, rates: list[int], seconds: float, ingest: str = "bridge") -> list[dict]:
    with pipeline(bench, ingest) as (s, programs):
        procs = program_processes(bench, programs)
        tails = {t: Tail(s, getattr(s, f"topic_{t}")) for t in ("raw", "features", "scores", "deadletter")}
        results = []
        for phase, rate in enumerate(rates, start=1):
            r = measure_rate(bench, s, procs, tails, rate, seconds, phase)
            r["cpu_us_per_reading"] = cpu_per_reading(r)
            add_figures(bench, r)
            results.append(r)
        for t in tails.values():
            t.close()
        return results


def main() -> None:
    from bench.run import Bench
    from streamtrain import logs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", default=os.environ.get("QUICK") == "1")
    ap.add_argument("--rates", help="offered readings/s, comma-separated (default 1000,2500,5000,10000)")
    ap.add_argument("--seconds", type=float, help="seconds per rate (default 120; quick 15)")
    ap.add_argument(
        "--ingest",
        default="bridge",
        choices=["bridge", "extension"],
        help="ingestion under test: the bridge (4 connections, shared subscription) or the HiveMQ extension",
    )
    args = ap.parse_args()
    rates = (
        [int(r) for r in args.rates.split(",")]
        if args.rates
        else [1000, 2500]
        if args.quick
        else [1000, 2500, 5000, 10_000]
    )
    seconds = args.seconds or (15 if args.quick else 120)
    logs.configure("WARNING", "console")
    bench = Bench(args.quick)
    print(
        f"pipeline under load on {platform.node()}: {os.cpu_count()} cores; rates {rates}, {seconds:.0f} s each",
        flush=True,
    )
    bench.stack.up(create_topics=False)
    try:
        results = run(bench, rates, seconds, args.ingest)
    finally:
        bench.stack.down()
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    result = out / ("load.json" if args.ingest == "bridge" else f"load-{args.ingest}.json")
    result.write_text(
        json.dumps(
            {
                "machine": {"node": platform.node(), "cores": os.cpu_count()},
                "ingest": args.ingest,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "rates": results,
            },
            indent=2,
        )
    )
    print(f"wrote {result}")


if __name__ == "__main__":
    main()
