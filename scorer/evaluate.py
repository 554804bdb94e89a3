"""`streamtrain evaluate`: quality of the scores topic against the ground truth it carries."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import click

from streamtrain import exitcodes, logs
from streamtrain.kafka import TopicStalled, iter_topic
from streamtrain.quality import evaluate, format_devices, format_health, format_table, training_ranges
from streamtrain.settings import CommonSettings, load

log = logs.get("evaluate")

#: Records between two progress lines on stderr.
PROGRESS_EVERY = 100_000

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float | None = None) -> int:
    """Epoch milliseconds of ``text``: an ISO 8601 time (UTC when it names no zone) or a duration back from
    ``now`` (epoch seconds, the clock when None) such as ``90s``, ``15m``, ``2h``, ``7d``, ``1w``.
    Raises ValueError on anything else."""
    text = text.strip()
    if m := _DURATION.fullmatch(text):
        back = float(m.group(1)) * _UNIT_S[m.group(2)]
        return round(((time.time() if now is None else now) - back) * 1000)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (2026-12-07T10:00:00Z) nor a duration back from now (15m, 2h, 7d)"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return round(at.timestamp() * 1000)


class TimeParam(click.ParamType):
    """``parse_time`` as a click option type: anything else is a usage error (exit 2)."""

    name = "TIME"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def describe_range(since_ms: int | None, until_ms: int | None) -> str:
    """The range in words, for messages: "" for the whole topic."""

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    if since_ms is None and until_ms is None:
        return ""
    return f" from {iso(since_ms) if since_ms is not None else 'the beginning'} to {iso(until_ms) if until_ms is not None else 'the end'}"


class ScoreStream:
    """The score dicts of ``messages``, one at a time, never held: counts the records read (a line on stderr
    every ``every``, so stdout stays the result) and those that are not a JSON object (logged, counted in
    ``undecodable``, left out)."""

    def __init__(self, messages: Iterable, topic: str, every: int = PROGRESS_EVERY) -> None:
        self.messages, self.topic, self.every = messages, topic, every
        self.read = self.undecodable = 0

    def __iter__(self) -> Iterator[dict]:
        for m in self.messages:
            self.read += 1
            if self.read % self.every == 0:
                click.echo(f"{self.topic}: {self.read} records read", err=True)
            try:
                s = json.loads(m.value())
            except (TypeError, ValueError) as exc:
                s, error = None, str(exc)
            else:
                error = "not a JSON object"
            if isinstance(s, dict):
                yield s
                continue
            self.undecodable += 1
            log.warning("score_undecodable", topic=self.topic, partition=m.partition(), offset=m.offset(), error=error)


def read_scores(
    bootstrap: str,
    topic: str,
    timeout: float = 60.0,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> ScoreStream:
    """The score dicts of ``topic`` (optionally a time range of it) as they are read, without holding them;
    iterating raises ``TopicStalled`` when nothing arrives for ``timeout`` seconds while records are left."""
    return ScoreStream(iter_topic(bootstrap, topic, since_ms=since_ms, until_ms=until_ms, idle_timeout=timeout), topic)


def read_manifests(bootstrap: str, topic: str) -> dict[int, dict] | None:
    """{version: manifest} of every version on the models topic, deleted ones too (their scores are still on
    the scores topic); None when the topic cannot be read."""
    from confluent_kafka import KafkaException  # noqa: PLC0415

    from streamtrain.modelcodec import read_versions  # noqa: PLC0415

    try:
        return {mv.version: mv.metadata for mv in read_versions(bootstrap, topic, keep_deleted=True)}
    except KafkaException:
        return None


def training_health(manifests: dict[int, dict] | None, versions: list[int]) -> dict[int, dict]:
    """{version: its manifest's training_health} for the scored versions (empty when the models
    topic cannot be read; versions trained before the check existed say ``unknown``)."""
    if manifests is None:
        return {}
    return {
        v: manifests.get(v, {}).get("training_health") or {"status": "unknown", "problems": []}
        for v in sorted(versions)
        if v in manifests
    }


def _keeping(scores: Iterable[dict], kept: list[dict]) -> Iterator[dict]:
    for sc in scores:
        kept.append(sc)
        yield sc


@click.command("evaluate")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092).")
@click.option("--topic-scores", help="Scores topic to read (default streamtrain.scores).")
@click.option("--topic-models", help="Models topic (for the report's model table).")
@click.option("--per-device", is_flag=True, help="Also print quality per device, per device type and per baseline.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the HTML report (quality overall and per device, with plots) to this directory. The report "
    "needs every score in the range, so they are held in memory (without it the topic is streamed).",
)
@click.option(
    "--since",
    "since_ms",
    type=TimeParam(),
    help="Only scores whose record timestamp (on the scores topic: when the broker appended it) is at or "
    "after this time: ISO 8601 (UTC when no zone is given) "
    "or a duration back from now (15m, 2h, 7d). Default: the beginning of the topic.",
)
@click.option(
    "--until",
    "until_ms",
    type=TimeParam(),
    help="Only scores with a record timestamp at or before this time (same forms as --since). "
    "Default: the end of the topic when the read starts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def command(
    ctx, kafka_bootstrap, topic_scores, topic_models, per_device, as_json, report_dir, since_ms, until_ms
) -> None:
    """Precision, recall, F1, false- and missed-alarm rates per model version and overall.

    Streams the scores topic (read committed), from the beginning or --since, to the end offsets
    seen at the start or --until; progress goes to stderr every 100,000 records. The first score of each
    (device_id, seq) counts and later ones are reported as duplicates. Precision: share of
    alarms that were real; recall: share of anomalous readings caught; false-alarm rate:
    share of normal readings flagged; missed-alarm rate: share of anomalous readings missed.
    Below the table, each scored version's training health from its manifest (--topic-models):
    whether training converged and beat a constant predictor.

    Quality counts held-out readings only: a reading scored by a version that trained on it (its
    offset inside the range the version's manifest names) is left out, and the number left out is
    printed per version as trained_on.
    """
    given = {
        k: v
        for k, v in dict(kafka_bootstrap=kafka_bootstrap, topic_scores=topic_scores, topic_models=topic_models).items()
        if v
    }
    s = load(CommonSettings, **(ctx.obj or {}).get("log", {}), **given)
    from confluent_kafka import KafkaException  # noqa: PLC0415

    span = describe_range(since_ms, until_ms)
    manifests = read_manifests(s.kafka_bootstrap, s.topic_models)
    stream = read_scores(s.kafka_bootstrap, s.topic_scores, since_ms=since_ms, until_ms=until_ms)
    # Only the report needs the scores themselves; the figures are counted as they stream by.
    kept: list[dict] | None = [] if report_dir is not None and not as_json else None
    scores = stream if kept is None else _keeping(stream, kept)
    try:
        ev = evaluate(scores, training=training_ranges((manifests or {}).values()))
    except KafkaException as exc:
        click.echo(
            f"error: cannot read {s.topic_scores} from Kafka at {s.kafka_bootstrap}: {exc.args[0].str()}", err=True
        )
        sys.exit(exitcodes.KAFKA)
    except TopicStalled as exc:
        click.echo(f"error: {exc} after {stream.read} records; no result from part of the topic", err=True)
        sys.exit(exitcodes.KAFKA)
    except RuntimeError as exc:  # the topic does not exist
        click.echo(f"error: {exc} (set --topic-scores)", err=True)
        sys.exit(exitcodes.FAILED)
    if stream.undecodable:
        click.echo(
            f"warning: {stream.undecodable} records on {s.topic_scores} are not JSON scores (left out)", err=True
        )
    if stream.read == stream.undecodable:
        click.echo(f"no scores on {s.topic_scores}{span}", err=True)
        sys.exit(exitcodes.FAILED)
    if stream.read >= PROGRESS_EVERY and stream.read % PROGRESS_EVERY:  # the last progress line, unless just printed
        click.echo(f"{s.topic_scores}: {stream.read} records read{span}", err=True)
    if manifests is None:
        click.echo(f"warning: cannot read {s.topic_models}: readings the versions trained on are counted", err=True)
    scored = {v for v in [*ev.by_version, *ev.trained_on] if v is not None}
    health = training_health(manifests, sorted(scored))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "overall": ev.overall.as_dict(),
                    "by_version": {str(k): q.as_dict() for k, q in ev.by_version.items()},
                    "by_device": {k: q.as_dict() for k, q in ev.by_device.items()} if per_device else None,
                    "by_device_type": {k: q.as_dict() for k, q in ev.by_device_type.items()},
                    "by_baseline": {k: q.as_dict() for k, q in ev.by_baseline.items()},
                    "unlabelled": ev.unlabelled,
                    "duplicates": ev.duplicates,
                    "trained_on": {"total": sum(ev.trained_on.values()), "by_version": ev.trained_on},
                    "training_health": {str(v): h for v, h in health.items()},
                },
                indent=2,
            )
        )
        return
    click.echo(format_table(ev))
    if health:
        click.echo(format_health(health))
    if per_device:
        click.echo("")
        click.echo(format_devices(ev))
    if report_dir is not None:
        from streamtrain.scorer.report import write_report  # noqa: PLC0415

        models = [m for _, m in sorted((manifests or {}).items())]
        path = write_report(report_dir, kept or [], ev, models, f"StreamTrain quality: {s.topic_scores}")
        click.echo(f"report: {path}")
