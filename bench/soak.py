"""An hour under load: the whole pipeline at a steady rate while a model is retrained and rolled to the running
scorer every few minutes (issue 28's soak; not in CI).

The Go load generator offers RATE readings/s (devices at 1 Hz each) for MINUTES; every RETRAIN minutes
`streamtrain train` runs as its own process on the newest features and publishes a version, which the running
scorer picks up. Each minute: readings scored per second, device->score latency p50/p99, the preprocessor's and
the scorer's consumer lag, RSS of every program and broker. At the end: every acknowledged reading scored
exactly once (lost and duplicate counts), RSS at start (after warm-up), peak and end per program, the versions
the scorer switched to. Printed as a table; written to bench/results/soak.json and bench/results/soak.png.

``python -m bench.soak [--rate 5000] [--minutes 60] [--retrain 10] [--ingest extension|bridge]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.pipeline_load import REPO, SEQ_BLOCK, loadgen, pipeline, program_processes
from bench.quality import Program
from streamtrain.kafka import client_config
from streamtrain.settings import CommonSettings, settings_env

#: Readings each retraining takes: the newest features (`--from-end`).
TRAIN_RECORDS = 20_000


@dataclass
class Minute:
    """What one minute of the run saw."""

    scored: int = 0
    latency_ms: list[float] = field(default_factory=list)


class ScoreFollower(threading.Thread):
    """Reads the scores topic (read_committed, no group) on its own thread: per-minute counts and latency, and
    a bit per (device, seq) of the run's devices to count duplicates and, at the end, the acknowledged readings
    never scored. Memory stays flat: a bit per reading, not a record."""

    def __init__(
        self, s: CommonSettings, prefix: str, devices: int, seq_from: int, seconds: float, started: float
    ) -> None:
        super().__init__(daemon=True)
        self.prefix, self.seq_from, self.started = f"{prefix}-", seq_from, started
        self.per_device = int(seconds * 1.2) + 64  # readings a 1 Hz device sends in the run, with slack
        self.seen = [bytearray((self.per_device + 7) // 8) for _ in range(devices)]
        self.minutes: dict[int, Minute] = {}
        self.scored = self.duplicates = self.foreign = 0
        self._done = threading.Event()
        self.consumer = Consumer(
            client_config(
                s.kafka_bootstrap,
                **{
                    "group.id": f"soak-tail-{uuid.uuid4().hex[:6]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                },
            )
        )
        parts = self.consumer.list_topics(s.topic_scores, timeout=10).topics[s.topic_scores].partitions
        self.consumer.assign([TopicPartition(s.topic_scores, p, OFFSET_BEGINNING) for p in parts])

    def bit(self, device_id: str, seq: int) -> tuple[bytearray, int] | None:
        """The bitmap and bit index of one of the run's readings, None for anything else."""
        if not device_id.startswith(self.prefix):
            return None
        index, offset = int(device_id[len(self.prefix) :]), seq - self.seq_from
        if not 0 <= index < len(self.seen) or not 0 <= offset < self.per_device:
            return None
        return self.seen[index], offset

    def run(self) -> None:
        while not self._done.is_set():
            for m in self.consumer.consume(5000, 0.5):
                if m.error() or self.prefix.encode() not in m.value()[:80]:
                    continue
                body = json.loads(m.value())
                where = self.bit(str(body.get("device_id", "")), int(body.get("seq", -1)))
                if where is None:
                    self.foreign += 1
                    continue
                bits, i = where
                if bits[i >> 3] & (1 << (i & 7)):
                    self.duplicates += 1
                    continue
                bits[i >> 3] |= 1 << (i & 7)
                self.scored += 1
                minute = self.minutes.setdefault(int((body["scored_at"] - self.started) // 60), Minute())
                minute.scored += 1
                minute.latency_ms.append((body["scored_at"] - body["ts"]) * 1000)

    def scored_bit(self, device_id: str, seq: int) -> bool:
        where = self.bit(device_id, seq)
        return where is not None and bool(where[0][where[1] >> 3] & (1 << (where[1] & 7)))

    def stop(self) -> None:
        self._done.set()
        self.join(10)
        self.consumer.close()


def lag(s: CommonSettings, group: str, topic: str) -> int:
    """Records of ``topic`` the consumer group has not committed yet (committed offsets only: no join). On a
    topic written in transactions (features) a caught-up group still shows one commit marker per partition."""
    c = Consumer(client_config(s.kafka_bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        committed = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        total = 0
        for tp in committed:
            low, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            total += high - (tp.offset if tp.offset >= 0 else low)
        return total
    finally:
        c.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, int(len(ordered) * q) - 1)], 1)


def retrain(s: CommonSettings, logdir: Path, n: int) -> dict:
    """One `streamtrain train` on the newest features, as its own process (a trainer Job does the same)."""
    env = settings_env(s, log_format="json", train_records=TRAIN_RECORDS, from_end=True, epochs=2)
    started = time.monotonic()
    trainer = Program(f"trainer-{n}", ["train"], env, logdir)
    code = trainer.proc.wait()
    return {"run": n, "exit": code, "seconds": round(time.monotonic() - started, 1)}


def switches(scorer: Program) -> int:
    return scorer.log.read_text(errors="replace").count('"champion_switched"')


def run(bench, rate: int, minutes: float, retrain_minutes: float, ingest: str) -> dict:
    seconds = minutes * 60
    with pipeline(bench, ingest, group="soak") as (s, programs):
        scorer = next(p for p in programs if p.name == "scorer")
        procs = program_processes(bench, programs)
        logdir = scorer.log.parent
        prefix, seq_from = f"S{uuid.uuid4().hex[:4]}", SEQ_BLOCK
        acked_path = bench.stack.home / "soak-acked.tsv"
        started = time.time()
        follower = ScoreFollower(s, prefix, rate, seq_from, seconds, started)
        follower.start()
        cmd = [str(loadgen()), "--port", str(s.mqtt_port), "--connections", "8", "--inflight", "64"]
        cmd += ["--devices", str(rate), "--device-prefix", prefix, "--rate", str(rate), "--seq-start", str(seq_from)]
        cmd += ["--client-prefix", f"soak-{uuid.uuid4().hex[:5]}", "--duration", f"{seconds:.0f}s"]
        cmd += ["--acked-out", str(acked_path)]
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        rss: dict[str, list[int]] = {n: [] for n in procs}
        rows: list[dict] = []
        trainings: list[dict] = []
        versions_at_start = switches(scorer)
        next_train, minute = started + retrain_minutes * 60, 0
        training: threading.Thread | None = None
        while load.poll() is None:
            # A few seconds past the minute, so that its last readings' scores are read too.
            time.sleep(max(0.0, started + (minute + 1) * 60 + 5 - time.time()))
            for n, p in procs.items():
                try:
                    rss[n].append(p.memory_info().rss)
                except psutil.Error:
                    rss[n].append(0)
            if time.time() >= next_train and (training is None or not training.is_alive()):
                run_no = len(trainings) + 1
                training = threading.Thread(
                    target=lambda k=run_no: trainings.append(retrain(s, logdir, k)), daemon=True
                )
                training.start()
                next_train += retrain_minutes * 60
            done = follower.minutes.get(minute, Minute())
            row = {
                "minute": minute + 1,
                "scored_per_s": round(done.scored / 60, 1),
                "p50_ms": percentile(done.latency_ms, 0.50),
                "p99_ms": percentile(done.latency_ms, 0.99),
                "preprocess_lag": lag(s, "soak-pre", s.topic_raw),
                "scorer_lag": lag(s, "soak-score", s.topic_features),
                "rss_mb": {n: round(v[-1] / 2**20) for n, v in rss.items()},
                "versions_switched": switches(scorer) - versions_at_start,
            }
            done.latency_ms = []  # the percentiles are kept; the samples are not
            rows.append(row)
            print(format_row(row), flush=True)
            minute += 1
        out, err = load.communicate()
        if load.returncode not in (0, 1):
            raise RuntimeError(f"loadgen failed ({load.returncode}): {err[-2000:]}")
        summary = json.loads(out.strip().splitlines()[-1])
        if training is not None:
            training.join()
        # Until every acknowledged reading is scored, or nothing moved for a minute.
        seen, moved = -1, time.monotonic()
        while follower.scored < summary["acked"] and time.monotonic() - moved < 60:
            if follower.scored != seen:
                seen, moved = follower.scored, time.monotonic()
            time.sleep(1)
        follower.stop()
        lost = 0
        with acked_path.open() as f:
            for line in f:
                device, seq = line.rstrip("\n").split("\t")
                lost += not follower.scored_bit(device, int(seq))
        return {
            "machine": {"node": platform.node(), "cores": os.cpu_count()},
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "rate": rate,
            "minutes": minutes,
            "retrain_minutes": retrain_minutes,
            "ingest": ingest,
            "loadgen": summary,
            "scored": follower.scored,
            "duplicates": follower.duplicates,
            "lost": lost,
            "trainings": trainings,
            "versions_switched": switches(scorer) - versions_at_start,
            "rss_mb": {
                n: {"start": round(v[0] / 2**20), "peak": round(max(v) / 2**20), "end": round(v[-1] / 2**20)}
                for n, v in rss.items()
                if v
            },
            "minutes_table": rows,
        }


def format_row(r: dict) -> str:
    rss = " ".join(f"{n}={mb}" for n, mb in r["rss_mb"].items())
    return (
        f"{r['minute']:>4} {r['scored_per_s']:>9.0f} {r['p50_ms'] or 0:>8.0f} {r['p99_ms'] or 0:>8.0f} "
        f"{r['preprocess_lag']:>9} {r['scorer_lag']:>9} {r['versions_switched']:>3}  {rss}"
    )


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["minutes_table"]
    t = [r["minute"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    axes[0].plot(t, [r["scored_per_s"] for r in rows], label="scored/s")
    axes[0].axhline(result["rate"], color="grey", linestyle=":", label="offered")
    axes[1].plot(t, [r["p50_ms"] for r in rows], label="p50")
    axes[1].plot(t, [r["p99_ms"] for r in rows], label="p99")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("device->score ms")
    axes[2].plot(t, [r["preprocess_lag"] for r in rows], label="preprocessor lag")
    axes[2].plot(t, [r["scorer_lag"] for r in rows], label="scorer lag")
    axes[2].set_ylabel("records")
    for name in rows[0]["rss_mb"] if rows else []:
        axes[3].plot(t, [r["rss_mb"][name] for r in rows], label=name)
    axes[3].set_ylabel("RSS MB")
    axes[3].set_xlabel("minute")
    for ax in axes:
        ax.legend(loc="upper left", fontsize="small")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"soak: {result['rate']}/s for {result['minutes']:g} min, retrained every {result['retrain_minutes']:g}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    from bench.run import Bench
    from streamtrain import logs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=5000, help="offered readings/s, devices at 1 Hz (default 5000)")
    ap.add_argument("--minutes", type=float, default=60, help="length of the run (default 60)")
    ap.add_argument("--retrain", type=float, default=10, help="minutes between retrainings (default 10)")
    ap.add_argument(
        "--ingest",
        default="extension",
        choices=["bridge", "extension"],
        help="ingestion: the HiveMQ extension (default; the bridge saturates near 1,700/s here) or the bridge",
    )
    args = ap.parse_args()
    logs.configure("WARNING", "console")
    bench = Bench(False)
    print(
        f"soak on {platform.node()}: {os.cpu_count()} cores; {args.rate}/s for {args.minutes:g} min, "
        f"retrained every {args.retrain:g} min ({args.ingest})",
        flush=True,
    )
    print("min  scored/s   p50 ms   p99 ms  pre. lag  sc. lag ver  RSS MB", flush=True)
    bench.stack.up(create_topics=False)
    try:
        result = run(bench, args.rate, args.minutes, args.retrain, args.ingest)
    finally:
        bench.stack.down()
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "soak.png")
    rss = ", ".join(f"{n} {v['start']}/{v['peak']}/{v['end']}" for n, v in result["rss_mb"].items())
    p99 = [r["p99_ms"] for r in result["minutes_table"] if r["p99_ms"] is not None]
    print(
        f"acked {result['loadgen']['acked']}, scored {result['scored']}, lost {result['lost']}, "
        f"duplicates {result['duplicates']}; versions rolled {result['versions_switched']} of "
        f"{len(result['trainings'])} trainings; p99 worst minute {max(p99, default=0):.0f} ms, median minute "
        f"{statistics.median(p99) if p99 else 0:.0f} ms; RSS MB start/peak/end: {rss}"
    )
    print(f"wrote {out / 'soak.json'} and {out / 'soak.png'}")
    if result["lost"] or result["duplicates"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
