"""Profile training from Kafka at the bench's largest size with py-spy (every thread); writes
bench/profiles/training.txt.

Starts its own brokers like bench/run.py, fills the features topic with N records, then runs the
bench's training stage (3 epochs, re-read from Kafka each epoch) in a child process under
`py-spy record --threads` and sorts the samples of active threads into where the time went: TensorFlow
(a thread inside a TensorFlow call: its kernels run there), our record decoding, the Kafka client, the
rest of Python. (`--native` would name the C++ frames too, but unwinding TensorFlow's binary made
py-spy take a core and training 20 times slower.) Run: `make bench-profiles`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest_ceiling import cpu_seconds
from bench.run import REPO, Bench
from bench.stages import _train_settings
from streamtrain.trainer.train import TrainSettings, train_once

# Where a sampled stack spends its time: the first rule whose pattern is in any frame wins, so the
# more specific rules come first.
CATEGORIES = [
    ("record decoding (msgspec into numpy)", re.compile(r"record_decode|decode_lines|_typed")),
    ("Kafka client (consume)", re.compile(r"\b(consume|poll)\b|confluent_kafka")),
    ("tf.data generator (our Python feeding tf.data)", re.compile(r"generator_py_func|from_generator|_generator")),
    ("TensorFlow (train step, tf.data ops)", re.compile(r"tensorflow/python|keras/")),
    ("other Python", re.compile(r".")),
]


def summarise(raw: Path, seconds: float, rate: int, process_cpu: float) -> str:
    """The collapsed stacks of py-spy (`--format raw`) grouped by thread and by category."""
    by_cat: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter()
    by_frame: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        thread = (
            re.sub(r"\(0x[0-9a-f]+\)", "", frames[0]).strip() if frames[0].startswith(("thread", "process")) else "?"
        )
        by_thread[thread] += n
        cat = next((name for name, pat in CATEGORIES if any(pat.search(f) for f in frames)), "other")
        by_cat[cat] += n
        by_frame[frames[-1][:110]] += n
    cpu_s = total / rate
    lines = [
        f"the training process used {process_cpu:.1f} CPU-seconds in {seconds:.1f} s ({process_cpu / seconds:.2f} cores "
        f"of {os.cpu_count()}), TensorFlow's own thread pools included",
        f"py-spy samples of its Python threads (active ones only) at {rate}/s: {total} = {cpu_s:.1f} CPU-seconds in {seconds:.1f} s "
        f"wall ({cpu_s / seconds:.2f} cores of {os.cpu_count()})",
        "",
        "where the CPU time went:",
        *(f"  {100 * c / total:5.1f}%  {k}" for k, c in by_cat.most_common()),
        "",
        "by thread:",
        *(f"  {100 * c / total:5.1f}%  {k}" for k, c in by_thread.most_common(12)),
        "",
        "hottest leaf frames:",
        *(f"  {100 * c / total:5.1f}%  {k}" for k, c in by_frame.most_common(25)),
    ]
    return "\n".join(lines) + "\n"


def child(settings_json: str) -> None:
    """The profiled process: imports first, then waits for py-spy to attach, then trains."""
    import keras  # noqa: F401, PLC0415 - imported before profiling starts
    import tensorflow  # noqa: F401, PLC0415

    print("ready", flush=True)
    sys.stdin.readline()
    meta = train_once(TrainSettings.model_validate_json(settings_json), publish=False)
    print(json.dumps({k: meta[k] for k in ("record_count", "fit_seconds")}), flush=True)


def profiled(settings: TrainSettings, raw: Path, rate: int) -> tuple[dict, float]:
    """Train in a child process with py-spy attached once its imports are done; (its result, seconds profiled)."""
    out_file = raw.with_name("child.log")
    with open(out_file, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.profile_training", "--child", settings.model_dump_json()],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    assert proc.stdin is not None
    deadline = time.monotonic() + 300
    while b"ready" not in out_file.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the training process did not start:\n{out_file.read_text()[-3000:]}")
        time.sleep(0.2)
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "--threads", "--format", "raw", "--rate", str(rate), "--output", str(raw)]
    recorder = subprocess.Popen([*cmd, "--pid", str(proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(2)  # py-spy attached
    t0 = time.monotonic()
    cpu0 = last = cpu_seconds(proc.pid)
    proc.stdin.write(b"\n")
    proc.stdin.close()
    while proc.poll() is None:  # the process's CPU time, TensorFlow's own threads included (py-spy sees Python's)
        last = cpu_seconds(proc.pid) or last
        time.sleep(0.1)
    code = proc.wait()
    seconds = time.monotonic() - t0
    _, err = recorder.communicate(timeout=120)
    if code or not raw.exists():
        raise SystemExit(f"profiled training failed ({code}): {err.decode()[-1000:]}\n{out_file.read_text()[-3000:]}")
    lines = out_file.read_text().splitlines()
    meta = json.loads(next(x for x in reversed(lines) if x.startswith('{"record_count"')))
    meta["process_cpu_seconds"] = last - cpu0
    return meta, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="features records to train on (default 200000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs, each re-reading Kafka (default 3)")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second (default 50)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    bench = Bench(quick=True)
    bench.stack.up(create_topics=False)
    try:
        print(f"filling {args.records} feature records ...", flush=True)
        _, ts = _train_settings(bench, args.records, args.epochs)  # the bench's training stage, same settings
        raw = Path(tempfile.mkdtemp(prefix="profile-training-")) / "stacks.txt"
        print("training under py-spy ...", flush=True)
        meta, seconds = profiled(ts, raw, args.rate)
        rate = meta["record_count"] * args.epochs / meta["fit_seconds"]
        head = (
            f"Training from Kafka under py-spy: {meta['record_count']} records x {args.epochs} epochs re-read, "
            f"fit {meta['fit_seconds']:.1f} s = {rate:,.0f} rec/s (py-spy slows it; the bench's figure is without)\n\n"
        )
        target = REPO / "bench" / "profiles" / "training.txt"
        target.write_text(head + summarise(raw, seconds, args.rate, meta["process_cpu_seconds"]))
        print(target.read_text())
        print(f"wrote {target}")
    finally:
        bench.stack.down()


if __name__ == "__main__":
    main()
