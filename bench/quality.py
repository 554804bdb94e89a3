"""`make bench-quality`: detection quality on the recorded fleet, through the live pipeline,
next to classic baselines computed in the same run on the same split.

Starts its own Kafka + HiveMQ on free ports, writes the recorded fleet (simulator/recorded.py:
old timestamps, constant and quantised channels, a few hundred training readings per device,
long faults, regime changes), then runs the programs exactly as the README describes:

1. `streamtrain simulate --csv train.csv` -> `bridge` -> `preprocess --spec bench/recorded_spec.yaml`
   (the normal start of every recording);
2. `streamtrain train --baselines device` on those features (every other setting at its default);
3. `streamtrain simulate --csv test.csv` -> `bridge` -> `preprocess` -> `score` (the rest);
4. `streamtrain evaluate --json` on the scores topic: StreamTrain's row.

The baselines (bench/baselines.py, scikit-learn) are fitted per device on the training features
read back from Kafka and flag the test features read back from Kafka: the same readings.

Replay workarounds (issue 14, items 1-2, fixed elsewhere): the training and test parts travel on
their own raw/features topics (each CSV replay numbers seq from 0, and the exactly-once
preprocessor drops a (device, seq) it has seen), and the stream topics keep records for ever
(retention.ms=-1: the recordings' timestamps are years old, and time-based retention would
delete them on arrival).

Then SKAB (bench/skab.py), the public real benchmark, replayed the same way: one spec for its
eight channels, `train --model windowed --baselines device` with every other setting at its
default, scored live, next to PCA T²+Q, Isolation Forest and an offline convolutional autoencoder
computed in the same run, and the SKAB leaderboard's published figures (``--skab-data``, default
../shared/data/skab; ``--only skab`` runs just that part).

Prints the tables and writes bench/results/quality.json (and skab.json).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import click
import numpy as np

from bench import skab
from bench.baselines import run_baselines
from bench.quality_offline import HEADER, quality_of, row
from streamtrain.kafka import ensure_topics, read_topic
from streamtrain.modelcodec import read_versions
from streamtrain.quality import Quality
from streamtrain.settings import CommonSettings, StackSettings, settings_env
from streamtrain.simulator.publish import replay_args
from streamtrain.simulator.recorded import CHANNELS, RecordedConfig, write_recordings
from streamtrain.stack.local import LocalStack, free_port
from streamtrain.topics import TopicSpec, pipeline_topics

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "bench" / "recorded_spec.yaml"
STREAMTRAIN = [sys.executable, "-m", "streamtrain.cli.main"]
#: Flags of `streamtrain train` for the benchmark: per-device baselines, everything else default.
TRAIN_ARGS = ["--baselines", "device", "--max-records", "1000000"]


class Program:
    def __init__(self, name: str, args: list[str], env: dict, logs: Path) -> None:
        self.name, self.log = name, logs / f"{name}.log"
        self.proc = subprocess.Popen(STREAMTRAIN + args, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def wait_log(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {text!r}:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run(args: list[str], env: dict, timeout: float = 900) -> str:
    proc = subprocess.run(STREAMTRAIN + args, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"streamtrain {args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def topic_settings(base: CommonSettings, tag: str, part: str) -> CommonSettings:
    """The part's own raw/features topics; models, scores and dead letters shared."""
    return base.model_copy(
        update={f"topic_{t}": f"quality{tag}.{part}.{t}" for t in ("raw", "features", "windows", "sequences")}
    )


def create_topics(*settings: CommonSettings) -> None:
    specs = {}
    for s in settings:
        for t in pipeline_topics(s):
            specs[t.name] = TopicSpec(t.name, t.partitions, {**t.config, "retention.ms": "-1"})
    ensure_topics(settings[0].kafka_bootstrap, list(specs.values()))


def records(bootstrap: str, topic: str, expected: int, timeout: float = 300) -> list[dict]:
    """Every committed record of a topic, waiting until ``expected`` have arrived."""
    deadline = time.monotonic() + timeout
    while True:
        got = [json.loads(m.value()) for m in read_topic(bootstrap, topic, timeout=30)]
        if len(got) >= expected or time.monotonic() > deadline:
            return got
        time.sleep(1)


def replay(s: CommonSettings, csv_path: Path, expected: int, logs: Path, part: str, scorer: bool) -> list[dict]:
    """CSV -> MQTT -> bridge -> raw -> preprocess -> features (-> score): the part's feature records."""
    env = settings_env(s, log_format="json", share_group=f"bridge-{part}", client_id=f"bridge-{part}")
    programs = [Program(f"bridge-{part}", ["bridge"], env, logs)]
    programs[0].wait_log('"mqtt_subscribed"')
    programs.append(
        Program(
            f"preprocess-{part}",
            ["preprocess", "--spec", str(SPEC)],
            settings_env(s, log_format="json", group_id=f"preprocess-{part}"),
            logs,
        )
    )
    if scorer:
        programs.append(Program("score", ["score"], settings_env(s, log_format="json", group_id="score"), logs))
    try:
        out = run(
            replay_args(csv_path),
            settings_env(s, log_format="json"),
        )
        print(f"  replayed {part}: {out.strip()[-200:]}", flush=True)
        features = records(s.kafka_bootstrap, s.topic_features, expected)
        if len(features) != expected:
            raise RuntimeError(f"{part}: {len(features)} of {expected} readings reached {s.topic_features}")
        if scorer:
            scores = records(s.kafka_bootstrap, s.topic_scores, expected)
            if len(scores) != expected:
                raise RuntimeError(f"{len(scores)} of {expected} readings scored on {s.topic_scores}")
        return features
    finally:
        for p in reversed(programs):
            p.stop()


def by_device(features: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows: dict[str, list] = {}
    for f in sorted(features, key=lambda f: (f["device_id"], f["ts"])):
        rows.setdefault(f["device_id"], []).append(([float(f[c]) for c in CHANNELS], int(f.get("label") or 0)))
    return {d: (np.asarray([x for x, _ in r]), np.asarray([y for _, y in r])) for d, r in rows.items()}


def skab_live(stack: LocalStack, home: Path, experiments: list) -> tuple[list[dict], dict]:
    """SKAB's training rows replayed, the windowed model trained with the defaults, the test rows
    replayed and scored by a scorer started at the end of the topics: the score records and the
    trained version's metadata."""
    logs = home / "skab-programs"
    logs.mkdir(exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    s = CommonSettings(
        kafka_bootstrap=stack.bootstrap,
        mqtt_port=stack.settings.mqtt_port,
        **{f"topic_{t}": f"skab{tag}.{t}" for t in ("raw", "features", "windows", "sequences", "models", "scores")},
        topic_deadletter=f"skab{tag}.deadletter",
    )
    create_topics(s)
    spec = home / "skab_spec.yaml"
    spec.write_text(skab.SPEC)
    seq_state = home / "skab-seqs.json"
    n_train = skab.write_csv(home / "skab-train.csv", experiments, "train")
    n_test = skab.write_csv(home / "skab-test.csv", experiments, "test")
    env = settings_env(s, log_format="json")
    bridge = Program("skab-bridge", ["bridge"], settings_env(s, log_format="json", share_group=f"sb{tag}"), logs)
    programs = [bridge]
    try:
        bridge.wait_log('"mqtt_subscribed"')
        programs.append(
            Program("skab-preprocess", ["preprocess", "--spec", str(spec), "--group-id", f"sp{tag}"], env, logs)
        )
        t0 = time.monotonic()
        skab.replay(home / "skab-train.csv", env, seq_state, STREAMTRAIN)
        records(s.kafka_bootstrap, s.topic_sequences, n_train - len(experiments) * (skab.WINDOW - 1))
        skab.timed(f"replayed {n_train} training rows", t0)
        trained = json.loads(run(["train", *skab.TRAIN_ARGS], env).splitlines()[-1])
        meta = next(
            v.metadata for v in read_versions(s.kafka_bootstrap, s.topic_models) if v.version == trained["version"]
        )
        skab.timed(f"trained version {meta['version']} on {meta['record_count']} windows", t0)
        scorer = Program("skab-score", ["score", "--start-at", "latest", "--group-id", f"ss{tag}"], env, logs)
        programs.append(scorer)
        scorer.wait_log('"start_position"', timeout=180)
        skab.replay(home / "skab-test.csv", env, seq_state, STREAMTRAIN)
        scores = records(s.kafka_bootstrap, s.topic_scores, n_test, timeout=600)
        skab.timed(f"scored {len(scores)} of {n_test} test rows", t0)
    finally:
        for p in reversed(programs):
            p.stop()
    return scores, meta


def skab_tables(data: Path, stack: LocalStack, home: Path, conv_ae: bool) -> dict:
    experiments = skab.load(data)
    print(f"SKAB: {len(experiments)} experiments from {data}", flush=True)
    scores, meta = skab_live(stack, home, experiments)
    ours = skab.live_flags(scores, experiments)
    keys = {(r["device_id"], r["seq"]) for r in scores}
    table = {f"StreamTrain live (`train {' '.join(skab.TRAIN_ARGS[:4])}`, defaults)": skab.pooled(ours)}
    print(HEADER + "\n" + row(*next(iter(table.items()))), flush=True)
    print("  baselines (the conv AE trains once per experiment) ...", flush=True)
    for name, flags in skab.baseline_flags(experiments, conv_ae).items():
        table[name] = skab.pooled({e.name: (flags[e.name], e.test_labels) for e in experiments})
    always = {e.name: (np.ones(len(e.test_labels), bool), e.test_labels) for e in experiments}
    table["alarm on every reading"] = skab.pooled(always)
    print(
        f"\nSKAB, pooled over the test rows of {len(experiments)} experiments ({datetime.now(timezone.utc):%Y-%m-%d})"
    )
    print(
        f"scores: {len(scores)} records, {len(keys)} distinct readings; training health {meta.get('training_health', {}).get('status')}\n"
    )
    print(HEADER)
    for name, q in table.items():
        print(row(name, q))
    for name, f1, far, mar in skab.LEADERBOARD:
        print(f"| {name} | | | | **{f1:.2f}** | {100 * far:.2f} % | {100 * mar:.2f} % |")
    print("\nStreamTrain per experiment:\n" + skab.per_experiment_table(ours))
    return {
        "experiments": len(experiments),
        "scores": len(scores),
        "distinct_scored": len(keys),
        "train_args": skab.TRAIN_ARGS,
        "training_health": meta.get("training_health"),
        "detectors": {name: q.as_dict() for name, q in table.items()},
        "leaderboard": [{"detector": n, "f1": f, "far": a, "mar": m} for n, f, a, m in skab.LEADERBOARD],
        "per_experiment": {n: skab.quality_of(f, y).as_dict() for n, (f, y) in ours.items()},
    }


@click.command()
@click.option(
    "--skab-data",
    type=click.Path(path_type=Path),
    default=skab.DEFAULT_DATA,
    show_default=True,
    help="SKAB checkout (github.com/waico/SKAB): the folder holding data/valve1 ...",
)
@click.option("--only", type=click.Choice(["all", "recorded", "skab"]), default="all", show_default=True)
@click.option("--conv-ae/--no-conv-ae", default=True, show_default=True, help="SKAB: the offline conv AE baseline.")
def main(skab_data: Path, only: str, conv_ae: bool) -> None:
    """Detection quality through the live pipeline: the recorded fleet, then SKAB."""
    if only != "recorded":
        try:
            skab.load(skab_data, only=["valve1-0"])
        except skab.SkabMissing as exc:
            raise click.ClickException(str(exc)) from None
    started = time.monotonic()
    cfg = RecordedConfig()
    home = Path(tempfile.mkdtemp(prefix="streamtrain-quality-"))
    summary = write_recordings(cfg, home / "recorded")
    print(
        f"recorded fleet: {summary['devices']} devices, {summary['train_readings']} training readings, "
        f"{summary['test_readings']} test readings ({summary['test_faulty']} faulty)",
        flush=True,
    )
    stack = LocalStack(
        StackSettings(
            home=home,
            jars=REPO / ".streamtrain" / "lib",
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
            mqtt_port=free_port(),
        )
    )
    stack.up(create_topics=False)
    logs = home / "programs"
    logs.mkdir()
    skab_result = None
    try:
        if only == "skab":
            skab_result = skab_tables(skab_data, stack, home, conv_ae)
            return
        tag = uuid.uuid4().hex[:6]
        base = CommonSettings(
            kafka_bootstrap=stack.bootstrap,
            mqtt_port=stack.settings.mqtt_port,
            topic_models=f"quality{tag}.models",
            topic_scores=f"quality{tag}.scores",
            topic_deadletter=f"quality{tag}.deadletter",
        )
        train_s, test_s = topic_settings(base, tag, "train"), topic_settings(base, tag, "test")
        create_topics(train_s, test_s)
        train_features = replay(
            train_s, home / "recorded" / "train.csv", summary["train_readings"], logs, "train", scorer=False
        )
        trained = json.loads(run(["train", *TRAIN_ARGS], settings_env(train_s, log_format="json")).splitlines()[-1])
        print(f"  trained version {trained['version']} on {trained['record_count']} readings", flush=True)
        test_features = replay(
            test_s, home / "recorded" / "test.csv", summary["test_readings"], logs, "test", scorer=True
        )
        ours = json.loads(run(["evaluate", "--json"], settings_env(test_s, log_format="json")))
        health = ours.get("training_health", {})
        if only == "all":
            skab_result = skab_tables(skab_data, stack, home, conv_ae)
    finally:
        stack.down()
        if skab_result is not None:
            out = REPO / "bench" / "results"
            out.mkdir(parents=True, exist_ok=True)
            (out / "skab.json").write_text(json.dumps(skab_result, indent=2))
    train, test = by_device(train_features), by_device(test_features)
    split = {d: (train[d][0], test[d][0], test[d][1]) for d in sorted(test)}
    table = {f"StreamTrain (`train {' '.join(TRAIN_ARGS[:2])}`, defaults)": quality_from(ours["overall"])}
    table.update({name: quality_of(flags, labels) for name, (flags, labels) in run_baselines(split).items()})
    verdicts = ", ".join(f"v{v} {h['status']}" for v, h in health.items()) or "n/a"
    print(
        f"\nquality on the recorded fleet ({datetime.now(timezone.utc):%Y-%m-%d}, "
        f"{time.monotonic() - started:.0f} s, training health: {verdicts})\n"
    )
    print(HEADER)
    for name, q in table.items():
        print(row(name, q))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(
        json.dumps(
            {
                "date": f"{datetime.now(timezone.utc):%Y-%m-%d}",
                "recorded_fleet": {**summary, "episodes": None},
                "train_args": TRAIN_ARGS,
                "training_health": health,
                "detectors": {name: q.as_dict() for name, q in table.items()},
            },
            indent=2,
        )
    )


def quality_from(d: dict) -> Quality:
    return Quality(tp=d["tp"], fp=d["fp"], tn=d["tn"], fn=d["fn"])


if __name__ == "__main__":
    main()
