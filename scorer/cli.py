"""`streamtrain score`: live scoring with hot model updates (or a promotion request)."""

from __future__ import annotations

import json
import sys

import click

from streamtrain import exitcodes
from streamtrain.kafka import DeliveryFailed, produce_one, require_topics
from streamtrain.lifecycle import StopFlag
from streamtrain.scorer.app import Scorer, ScoreSettings
from streamtrain.scorer.models import promote_record
from streamtrain.settings import field_option, load
from streamtrain.start_position import START_AT_HELP


@click.command("score")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092).")
@field_option(ScoreSettings, "model_verify_keys", metavar="KEYS")
@field_option(ScoreSettings, "model_max_version", type=int)
@click.option(
    "--engine",
    type=click.Choice(["python", "kafka-streams"]),
    help="python (default) or kafka-streams: the JVM scorer (Kafka Streams + ONNX Runtime, exactly once), "
    "built with Maven on first use.",
)
@click.option("--group-id", help="Consumer group shared by scorer replicas.")
@click.option("--batch-size", type=int, help="Most records per micro-batch (default 512).")
@click.option(
    "--challenger/--no-challenger", default=None, help="Score new versions in shadow as challenger until promoted."
)
@click.option("--promote-after", type=int, help="Auto-promote a challenger after N shadow records (0 = never).")
@click.option("--promote-min-agreement", type=float, help="Agreement needed for auto-promotion (default 0.95).")
@click.option(
    "--guarantee",
    type=click.Choice(["exactly_once", "at_least_once"]),
    help="exactly_once (default): scores and offsets in one Kafka transaction; at_least_once: no "
    "transactions, a crash may re-score records.",
)
@click.option("--start-at", type=click.Choice(["committed", "earliest", "latest"]), help=START_AT_HELP)
@click.option(
    "--transaction-interval-ms", type=int, help="exactly_once: longest time a transaction stays open (default 100 ms)."
)
@click.option(
    "--instance-id", help="Name of this replica in logs, scores and its transactional id (default: host name)."
)
@click.option(
    "--promote",
    "promote_version",
    type=int,
    help="Ask running scorers to promote this challenger (or held, unhealthy) version, then exit.",
)
@click.option("--batch", "batch_mode", is_flag=True, help="Score a fixed range offline through tf.data, then exit.")
@click.option("--max-records", type=int, help="--batch: records to score (default: the whole topic).")
@click.option("--from-end", is_flag=True, help="--batch: the newest records instead of the oldest.")
@click.option("--model-version", type=int, help="--batch: model version (default: newest).")
@click.option("--output-topic", help="--batch: where scores go (default: <scores topic>.batch).")
@click.option("--metrics-port", type=int, help="Port of /metrics, /healthz, /readyz (0 = off).")
@click.option(
    "--model-wait", "model_wait_s", type=float, help=f"Exit with code {exitcodes.NO_MODEL} if no model arrives in time."
)
@click.option("--topic-features", help="Features topic to score.")
@click.option("--topic-sequences", help="Sequences topic to score (models with windowed input).")
@click.option("--topic-scores", help="Scores topic to write.")
@click.option("--topic-models", help="Models topic to follow.")
@click.pass_context
def command(ctx, promote_version, batch_mode, max_records, from_end, model_version, output_topic, **given) -> None:
    """Score the features topic with the newest model, switching versions live.

    The newest valid version on the models topic is loaded at start; each new version is
    loaded and warmed in the background and switched in between two micro-batches. A
    version that cannot be loaded is refused and the current one keeps serving; one whose training
    was not healthy is held back until promoted (`streamtrain models promote`). By default
    scores and consumed offsets commit in one Kafka transaction (exactly once for readers with
    isolation.level=read_committed); --guarantee at_least_once commits offsets only after the
    scores are delivered. Stops cleanly on SIGTERM.

    --engine kafka-streams runs the same scoring as a Kafka Streams application (scorer/streams)
    with exactly-once processing; it needs Java 17 and Maven, and the model versions' ONNX export.
    """
    settings = load(
        ScoreSettings, **(ctx.obj or {}).get("log", {}), **{k: v for k, v in given.items() if v is not None}
    )
    require_topics(
        settings,
        [settings.topic_models]
        if promote_version is not None or batch_mode
        else [settings.topic_models, settings.topic_scores, settings.topic_deadletter],
    )
    if promote_version is not None:
        key, value = promote_record(promote_version)
        try:
            produce_one(settings.kafka_bootstrap, settings.topic_models, key, value)
        except DeliveryFailed as exc:
            click.echo(f"error: the promotion was not written: {exc}", err=True)
            sys.exit(exitcodes.KAFKA)
        click.echo(f"promotion of version {promote_version} requested on {settings.topic_models}")
        return
    if batch_mode:
        from streamtrain.scorer.batch import score_range

        try:
            summary = score_range(
                settings,
                max_records=max_records,
                from_end=from_end,
                version=model_version,
                output_topic=output_topic or f"{settings.topic_scores}.batch",
            )
        except (ValueError, KeyError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exitcodes.CONFIG)
        click.echo(json.dumps(summary, indent=2))
        return
    if settings.engine == "kafka-streams":
        from streamtrain.scorer.streams_engine import BuildError, exec_scorer

        try:
            exec_scorer(settings)
        except BuildError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exitcodes.CONFIG)
    sys.exit(Scorer(settings, StopFlag().install()).run())
