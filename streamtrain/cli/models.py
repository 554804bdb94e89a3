"""`streamtrain models`: the model versions on the models topic, which ones the scorers serve, and the
verbs a user expects of a registry (list, show, export, promote, pin, unpin, rollback)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamtrain import exitcodes
from streamtrain.kafka import DeliveryFailed, produce_one
from streamtrain.kafka.config import READER_GROUP, client_config
from streamtrain.kafka.reading import watermarks
from streamtrain.modelcodec import ModelVersion, read_versions
from streamtrain.modelcontrol import (
    ModelControl,
    pin_record,
    promote_record,
    rollback_target,
    serving_version,
    unhealthy_reason,
)
from streamtrain.modelsign import ModelTrust
from streamtrain.onnx_export import ONNX_ATTACHMENT
from streamtrain.settings import CommonSettings, load

#: Scores read back from the end of each partition of the scores topic to tell which versions serve.
SERVING_TAIL = 500


def _settings(ctx: click.Context, bootstrap: str | None, topic_models: str | None) -> CommonSettings:
    given = {"kafka_bootstrap": bootstrap, "topic_models": topic_models}
    return load(CommonSettings, **(ctx.obj or {}).get("log", {}), **{k: v for k, v in given.items() if v})


def _quiet_consumer(s: CommonSettings) -> Consumer:
    """A reader without a group; librdkafka's own lines stay off the console (errors are reported here)."""
    conf = {"group.id": READER_GROUP, "enable.auto.commit": False, "isolation.level": "read_committed"}
    return Consumer(client_config(s.kafka_bootstrap, **conf, log_level=0))


def _require(s: CommonSettings, topic: str, timeout: float) -> None:
    """Exit KAFKA naming the broker when it cannot be reached, FAILED naming the topic when it is missing."""
    consumer = _quiet_consumer(s)
    try:
        md = consumer.list_topics(topic, timeout=min(timeout, 10.0))
    except KafkaException as exc:
        click.echo(f"error: cannot reach Kafka at {s.kafka_bootstrap}: {exc.args[0].str()}", err=True)
        sys.exit(exitcodes.KAFKA)
    finally:
        consumer.close()
    found = md.topics.get(topic)
    if found is None or found.error is not None:
        click.echo(f"error: no topic {topic} on {s.kafka_bootstrap} (set --topic-models)", err=True)
        sys.exit(exitcodes.FAILED)


def _versions(s: CommonSettings, timeout: float) -> list[ModelVersion]:
    """The versions the scorers would accept (the trust settings apply), newest last."""
    return _registry(s, timeout)[0]


def _registry(s: CommonSettings, timeout: float) -> tuple[list[ModelVersion], ModelControl]:
    """The versions the scorers would accept, newest last, and the newest promotion and pin requests."""
    _require(s, s.topic_models, timeout)
    controls: list[tuple[bytes, bytes | None]] = []
    try:
        versions = read_versions(
            s.kafka_bootstrap, s.topic_models, timeout=timeout, trust=ModelTrust.from_settings(s), controls=controls
        )
    except KafkaException as exc:
        click.echo(f"error: cannot read {s.topic_models}: {exc.args[0].str()}", err=True)
        sys.exit(exitcodes.KAFKA)
    return versions, ModelControl.of(controls)


def _healthy(versions: list[ModelVersion]) -> dict[int, bool]:
    return {mv.version: unhealthy_reason(mv.metadata) is None for mv in versions}


def _health(mv: ModelVersion) -> str:
    """``ok``, ``held: <status>`` (training not ok: champion only on request) or ``unknown`` (no health check)."""
    reason = unhealthy_reason(mv.metadata)
    if reason is not None:
        return f"held: {reason}"
    health = mv.metadata.get("training_health")
    return "ok" if isinstance(health, dict) and health.get("status") == "ok" else "unknown"


def serving(s: CommonSettings, timeout: float = 10.0) -> dict[int, set[str]]:
    """{version: roles} seen in the newest scores of each partition (the scorers' own record of what
    they serve: every score names its model version, and a challenger's scores say so)."""
    consumer = _quiet_consumer(s)
    out: dict[int, set[str]] = {}
    try:
        md = consumer.list_topics(s.topic_scores, timeout=timeout)
        topic = md.topics.get(s.topic_scores)
        if topic is None or topic.error is not None:
            return out
        tail = []
        for p in sorted(topic.partitions):
            low, high = watermarks(consumer, TopicPartition(s.topic_scores, p), timeout)
            if high > low:
                tail.append((TopicPartition(s.topic_scores, p, max(low, high - SERVING_TAIL)), high))
        if not tail:
            return out
        consumer.assign([tp for tp, _ in tail])
        ends = {tp.partition: high for tp, high in tail}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                if m.error():
                    continue
                try:
                    score = json.loads(m.value())
                    out.setdefault(int(score["model_version"]), set()).add(
                        "challenger" if score.get("challenger") else "champion"
                    )
                except (ValueError, KeyError, TypeError):
                    continue
            positions = consumer.position([TopicPartition(s.topic_scores, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] for tp in positions):
                break
    finally:
        consumer.close()
    return out


def _row(mv: ModelVersion, roles: set[str], rule: str = "-") -> dict:
    meta = mv.metadata
    source = meta.get("source") or {}
    losses = (meta.get("metrics") or {}).get("val_loss") or (meta.get("metrics") or {}).get("loss") or []
    return {
        "version": mv.version,
        "parent": meta.get("parent_version"),
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(meta["created_at"]))
        if isinstance(meta.get("created_at"), int | float)
        else "",
        "model": meta.get("model", ""),
        "records": meta.get("record_count"),
        "source": source.get("topic", ""),
        "health": _health(mv),
        "final_loss": round(float(losses[-1]), 6) if losses else None,
        "rule": rule,
        "serving": ",".join(sorted(roles)) or "-",
    }


def _table(rows: list[dict]) -> str:
    if not rows:
        return "no model versions"
    columns = list(rows[0])
    cells = [[("" if r[c] is None else str(r[c])) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


_common = [
    click.option("--kafka-bootstrap", default=None, help="Kafka bootstrap servers (env STREAMTRAIN_KAFKA_BOOTSTRAP)."),
    click.option("--topic-models", default=None, help="The models topic (env STREAMTRAIN_TOPIC_MODELS)."),
    click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to read the topics."),
]


def _with_common(f):
    for option in reversed(_common):
        f = option(f)
    return f


@click.group()
def group() -> None:
    """Model versions on the models topic: list, show, export, promote, pin, unpin, rollback.

    Reads only what the scorers would accept: with STREAMTRAIN_MODEL_VERIFY_KEYS set, unsigned or
    wrongly signed versions are not listed.
    """


@group.command("list")
@_with_common
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version instead of a table.")
@click.pass_context
def list_versions(ctx, kafka_bootstrap, topic_models, timeout, as_json) -> None:
    """Every version, oldest first: parent, creation time, model, training records and source topic,
    training health (ok, or held: training not ok), last loss, which version the scorers' rule serves
    (RULE: serves, or serves (pinned)), and whether the newest scores come from it (SERVING: champion or
    challenger)."""
    s = _settings(ctx, kafka_bootstrap, topic_models)
    versions, control = _registry(s, timeout)
    served = serving_version(_healthy(versions), control)
    label = "serves (pinned)" if served is not None and served == control.pinned else "serves"
    roles = serving(s, min(timeout, 10.0))
    rows = [_row(mv, roles.get(mv.version, set()), label if mv.version == served else "-") for mv in versions]
    click.echo("\n".join(json.dumps(r) for r in rows) if as_json else _table(rows))


def _one(s: CommonSettings, version: int, timeout: float) -> ModelVersion:
    found = {mv.version: mv for mv in _versions(s, timeout)}
    if version not in found:
        have = ", ".join(map(str, sorted(found))) or "none"
        click.echo(f"error: version {version} is not on {s.topic_models} (versions: {have})", err=True)
        sys.exit(exitcodes.FAILED)
    return found[version]


@group.command("show")
@click.argument("version", type=click.IntRange(min=1))
@_with_common
@click.pass_context
def show(ctx, version, kafka_bootstrap, topic_models, timeout) -> None:
    """The manifest of VERSION as JSON: lineage (parent version, the exact topic, partitions and offsets
    it trained on), configuration, normalisation, threshold rule, training health and metrics."""
    s = _settings(ctx, kafka_bootstrap, topic_models)
    mv = _one(s, version, timeout)
    click.echo(json.dumps({**mv.metadata, "attachments": sorted(mv.attachments)}, indent=2, sort_keys=True))


@group.command("export")
@click.argument("version", type=click.IntRange(min=1))
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@_with_common
@click.pass_context
def export(ctx, version, directory, kafka_bootstrap, topic_models, timeout) -> None:
    """Write VERSION to DIRECTORY: the Keras artefact (model.keras), its ONNX graph (model.onnx) when it has
    one, other attachments, and manifest.json."""
    s = _settings(ctx, kafka_bootstrap, topic_models)
    mv = _one(s, version, timeout)
    directory.mkdir(parents=True, exist_ok=True)
    written = {"model.keras": mv.artefact, "manifest.json": json.dumps(mv.metadata, indent=2).encode()}
    for name, data in mv.attachments.items():
        written["model.onnx" if name == ONNX_ATTACHMENT else f"{name}.bin"] = data
    for name, data in written.items():
        (directory / name).write_bytes(data)
    click.echo(f"version {version}: {', '.join(sorted(written))} written to {directory}")


@group.command("promote")
@click.argument("version", type=click.IntRange(min=1))
@_with_common
@click.pass_context
def promote(ctx, version, kafka_bootstrap, topic_models, timeout) -> None:
    """Ask the running scorers (both engines) to make VERSION their champion: a challenger, or a version held
    back because its training was not healthy. The request is a control record on the models topic; a
    scorer holding VERSION switches between two batches and logs it, and a restarted scorer reads the
    request again, so a held version promoted this way stays champion."""
    s = _settings(ctx, kafka_bootstrap, topic_models)
    _one(s, version, timeout)
    _request(s, promote_record(version))
    click.echo(f"promotion of version {version} requested on {s.topic_models}")


def _request(s: CommonSettings, record: tuple[bytes, bytes]) -> None:
    """Write one control record to the models topic, where every running scorer (and every restarted one)
    reads it; exit KAFKA saying why when the broker refuses it (an identity that may not write the topic)."""
    key, value = record
    try:
        produce_one(s.kafka_bootstrap, s.topic_models, key, value)
    except DeliveryFailed as exc:
        click.echo(f"error: the request was not written, nothing changes: {exc}", err=True)
        sys.exit(exitcodes.KAFKA)


@group.command("pin")
@click.argument("version", type=click.IntRange(min=1))
@_with_common
@click.pass_context
def pin(ctx, version, kafka_bootstrap, topic_models, timeout) -> None:
    """Ask the running scorers (both engines) to serve VERSION as champion and stay on it: it may be older
    than the champion or held back for its training health. Newer versions are then noted in a log line and
    the metric streamtrain_scorer_versions_not_served_total, not served, until `streamtrain models unpin`.
    The pin is a control record on the models topic: a restarted scorer reads it again; a scorer that does
    not hold VERSION (refused as corrupt or unsigned) refuses the pin and keeps serving."""
    s = _settings(ctx, kafka_bootstrap, topic_models)
    _one(s, version, timeout)
    _request(s, pin_record(version))
    click.echo(f"pin of version {version} requested on {s.topic_models}")


@group.command("unpin")
@_with_common
@click.pass_context
def unpin(ctx, kafka_bootstrap, topic_models, timeout) -> None:
    """Cancel a pin: the scorers return to their rule (the newest healthy version, or a newer promoted one)."""
    s = _settings(ctx, kafka_bootstrap, topic_models)
    versions, control = _registry(s, timeout)
    _request(s, pin_record(None))
    served = serving_version(_healthy(versions), ModelControl(promoted=control.promoted))
    was = f" (was pinned to {control.pinned})" if control.pinned is not None else " (nothing was pinned)"
    click.echo(f"unpin requested on {s.topic_models}{was}; the rule serves version {served}")


@group.command("rollback")
@_with_common
@click.pass_context
def rollback(ctx, kafka_bootstrap, topic_models, timeout) -> None:
    """Pin the newest healthy version older than the one the scorers serve now (by their rule: the pin, a
    promotion, or the newest healthy version). Exits 1 when there is none; `streamtrain models unpin`
    returns to the newest."""
    s = _settings(ctx, kafka_bootstrap, topic_models)
    versions, control = _registry(s, timeout)
    healthy = _healthy(versions)
    served = serving_version(healthy, control)
    target = rollback_target(healthy, control)
    if target is None:
        have = ", ".join(f"{v}{'' if ok else ' (held)'}" for v, ok in sorted(healthy.items())) or "none"
        click.echo(
            f"error: nothing to roll back to: no healthy version older than {served} on {s.topic_models}"
            f" (versions: {have})",
            err=True,
        )
        sys.exit(exitcodes.FAILED)
    _request(s, pin_record(target))
    click.echo(f"rollback from version {served} to {target}: pin of version {target} requested on {s.topic_models}")
