"""Bench figures of the trainer, the scorer and the hot swap (called by bench/run.py)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from confluent_kafka import Producer

from bench.ingest_ceiling import CpuMeter
from streamtrain.kafka import producer_config, read_topic
from streamtrain.model import LoadedModel
from streamtrain.modelcodec import read_versions
from streamtrain.settings import settings_env


def fill_features(s, n: int, seed: int = 0, rate: float | None = None, stop: threading.Event | None = None) -> int:
    rng = np.random.default_rng(seed)
    p = Producer(producer_config(s.kafka_bootstrap, **{"linger.ms": 5}))
    sent = 0
    t0 = time.monotonic()
    while sent < n and not (stop and stop.is_set()):
        load = rng.uniform(0.2, 0.8)
        d = f"d{sent % 50}"
        r = {
            "device_id": d,
            "ts": time.time(),
            "seq": sent // 50,
            "current": 1.5 + 2 * load + rng.normal(0, 0.03),
            "pressure": 3 + 1.5 * load + rng.normal(0, 0.03),
            "temperature": 60 + 25 * load + rng.normal(0, 0.4),
            "vibration": 0.3 + 0.4 * load + rng.normal(0, 0.008),
            "label": 0,
        }
        while True:
            try:
                p.produce(s.topic_features, json.dumps(r).encode(), key=d.encode())
                break
            except BufferError:
                p.poll(0.01)
        sent += 1
        if sent % 1000 == 0:
            p.poll(0)
        if rate:
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0.002:
                time.sleep(ahead)
    p.flush(60)
    return sent


def _train_settings(bench, n: int, epochs: int, **extra):
    from streamtrain.trainer.train import TrainSettings

    s = bench.settings()
    fill_features(s, n)
    return s, TrainSettings(
        kafka_bootstrap=s.kafka_bootstrap,
        topic_features=s.topic_features,
        topic_models=s.topic_models,
        train_records=n,
        epochs=epochs,
        validation_fraction=0,
        **extra,
    )


def _in_memory_rate(ts, meta: dict, n: int, epochs: int) -> float:
    """The limit: the same model, same batches, fed from an in-memory array."""
    from streamtrain.trainer.train import build_autoencoder

    x = np.random.default_rng(1).normal(size=(n, len(meta["feature_names"]))).astype(np.float32)
    model = build_autoencoder(x.shape[1], meta["config"]["layers"], ts.learning_rate, ts.seed)
    t0 = time.monotonic()
    model.fit(x, x, epochs=epochs, batch_size=ts.batch_size, verbose=0, shuffle=True)
    return n * epochs / (time.monotonic() - t0)


def training(bench, n: int, epochs: int = 3) -> None:
    from streamtrain.trainer.train import train_once

    _, ts = _train_settings(bench, n, epochs)
    meta = train_once(ts)
    kafka_rate = meta["record_count"] * epochs / meta["fit_seconds"]
    memory_rate = _in_memory_rate(ts, meta, n, epochs)
    bench.add(
        bench.Figure(
            "train from Kafka (tf.data)",
            n,
            "kafka",
            kafka_rate,
            "in-memory",
            memory_rate,
            "rec/s",
            f"{epochs} epochs re-read; reader process (the default)",
        )
    )
    threads = train_once(ts.model_copy(update={"reader_process": False}), publish=False)
    bench.add(
        bench.Figure(
            "train from Kafka, reader threads",
            n,
            "kafka (threads)",
            threads["record_count"] * epochs / threads["fit_seconds"],
            "in-memory",
            memory_rate,
            "rec/s",
            f"{epochs} epochs re-read; --reader-threads: decoding in the trainer's own threads",
        )
    )
    cached = train_once(ts.model_copy(update={"cache": True}), publish=False)
    bench.add(
        bench.Figure(
            "train from Kafka, cached",
            n,
            "kafka+cache",
            n * epochs / cached["fit_seconds"],
            "in-memory",
            memory_rate,
            "rec/s",
            "first epoch reads Kafka",
        )
    )


def training_tfio(bench, n: int, epochs: int = 3) -> None:
    """tensorflow-io's Kafka dataset is ~15x slower than ours: its own (smaller) sizes keep the run short."""
    from streamtrain.trainer.train import train_once

    _, ts = _train_settings(bench, n, epochs, backend="tfio")
    meta = train_once(ts, publish=False)
    bench.add(
        bench.Figure(
            "train via tensorflow-io",
            n,
            "tfio",
            meta["record_count"] * epochs / meta["fit_seconds"],
            "in-memory",
            _in_memory_rate(ts, meta, n, epochs),
            "rec/s",
            "reader re-created per epoch",
        )
    )


def training_workers(bench, n: int, epochs: int = 3, workers: int = 2) -> None:
    """One worker against ``workers`` local worker processes (MultiWorkerMirroredStrategy) on the same range."""
    from streamtrain.trainer.distributed import run_local_workers
    from streamtrain.trainer.train import train_once

    s, ts = _train_settings(bench, n, epochs)
    one = train_once(ts)
    code, out = run_local_workers(
        ts.model_copy(update={"source_range": json.dumps(one["source"])}), workers, timeout=900
    )
    if code:
        raise RuntimeError(f"{workers} workers exited with {code}: {out}")
    many = read_versions(s.kafka_bootstrap, s.topic_models)[-1].metadata
    rate = lambda meta: meta["record_count"] * epochs / meta["fit_seconds"]  # noqa: E731
    bench.add(
        bench.Figure(
            f"train, {workers} workers vs 1",
            n,
            f"{workers} workers",
            rate(many),
            "1 worker",
            rate(one),
            "rec/s",
            f"{epochs} epochs re-read; local processes on one machine",
        )
    )


def scoring(bench, n: int) -> None:
    from streamtrain.scorer.app import ScoreSettings

    s, total = scoring_input(bench, n)
    model = LoadedModel.from_version(read_versions(s.kafka_bootstrap, s.topic_models)[-1])
    x = np.random.default_rng(2).normal(60, 10, size=(n, len(model.feature_names))).astype(np.float32)
    # The limit: Keras' own batch predict of the same network on in-memory rows, as many per call as the
    # scorer's micro-batch holds. Beside it, the scorer's in-memory call (normalize, reconstruct, decide
    # per device): what the Kafka part costs on top of it.
    batch = ScoreSettings.model_fields["batch_size"].default
    model.warm()
    xn = model.normalize(x)
    model.keras_model.predict(xn[:batch], batch_size=batch, verbose=0)  # its predict function, traced once
    t0 = time.monotonic()
    model.keras_model.predict(xn, batch_size=batch, verbose=0)
    predict_rate = n / (time.monotonic() - t0)
    devices = [f"d{i % 50}" for i in range(batch)]
    t0 = time.monotonic()
    for i in range(0, n, batch):
        rows = x[i : i + batch]
        model.assess(rows, devices[: len(rows)])
    call_rate = n / (time.monotonic() - t0)
    rate, cpu_us, scored = python_scorer_rate(bench, s, total)
    cpu_bound = (os.cpu_count() or 1) * 1e6 / max(sum(cpu_us.values()), 1e-9)
    bench.add(
        bench.Figure(
            "scorer consume->score->produce",
            total,
            "scorer",
            rate,
            "Keras batch predict",
            predict_rate,
            "rec/s",
            f"micro-batch {batch}, exactly once (one transaction per 100 ms), {scored:,} scores; "
            f"the scorer's in-memory call {call_rate:,.0f} rec/s (ours / it {rate / call_rate:.2f}); "
            f"CPU per record: scorer {cpu_us['scorer']} us, Kafka {cpu_us['kafka']} us, so on "
            f"{os.cpu_count()} cores these two alone allow at most {cpu_bound:,.0f} rec/s "
            f"({cpu_bound / predict_rate:.2f} of predict)",
        )
    )
    add_plain_loop_figure(bench, s, total, rate, cpu_us)
    jvm_rate, onnx_rate, jvm_cpu = streams_scoring(bench, s, total)
    bench.add(
        bench.Figure(
            "kafka-streams scorer consume->score->produce",
            total,
            "kafka-streams scorer",
            jvm_rate,
            "ONNX Runtime batch",
            onnx_rate,
            "rec/s",
            f"up to {batch} records per ONNX call, exactly_once_v2; python scorer {rate:,.0f} rec/s; "
            f"CPU per record: scorer {jvm_cpu['streams scorer']} us, Kafka {jvm_cpu['kafka']} us",
        )
    )


def scoring_input(bench, n: int):
    """Settings of a fresh pipeline whose features topic holds ``n + 2000`` records and whose models
    topic holds v1 trained on 2000 of them; and that total."""
    from streamtrain.trainer.train import TrainSettings, train_once

    s = bench.settings()
    fill_features(s, n + 2000, seed=3)
    train_once(
        TrainSettings(
            kafka_bootstrap=s.kafka_bootstrap,
            topic_features=s.topic_features,
            topic_models=s.topic_models,
            train_records=2000,
            epochs=2,
        )
    )
    return s, n + 2000


def _run_until_committed(bench, s, total: int, proc, log, group: str, marker: bytes, name: str):
    """Records/s of a scorer process from ``marker`` in its log (its model loaded) until ``group`` has
    committed the last input offset, its CPU microseconds per record beside Kafka's, and its scores
    counted after (read_committed; raises unless exactly ``total``)."""
    try:
        t0 = _wait_first_score(s, proc, log, marker=marker)
        cpu = CpuMeter({name: proc.pid, "kafka": bench.stack.kafka.pid()})
        # Done when the transactions have committed the offset of the last input: its scores commit in
        # the same transactions. (Reading the scores meanwhile would put a third program on the two
        # cores; they are counted after.)
        _wait_committed(s.kafka_bootstrap, group, s.topic_features, timeout=600)
        rate = total / (time.monotonic() - t0)
        cpu_us = cpu.per_record(total)
    finally:
        proc.terminate()
        proc.wait(60)
    scored = len(read_topic(s.kafka_bootstrap, s.topic_scores, until=lambda m: len(m) >= total, timeout=120))
    if scored != total:
        raise RuntimeError(f"{name} wrote {scored} scores for {total} records")
    return rate, cpu_us, scored


def python_scorer_rate(bench, s, total: int) -> tuple[float, dict[str, float], int]:
    """`streamtrain score` (exactly once, its defaults) over the features topic: rate, CPU, scores."""
    proc, log = _scorer(bench, s, "bench-scorer")
    return _run_until_committed(
        bench, s, total, proc, log, f"bench-scorer-{s.topic_scores}", b'"champion_switched"', "scorer"
    )


def plain_loop_rate(bench, s, total: int) -> tuple[float, dict[str, float], int]:
    """bench/plain_scorer.py (the loop a user would write) over the same features topic and model, into
    a scores topic of its own: rate, CPU, scores."""
    from streamtrain.kafka import ensure_topics
    from streamtrain.topics import TopicSpec

    plain = s.model_copy(update={"topic_scores": f"{s.topic_scores}.plain"})
    ensure_topics(plain.kafka_bootstrap, [TopicSpec(plain.topic_scores, 6)])
    group = f"bench-plain-{plain.topic_scores}"
    log_path = bench.stack.home / "bench-plain.log"
    script = os.path.join(os.path.dirname(__file__), "plain_scorer.py")
    args = [plain.kafka_bootstrap, plain.topic_features, plain.topic_models, plain.topic_scores, group]
    proc = subprocess.Popen([sys.executable, script, *args], stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    return _run_until_committed(bench, plain, total, proc, log_path, group, b"model_ready", "plain loop")


#: What ``make bench`` asks of the Python scorer against the plain loop (issue 28).
PLAIN_LOOP_TARGET = 2.0


def add_plain_loop_figure(bench, s, total: int, ours: float, ours_cpu: dict[str, float]) -> None:
    plain, plain_cpu, scored = plain_loop_rate(bench, s, total)
    ratio = ours / plain if plain else 0.0
    # Records per CPU-second of the program and the broker together: steadier than records/s when other
    # work shares the cores (what each run gets of them varies).
    cpu_ratio = sum(plain_cpu.values()) / max(sum(ours_cpu.values()), 1e-9)
    bench.add(
        bench.Figure(
            "scorer vs plain loop",
            total,
            "scorer",
            ours,
            "plain loop",
            plain,
            "rec/s",
            f"target {PLAIN_LOOP_TARGET:.1f} ({'met' if ratio >= PLAIN_LOOP_TARGET else 'MISSED'}); same features, "
            f"model, exactly once, transactions every 100 ms, batches of 512 (bench/plain_scorer.py), "
            f"{scored:,} scores; CPU per record: scorer {ours_cpu['scorer']} us (Kafka {ours_cpu['kafka']}), "
            f"plain loop {plain_cpu['plain loop']} us (Kafka {plain_cpu['kafka']}), records per CPU-second "
            f"ours / plain {cpu_ratio:.2f}",
        )
    )


def scorer_vs_plain(bench, n: int) -> None:
    """The Python scorer against the plain loop alone (no Keras ceiling, no JVM scorer)."""
    s, total = scoring_input(bench, n)
    ours, cpu_us, _ = python_scorer_rate(bench, s, total)
    add_plain_loop_figure(bench, s, total, ours, cpu_us)


def streams_scoring(bench, s, total: int) -> tuple[float, float, dict[str, float]]:
    """The Kafka Streams scorer on the same features and model, into a scores topic of its own, and its
    limit: the same model in ONNX Runtime on in-memory rows (records/s of each); and the CPU microseconds
    per record of the scorer and of Kafka."""
    from streamtrain.kafka import ensure_topics
    from streamtrain.scorer.streams_engine import build, java_command
    from streamtrain.topics import TopicSpec

    jar = build()
    jvm = s.model_copy(update={"topic_scores": f"{s.topic_scores}.jvm"})
    ensure_topics(jvm.kafka_bootstrap, [TopicSpec(jvm.topic_scores, 3)])
    java_options = None
    if getattr(bench, "jfr", None):  # bench.run --jfr FILE: a flight recording of the scorer's JVM
        java_options = f"-XX:StartFlightRecording=filename={bench.jfr},settings=profile,dumponexit=true"
    proc, log = _scorer(bench, jvm, "bench-streams-scorer", engine="kafka-streams", java_options=java_options)
    # From the moment its stream thread runs (group joined, first champion in place) until its transactions
    # have committed the last input offset, as the Python scorer is timed; its scores are counted after.
    group = f"bench-streams-scorer-{jvm.topic_scores}"
    rate, cpu_us, _ = _run_until_committed(bench, jvm, total, proc, log, group, b'"state": "RUNNING"', "streams scorer")
    java = java_command(jar)[0]
    out = subprocess.run(
        [java, "-cp", str(jar), "streamtrain.scorer.OnnxCeiling", str(total)],
        env=settings_env(jvm),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return rate, json.loads(out.stdout.strip().splitlines()[-1])["records_per_s"], cpu_us


def _wait_committed(bootstrap: str, group: str, topic: str, timeout: float) -> None:
    """Until ``group`` has committed every partition of ``topic`` up to its end offset now."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from streamtrain import start_position  # noqa: PLC0415
    from streamtrain.kafka import client_config  # noqa: PLC0415

    ends = {tp.partition: tp.offset for tp in start_position.snapshot(bootstrap, [topic], "latest")[topic]}
    admin = AdminClient(client_config(bootstrap))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = start_position.committed(admin, group, topic)
        if all(done.get(p, -1) >= end for p, end in ends.items()):
            return
        time.sleep(0.05)
    raise RuntimeError(f"group {group} did not commit {topic} to its end within {timeout:.0f}s")


def _scorer(bench, s, name: str, engine: str = "python", java_options: str | None = None):
    env = settings_env(s, group_id=f"{name}-{s.topic_scores}")
    if java_options:  # read by the JVM the kafka-streams engine execs into
        env["JAVA_TOOL_OPTIONS"] = java_options
    log_path = bench.stack.home / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtrain.cli.main", "score", "--engine", engine],
        env=env,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, log_path


def _wait_first_score(s, proc, log_path, marker: bytes = b'"champion_switched"') -> float:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if marker in log_path.read_bytes():
            return time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text()[-2000:])
        time.sleep(0.05)
    raise RuntimeError("scorer did not load a model")


def latency_and_swap(bench, rate: float, seconds: float) -> None:
    s = bench.settings()
    fill_features(s, 3000, seed=5)
    from streamtrain.trainer.train import TrainSettings, train_once

    ts = TrainSettings(
        kafka_bootstrap=s.kafka_bootstrap,
        topic_features=s.topic_features,
        topic_models=s.topic_models,
        train_records=3000,
        epochs=2,
    )
    train_once(ts)
    proc, log = _scorer(bench, s, "bench-swap")
    stop = threading.Event()
    try:
        _wait_first_score(s, proc, log)
        read_topic(s.kafka_bootstrap, s.topic_scores, until=lambda m: len(m) >= 3000, timeout=120)  # backlog done
        streaming_from = time.time()
        t = threading.Thread(target=fill_features, args=(s, 10**9, 9, rate, stop), daemon=True)
        t.start()
        time.sleep(seconds / 2)
        train_once(ts.model_copy(update={"from_end": True}))
        time.sleep(seconds / 2)
        stop.set()
        t.join(30)
        time.sleep(2)
    finally:
        proc.terminate()
        proc.wait(60)
    scores = [json.loads(m.value()) for m in read_topic(s.kafka_bootstrap, s.topic_scores, timeout=60)]
    live = [x for x in scores if x["ts"] >= streaming_from]  # the paced stream only, not the backlog
    lat = sorted((x["scored_at"] - x["ts"]) * 1000 for x in live)
    bench.add(
        bench.Figure(
            "input->score latency p50", len(lat), "latency", statistics.median(lat), "", 0, "ms", f"at {rate:.0f} rec/s"
        )
    )
    bench.add(
        bench.Figure(
            "input->score latency p99",
            len(lat),
            "latency",
            lat[int(len(lat) * 0.99) - 1],
            "",
            0,
            "ms",
            f"at {rate:.0f} rec/s",
        )
    )
    # One scored_at per micro-batch: the pause is the gap between batches around the switch.
    batches = sorted({(x["scored_at"], x["model_version"]) for x in live})
    gaps = [(b[0] - a[0]) * 1000 for a, b in zip(batches, batches[1:])]
    switch = next((i for i, (a, b) in enumerate(zip(batches, batches[1:])) if a[1] != b[1]), None)
    if switch is not None:
        pause = gaps[switch]
        typical = statistics.median(gaps)
        # Ratio = typical / pause, so 1.0 means the switch cost nothing.
        bench.add(
            bench.Figure(
                "hot swap: pause at v1->v2",
                len(gaps),
                "typical batch gap",
                typical,
                "pause at switch",
                pause,
                "ms",
                f"{len(batches)} batches; 1.0 = no pause",
            )
        )


def _training_sizes(bench) -> list[int]:
    return [5_000] if bench.quick else [10_000, 50_000, 200_000]


def run_training(bench) -> None:
    for n in _training_sizes(bench):
        training(bench, n)


def run_training_tfio(bench) -> None:
    for n in [2_000] if bench.quick else [2_000, 5_000, 10_000]:
        training_tfio(bench, n)


def run_training_workers(bench) -> None:
    for n in _training_sizes(bench):
        training_workers(bench, n)


def run_scoring(bench) -> None:
    for n in [5_000] if bench.quick else [10_000, 50_000, 200_000]:
        scoring(bench, n)
    for rate in [300] if bench.quick else [100, 300, 1000]:
        latency_and_swap(bench, rate, 6 if bench.quick else 20)


def streams_scorer_alone(bench, n: int) -> None:
    """The Kafka Streams scorer alone (no Python scorer, no plain loop), beside its two limits measured in
    the same run: ONNX Runtime on in-memory rows, and Kafka's Java consumer reading the same features topic."""
    from bench import kafka_perf

    s, total = scoring_input(bench, n)
    jvm_rate, onnx_rate, cpu_us = streams_scoring(bench, s, total)
    consume_rate = kafka_perf.consume_rate(bench.stack, s.topic_features, total)
    bench.add(
        bench.Figure(
            "kafka-streams scorer consume->score->produce",
            total,
            "kafka-streams scorer",
            jvm_rate,
            "Kafka Java consumer",
            consume_rate,
            "rec/s",
            f"exactly_once_v2, {total:,} scores; the same features topic read by ConsumerPerformance (group "
            f"join included); ONNX Runtime batch {onnx_rate:,.0f} rec/s (ours / it {jvm_rate / onnx_rate:.4f}); "
            f"CPU per record: scorer {cpu_us['streams scorer']} us, Kafka {cpu_us['kafka']} us",
        )
    )


def run_streams_scorer(bench) -> None:
    for n in [5_000] if bench.quick else [200_000]:
        streams_scorer_alone(bench, n)


def run_scorer_vs_plain(bench) -> None:
    for n in [5_000] if bench.quick else [200_000]:
        scorer_vs_plain(bench, n)


#: Stage groups ``python -m bench.run --only NAME`` runs alone.
GROUPS = {
    "training": run_training,
    "training-tfio": run_training_tfio,
    "training-workers": run_training_workers,
    "scoring": run_scoring,
    "scorer-vs-plain": run_scorer_vs_plain,
    "streams-scorer": run_streams_scorer,
}


def run(bench) -> None:
    for name, group in GROUPS.items():
        if name not in ("scorer-vs-plain", "streams-scorer"):  # the scoring group measures them too
            group(bench)
