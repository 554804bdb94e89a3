"""`streamtrain models`: the model versions on the models topic, which ones the scorers serve, and the
verbs a user expects of a registry (list, show, export, promote)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streamtrain import exitcodes
from streamtrain.kafka import flush_or_raise, producer_config
from streamtrain.kafka.config import READER_GROUP, client_config
from streamtrain.kafka.reading import watermarks
from streamtrain.modelcodec import ModelVersion, read_versions
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
    _require(s, s.topic_models, timeout)
    try:
        return read_versions(s.kafka_bootstrap, s.topic_models, timeout=timeout, trust=ModelTrust.from_settings(s))
    except KafkaException as exc:
        click.echo(f"error: cannot read {s.topic_models}: {exc.args[0].str()}", err=True)
        sys.exit(exitcodes.KAFKA)


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


def _row(mv: ModelVersion, roles: set[str]) -> dict:
    meta = mv.metadata
    source = meta.get("source") or {}
    health = meta.get("training_health") or {}
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
        "health": health.get("status", "unknown") if isinstance(health, dict) else str(health),
        "final_loss": round(float(losses[-1]), 6) if losses else None,
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
    """Model versions on the models topic: list, show, export, promote.

    Reads only what the scorers would accept: with STREAMTRAIN_MODEL_VERIFY_KEYS set, unsigned or
    wrongly signed versions are not listed.
    """


@group.command("list")
@_with_common
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version instead of a table.")
@click.pass_context
def list_versions(ctx, kafka_bootstrap, topic_models, timeout, as_json) -> None:
    """Every version, oldest first: parent, creation time, model, training records and source topic,
    training health, last loss, and whether the newest scores come from it (champion or challenger)."""
    s = _settings(ctx, kafka_bootstrap, topic_models)
    versions = _versions(s, timeout)
    roles = serving(s, min(timeout, 10.0))
    rows = [_row(mv, roles.get(mv.version, set())) for mv in versions]
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
    from streamtrain.scorer.models import promote_record  # noqa: PLC0415 - the scorer's own record shape

    s = _settings(ctx, kafka_bootstrap, topic_models)
    _one(s, version, timeout)
    producer = Producer(producer_config(s.kafka_bootstrap))
    key, value = promote_record(version)
    producer.produce(s.topic_models, value, key=key)
    flush_or_raise(producer)
    click.echo(f"promotion of version {version} requested on {s.topic_models}")
