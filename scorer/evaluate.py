"""`streamtrain evaluate`: quality of the scores topic against the ground truth it carries."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from streamtrain import exitcodes
from streamtrain.kafka import read_topic
from streamtrain.quality import evaluate, format_devices, format_health, format_table, training_ranges
from streamtrain.settings import CommonSettings, load


def read_scores(bootstrap: str, topic: str, timeout: float = 60.0) -> list[dict]:
    out = []
    for m in read_topic(bootstrap, topic, timeout=timeout):
        try:
            out.append(json.loads(m.value()))
        except ValueError:
            continue
    return out


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


@click.command("evaluate")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092).")
@click.option("--topic-scores", help="Scores topic to read (default streamtrain.scores).")
@click.option("--topic-models", help="Models topic (for the report's model table).")
@click.option("--per-device", is_flag=True, help="Also print quality per device, per device type and per baseline.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the HTML report (quality overall and per device, with plots) to this directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def command(ctx, kafka_bootstrap, topic_scores, topic_models, per_device, as_json, report_dir) -> None:
    """Precision, recall, F1, false- and missed-alarm rates per model version and overall.

    Reads the scores topic from the beginning (read committed); the first score of each
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

    try:
        scores = read_scores(s.kafka_bootstrap, s.topic_scores)
    except KafkaException as exc:
        click.echo(
            f"error: cannot read {s.topic_scores} from Kafka at {s.kafka_bootstrap}: {exc.args[0].str()}", err=True
        )
        sys.exit(exitcodes.KAFKA)
    except RuntimeError as exc:  # the topic does not exist
        click.echo(f"error: {exc} (set --topic-scores)", err=True)
        sys.exit(exitcodes.FAILED)
    if not scores:
        click.echo(f"no scores on {s.topic_scores}", err=True)
        sys.exit(exitcodes.FAILED)
    manifests = read_manifests(s.kafka_bootstrap, s.topic_models)
    ev = evaluate(scores, training=training_ranges((manifests or {}).values()))
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
        path = write_report(report_dir, scores, ev, models, f"StreamTrain quality: {s.topic_scores}")
        click.echo(f"report: {path}")
