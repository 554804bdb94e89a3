"""`streamtrain train`: train from Kafka, publish to the models topic (once or continuously)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from streamtrain import exitcodes, logs
from streamtrain.kafka import require_topics
from streamtrain.lifecycle import StopFlag
from streamtrain.settings import field_option, load
from streamtrain.trainer.distributed import run_local_workers
from streamtrain.trainer.plan import resolve_source_range
from streamtrain.trainer.train import TrainError, TrainSettings, reproduce, train_once

log = logs.get("trainer")


@click.command("train")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092).")
@field_option(TrainSettings, "model_signing_key_file", type=click.Path(dir_okay=False, path_type=Path))
@field_option(TrainSettings, "model_verify_keys", metavar="KEYS")
@field_option(TrainSettings, "model_max_version", type=int)
@field_option(TrainSettings, "model_keep_versions", type=int)
@click.option("--topic-features", help="Features topic to train from.")
@click.option("--topic-models", help="Models topic to publish to.")
@click.option("--max-records", "train_records", type=int, help="Records to train on (default 20000).")
@click.option("--from-end/--from-start", default=None, help="Newest records (default: oldest) of the topic.")
@click.option("--since-last", is_flag=True, default=None, help="Start where the newest published version ended.")
@click.option("--since-ms", type=int, help="Only records that arrived in Kafka at or after this time (epoch ms).")
@click.option("--until-ms", type=int, help="Only records that arrived in Kafka before this time (epoch ms).")
@click.option("--features", help="Comma-separated feature names (default: every numeric field found).")
@click.option(
    "--epochs",
    type=int,
    help="Epochs over the same offset range (default: 20, more for a small range; see --min-steps).",
)
@click.option(
    "--min-steps",
    type=int,
    help="Without --epochs: optimizer steps a run takes at least (default 1500), "
    "so a range of a few thousand records gets more epochs (at most 200).",
)
@click.option("--batch-size", type=int, help="Rows per step (default 256).")
@click.option("--layers", help="Dense model: hidden layer widths, e.g. 16,4,16.")
@click.option(
    "--model",
    "model_kind",
    type=click.Choice(["dense", "windowed"]),
    help="dense (default): single feature records; windowed: 1-D conv autoencoder over a device's last N "
    "readings from the sequences topic.",
)
@click.option(
    "--baselines",
    type=click.Choice(["global", "device"]),
    help="global (default): one normalization and threshold; device: per-device ones learned from the stream.",
)
@click.option("--threshold-k", type=float, help="Threshold = median + k * MAD of training errors (default 8).")
@click.option("--warmup-records", type=int, help="Records a device needs before its own baseline is used (default 50).")
@click.option("--smoothing", help="Windowed model: flag when k of the last m readings exceed the threshold, as k/m.")
@click.option(
    "--window-score",
    type=click.Choice(["input", "residual", "newest"]),
    help="Windowed model: input (default): alarm on the window mean of the normalized readings (scaled by its "
    "spread over the training windows) or on the newest reading's error; residual: the window mean of the "
    "reconstruction residuals instead; newest: the newest reading's error alone.",
)
@click.option(
    "--window-threshold-factor",
    type=float,
    help="Windowed model: window score threshold = factor x 99th percentile of the training windows' (default 4).",
)
@click.option(
    "--window-newest-k",
    type=float,
    help="Windowed model with a window score: newest reading's threshold = median + k * MAD (default 8; "
    "one channel: at least the 99th percentile).",
)
@click.option("--conv-filters", help="Windowed model: encoder filters, the last is the bottleneck (default 16,1).")
@click.option("--topic-sequences", help="Sequences topic the windowed model trains from.")
@click.option("--cache/--reread", default=None, help="Cache the first Kafka read instead of re-reading per epoch.")
@click.option("--backend", type=click.Choice(["confluent", "tfio"]), help="Kafka reader behind tf.data.")
@click.option("--readers", type=int, help="Partitions read in parallel, decoding ahead of training (default 3).")
@click.option(
    "--reader-process/--reader-threads",
    "reader_process",
    default=None,
    help="Read and decode Kafka in a child process, off the training step's GIL (default), or in threads.",
)
@click.option("--tensorboard-dir", type=click.Path(path_type=Path), help="Write TensorBoard logs here.")
@click.option("--continuous", is_flag=True, help="Retrain every --every-records new records or --every-seconds.")
@click.option(
    "--every-records", type=int, default=20000, show_default=True, help="Continuous: new records per version."
)
@click.option(
    "--every-seconds", type=float, default=0, show_default=True, help="Continuous: also retrain after this long."
)
@click.option("--reproduce", "reproduce_version", type=int, help="Retrain this version from its metadata and compare.")
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Train with N local worker processes (MultiWorkerMirroredStrategy), each reading its own "
    "partitions; the first publishes. With TF_CONFIG set, this process is one worker of that cluster.",
)
@click.pass_context
def command(ctx, continuous, every_records, every_seconds, reproduce_version, workers, **given) -> None:
    """Train the anomaly model from the features topic and publish it as a new version.

    The offset range is resolved once into exact per-partition offsets; tf.data re-reads that
    range from Kafka each epoch (or caches it with --cache). Normalization is learned from the
    stream and the threshold from the training errors; with --baselines device, per device,
    with the fleet's statistics as the fallback for devices without enough history. The version's metadata records the
    range, features, normalization, threshold, config and loss history.
    """
    s = load(TrainSettings, **(ctx.obj or {}).get("log", {}), **{k: v for k, v in given.items() if v is not None})
    require_topics(s, [s.topic_models])
    try:
        if workers > 1:
            if continuous:
                raise TrainError("--continuous trains with one worker")
            _local_workers(s, workers, reproduce_version)
            return
        if reproduce_version is not None:
            again = reproduce(s, reproduce_version)
            if not again.get("worker"):
                click.echo(json.dumps(again, indent=2, default=str))
            return
        if not continuous:
            meta = train_once(s)
            if meta.get("worker"):
                return  # a worker that is not the chief: the chief prints the version
            click.echo(json.dumps({k: meta[k] for k in ("version", "record_count", "threshold", "source")}))
            return
        _continuous(s, every_records, every_seconds)
    except TrainError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exitcodes.CONFIG)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exitcodes.CONFIG)


def _local_workers(s: TrainSettings, workers: int, reproduce_version: int | None) -> None:
    """N local processes of one cluster; the range is resolved here once so that all train on the same records."""
    if reproduce_version is None and not s.source_range:
        s = s.model_copy(update={"source_range": json.dumps(resolve_source_range(s).as_dict())})
    code, out = run_local_workers(
        s, workers, [] if reproduce_version is None else ["--reproduce", str(reproduce_version)]
    )
    click.echo(out, nl=False)
    if code:
        click.echo(f"error: a worker exited with {code}", err=True)
        sys.exit(code)


def _continuous(s: TrainSettings, every_records: int, every_seconds: float) -> None:
    from streamtrain.kafka_dataset import SourceRange, resolve_range
    from streamtrain.modelcodec import read_versions
    from streamtrain.modelsign import ModelTrust

    stop = StopFlag().install()
    s = s.model_copy(update={"since_last": True, "from_end": True})
    last = time.monotonic()
    log.info("continuous_training", every_records=every_records, every_seconds=every_seconds or None)
    while not stop.is_set():
        versions = read_versions(s.kafka_bootstrap, s.topic_models, trust=ModelTrust.from_settings(s))
        after = SourceRange.from_dict(versions[-1].metadata["source"]) if versions else None
        topic = s.topic_sequences if s.model_kind == "windowed" else s.topic_features
        fresh = resolve_range(s.kafka_bootstrap, topic, after=after).records
        due = fresh >= every_records or (
            every_seconds and time.monotonic() - last >= every_seconds and fresh >= s.min_records
        )
        if due:
            try:
                train_once(s.model_copy(update={"train_records": min(fresh, s.train_records or fresh)}))
            except TrainError as exc:
                log.warning("training_skipped", reason=str(exc))
            last = time.monotonic()
        else:
            stop.wait(2.0)
    log.info("continuous_training_stopped", reason=stop.signal_name)
