"""`streamtrain demo`: the whole pipeline on this machine, on real brokers, in a few minutes.

stack up -> bridge, preprocess -> simulator with anomalies -> train v1 from Kafka -> scorer ->
train v2 on newer data while traffic flows -> scorer swaps to v2 live -> quality per version
(on readings each version did not train on) -> HTML report -> everything stopped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
from confluent_kafka import KafkaException

from streamtrain import exitcodes, logs
from streamtrain.kafka import READER_GROUP, KafkaSecurity, client_config, read_topic, watermarks
from streamtrain.quality import evaluate, format_table, training_ranges
from streamtrain.settings import CommonSettings, StackSettings, settings_env

log = logs.get("demo")


class DemoError(RuntimeError):
    pass


class Proc:
    def __init__(self, name: str, args: list[str], env: dict, logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.out = open(self.log_path, "ab")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "streamtrain.cli.main", *args], env=env, stdout=self.out, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self, timeout: float = 60) -> int:
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.out.close()
        return self.p.returncode


def _behind(s: CommonSettings, topic: str, group: str) -> int:
    """Records of ``topic`` after the offsets ``group`` committed (the scorer commits its offsets in
    the same transaction as the scores, so 0 means every record's score is committed). Counted by
    reading them: a transactional topic's end offset also counts commit markers."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        client_config(
            s.kafka_bootstrap, **{"group.id": group, "enable.auto.commit": False, "isolation.level": "read_committed"}
        )
    )
    try:
        parts = [TopicPartition(topic, p) for p in c.list_topics(topic, timeout=10).topics[topic].partitions]
        ends, start = {}, []
        for tp in c.committed(parts, timeout=10):
            _, hi = watermarks(c, TopicPartition(topic, tp.partition))
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            if hi > max(tp.offset, 0):
                ends[tp.partition] = hi
                start.append(TopicPartition(topic, tp.partition, offset))
        if not start:
            return 0
        c.assign(start)
        behind, deadline = 0, time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            behind += sum(1 for m in c.consume(1000, 0.5) if not m.error())
            for tp in c.position([TopicPartition(topic, p) for p in list(ends)]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
        return behind + len(ends)  # a partition not read to its end counts as behind
    finally:
        c.close()


def _count(s: CommonSettings, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(client_config(s.kafka_bootstrap, **{"group.id": f"{READER_GROUP}.demo-count"}))
    try:
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in md.topics[topic].partitions:
            lo, hi = watermarks(c, TopicPartition(topic, p))
            total += hi - lo
        return total
    finally:
        c.close()


def _wait(what: str, cond, timeout: float, procs: list[Proc], every: float = 5.0) -> None:
    t0 = time.monotonic()
    last = 0.0
    while True:
        ok, progress = cond()
        if ok:
            click.echo(f"  ✓ {what} ({progress}, {time.monotonic() - t0:.0f}s)")
            return
        for p in procs:
            if not p.alive():
                raise DemoError(f"{p.name} exited with {p.p.returncode} while waiting for {what}:\n{p.tail()}")
        if time.monotonic() - t0 > timeout:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what} ({progress})")
        if time.monotonic() - last >= every:
            last = time.monotonic()
            click.echo(f"    … {what}: {progress}")
        time.sleep(0.5)


def _stable(counter, polls: int = 4):
    """A condition that holds once ``counter()`` has not changed for ``polls`` checks in a row."""
    seen: list[int] = []

    def cond():
        seen.append(counter())
        recent = seen[-polls:]
        return len(recent) == polls and len(set(recent)) == 1, f"{seen[-1]} records"

    return cond


def _train(name: str, s: CommonSettings, env: dict, logdir: Path, args: list[str], procs: list[Proc]) -> dict:
    t0 = time.monotonic()
    p = Proc(name, ["train", *args], env, logdir)
    while p.alive():
        for other in procs:
            if not other.alive():
                raise DemoError(f"{other.name} exited while training:\n{other.tail()}")
        time.sleep(0.5)
    if p.p.returncode != 0:
        raise DemoError(f"{name} failed ({p.p.returncode}):\n{p.tail()}")
    p.stop()
    from streamtrain.modelcodec import read_versions

    versions = read_versions(s.kafka_bootstrap, s.topic_models)
    if not versions:
        raise DemoError(f"{name} finished but no model version is on {s.topic_models}")
    meta = versions[-1].metadata
    click.echo(
        f"  ✓ {name}: model v{meta['version']} trained on {meta.get('record_count', '?')} records "
        f"in {time.monotonic() - t0:.0f}s (threshold {meta.get('threshold', 0):.4g})"
    )
    return meta


def _program_envs(stack, s: CommonSettings, run: str):
    """Each program's environment. On a SCRAM stack every program gets a Kafka user of its own, holding
    only the ACLs of streamtrain.access, and the demo itself reads as the admin; no program inherits
    another's credentials."""
    security = {f"STREAMTRAIN_KAFKA_{field.upper()}" for field in KafkaSecurity.model_fields}
    users: dict[str, dict] = {}
    if stack.settings.kafka_auth == "scram":
        from streamtrain.stack.local import ADMIN

        os.environ.update(stack.client_env(ADMIN))
        users = {
            p: stack.kafka_user(f"demo-{run}-{p}", p, topics=s) for p in ("bridge", "preprocess", "train", "score")
        }

    def env(program: str, **extra) -> dict:
        out = {k: v for k, v in settings_env(s, **extra).items() if k not in security}
        return {**out, **users.get(program, {})}

    return env


@click.command("demo")
@click.option("--devices", default=50, show_default=True, help="Simulated devices.")
@click.option("--rate", default=10.0, show_default=True, help="Readings per second per device.")
@click.option("--v1-records", default=15000, show_default=True, help="Feature records before training v1.")
@click.option(
    "--v2-records",
    default=15000,
    show_default=True,
    help="Feature records newer than v1's range before training v2 (its range: the newest this many).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Training epochs per version (default: the trainer's own rule, enough epochs for its minimum steps).",
)
@click.option("--seed", default=42, show_default=True, help="Simulator seed.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path),
    default=Path("reports/demo"),
    show_default=True,
    help="Where the HTML report goes.",
)
@click.option("--keep-stack", is_flag=True, help="Leave Kafka and HiveMQ running at the end.")
@click.option("--run-id", default=None, help="Names this run's topics streamtrain.demo-<run-id>.* (default: random).")
@click.option(
    "--kafka-auth",
    type=click.Choice(["none", "scram"]),
    default=None,
    help="scram: Kafka with SASL/SCRAM over TLS and ACLs; each program runs as its own Kafka user "
    "holding only its topics (default: as the stack was made, else none).",
)
@click.pass_context
def command(
    ctx, devices, rate, v1_records, v2_records, epochs, seed, report_dir, keep_stack, run_id, kafka_auth
) -> None:
    """Run the whole pipeline locally on real Kafka + HiveMQ and print the quality table.

    Ports and the data directory follow the stack settings (STREAMTRAIN_KAFKA_PORT,
    STREAMTRAIN_MQTT_PORT, STREAMTRAIN_HOME); an already running stack is reused.
    """
    from streamtrain.stack.local import LocalStack, StackError

    started = time.monotonic()
    run = run_id or uuid.uuid4().hex[:6]
    stack_settings = StackSettings(
        **(ctx.obj or {}).get("log", {}), **({"kafka_auth": kafka_auth} if kafka_auth else {})
    )
    stack = LocalStack(stack_settings)
    logdir = stack.home / "logs" / f"demo-{run}"
    logdir.mkdir(parents=True, exist_ok=True)
    topics: dict[str, Any] = {
        f"topic_{t}": f"streamtrain.demo-{run}.{t}"
        for t in ("raw", "features", "windows", "sequences", "scores", "models")
    }
    s = CommonSettings(
        kafka_bootstrap=stack.bootstrap,
        mqtt_port=stack_settings.mqtt_port,
        **topics,
        topic_deadletter=f"streamtrain.demo-{run}.deadletter",
        log_format="json",
    )
    click.echo(f"StreamTrain demo {run}: {devices} devices × {rate}/s, topics streamtrain.demo-{run}.*, logs {logdir}")
    procs: list[Proc] = []
    epoch_args = ["--epochs", str(epochs)] if epochs else []
    try:
        click.echo("1/7 starting Kafka (KRaft) and HiveMQ CE …")
        stack.up()
        env = _program_envs(stack, s, run)
        from streamtrain.kafka import ensure_topics
        from streamtrain.topics import pipeline_topics

        ensure_topics(s.kafka_bootstrap, pipeline_topics(s, partitions=3))
        security = (
            "SASL/SCRAM over TLS, a Kafka user per program" if stack.settings.kafka_auth == "scram" else "plaintext"
        )
        click.echo(f"  ✓ Kafka {stack.bootstrap} ({security}), MQTT 127.0.0.1:{stack_settings.mqtt_port}")

        click.echo("2/7 starting bridge and preprocessing …")
        bridge = Proc("bridge", ["bridge"], env("bridge", client_id=f"demo-{run}", share_group=f"demo-{run}"), logdir)
        pre = Proc("preprocess", ["preprocess"], env("preprocess"), logdir)
        procs += [bridge, pre]
        _wait("bridge subscribed", lambda: ('"mqtt_subscribed"' in bridge.tail(100000), "starting"), 60, procs)

        click.echo("3/7 simulating the fleet with injected anomalies …")
        sim = Proc(
            "simulator",
            ["simulate", "--devices", str(devices), "--rate", str(rate), "--seed", str(seed)],
            env("simulate"),
            logdir,
        )
        procs.append(sim)
        _wait(
            f"{v1_records} feature records",
            lambda: ((n := _count(s, s.topic_features)) >= v1_records, f"{n} records"),
            300,
            procs,
        )

        click.echo("4/7 training model v1 straight from Kafka …")
        _train("train-v1", s, env("train"), logdir, [*epoch_args, "--max-records", str(v1_records)], procs)

        click.echo("5/7 starting the live scorer …")
        scorer = Proc("scorer", ["score"], env("score"), logdir)
        procs.append(scorer)
        _wait("scores flowing", lambda: ((n := _count(s, s.topic_scores)) > 0, f"{n} scores"), 120, procs)

        click.echo("6/7 training model v2 on newer data while traffic flows …")
        # Newer than v1's range (its first v1_records records): what arrived while v1 trained counts, so a slow
        # machine does not leave v1 serving longer than a fast one would.
        _wait(
            f"{v2_records} feature records newer than v1's",
            lambda: ((n := _count(s, s.topic_features) - v1_records) >= v2_records, f"{n} records"),
            300,
            procs,
        )
        v2 = _train(
            "train-v2",
            s,
            env("train"),
            logdir,
            [*epoch_args, "--max-records", str(v2_records), "--from-end"],
            procs,
        )
        _wait("scorer on v2", lambda: (f'"new_version": {v2["version"]}' in scorer.tail(200000), "waiting"), 120, procs)
        time.sleep(5)  # some traffic scored by v2

        click.echo("7/7 draining and stopping …")
        # Upstream first: each stage stops only once everything before it has reached Kafka.
        sim.stop()
        procs.remove(sim)
        published = [int(x) for x in re.findall(r'"published": (\d+)', sim.tail(100000))]
        if not published:
            raise DemoError(f"simulator ended without its report:\n{sim.tail()}")
        _wait(
            "bridge drained",
            lambda: ((n := _count(s, s.topic_raw)) >= published[-1], f"{n}/{published[-1]} in the raw topic"),
            120,
            procs,
        )
        bridge.stop()
        procs.remove(bridge)
        _wait("preprocessing drained", _stable(lambda: _count(s, s.topic_features)), 120, procs)
        pre.stop()
        procs.remove(pre)
        _wait(
            "every feature record scored",
            lambda: ((n := _behind(s, s.topic_features, "streamtrain-scorer")) == 0, f"{n} to score"),
            120,
            procs,
        )
    except (DemoError, StackError, KafkaException) as exc:
        click.echo(f"error: {exc}", err=True)
        for p in procs:
            p.stop()
        if not keep_stack:
            stack.down()
        sys.exit(exitcodes.FAILED)
    for p in reversed(procs):
        p.stop()
    scores = [json.loads(m.value()) for m in read_topic(s.kafka_bootstrap, s.topic_scores, timeout=60)]
    from streamtrain.modelcodec import read_versions
    from streamtrain.scorer.report import write_report

    models = [mv.metadata for mv in read_versions(s.kafka_bootstrap, s.topic_models, keep_deleted=True)]
    # The scorer's new group starts at the oldest record, which v1 trained on: held-out readings only.
    ev = evaluate(scores, training=training_ranges(models))
    click.echo("")
    click.echo(format_table(ev))
    path = write_report(report_dir, scores, ev, models, title=f"StreamTrain demo {run}")
    click.echo(f"\nreport: {path}")
    if not keep_stack:
        stack.down()
    click.echo(f"done in {time.monotonic() - started:.0f}s; stack {'left running' if keep_stack else 'stopped'}")
