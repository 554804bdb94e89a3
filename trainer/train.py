"""Train the anomaly model from the features topic and publish it as the next model version.

Steps: resolve the exact offset range -> learn normalization from the stream (one pass) ->
train a Keras dense autoencoder on a ``tf.data`` pipeline that re-reads Kafka each epoch ->
choose the threshold from the training reconstruction errors -> publish artefact + metadata.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
from confluent_kafka import Producer
from pydantic import Field

from streamtrain import logs
from streamtrain.kafka import producer_config
from streamtrain.kafka_dataset import KafkaSource, SourceRange, infer_features, resolve_range
from streamtrain.model import ARTEFACT_FORMAT, reconstruction_error, save_artefact
from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.onnx_export import ONNX_ATTACHMENT, NotExportable, export_scoring_graph
from streamtrain.settings import CommonSettings

log = logs.get("trainer")


class TrainSettings(CommonSettings):
    """Settings of `streamtrain train` (env prefix STREAMTRAIN_)."""

    train_records: int | None = Field(20000, ge=1, description="Records to train on (the newest with from_end)")
    from_end: bool = Field(False, description="Train on the newest records instead of the oldest")
    since_last: bool = Field(False, description="Start where the newest published version's range ended")
    since_ms: int | None = Field(None, description="Only records with a timestamp at or after this (epoch ms)")
    until_ms: int | None = Field(None, description="Only records with a timestamp before this (epoch ms)")
    features: str | None = Field(None, description="Comma-separated feature names (default: numeric fields found)")
    epochs: int = Field(20, ge=1, description="Passes over the same offset range")
    batch_size: int = Field(256, ge=1, description="Rows per training step")
    layers: str = Field("16,4,16", description="Hidden layer widths of the autoencoder, comma-separated")
    learning_rate: float = Field(0.005, gt=0, description="Adam learning rate")
    cache: bool = Field(False, description="Cache the first read in memory instead of re-reading Kafka per epoch")
    validation_fraction: float = Field(0.1, ge=0, lt=0.5, description="Share of each batch held out for validation")
    threshold_k: float = Field(10.0, gt=0, description="Threshold = median + k * MAD of training errors")
    seed: int = Field(7, description="Seed for weights and shuffling")
    tensorboard_dir: Path | None = Field(None, description="TensorBoard logs go here (default: none)")
    min_records: int = Field(500, ge=1, description="Refuse to train on fewer usable records")
    backend: str = Field("confluent", description="confluent (default) or tfio (tensorflow-io's Kafka dataset)")


class TrainError(RuntimeError):
    pass


def build_autoencoder(n_features: int, layers: list[int], learning_rate: float, seed: int):
    import keras  # noqa: PLC0415
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((n_features,), name="features")
    x = inputs
    for i, width in enumerate(layers):
        x = keras.layers.Dense(width, activation="tanh" if i != len(layers) // 2 else "linear", name=f"dense_{i}")(x)
    outputs = keras.layers.Dense(n_features, name="reconstruction")(x)
    model = keras.Model(inputs, outputs, name="autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def stream_moments(source: KafkaSource) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and standard deviation of every feature, in one streaming pass over the range."""
    n, total, total_sq = 0, None, None
    for x, _ in source.batches():
        x64 = x.astype(np.float64)
        total = x64.sum(0) if total is None else total + x64.sum(0)
        total_sq = (x64 ** 2).sum(0) if total_sq is None else total_sq + (x64 ** 2).sum(0)
        n += len(x)
    if n == 0:
        return np.zeros(0), np.ones(0), 0
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 0.0))
    return mean, np.where(std > 1e-9, std, 1.0), n


def robust_threshold(errors: np.ndarray, k: float) -> float:
    med = float(np.median(errors))
    mad = float(np.median(np.abs(errors - med))) * 1.4826
    return med + k * max(mad, 1e-9)


def train_once(s: TrainSettings, rng: SourceRange | None = None, version: int | None = None,
               parent: int | None = None, publish: bool = True) -> dict:
    """Train one version; returns its metadata (published unless ``publish`` is False)."""
    import tensorflow as tf  # noqa: PLC0415

    t_start = time.monotonic()
    if rng is None:
        after = None
        if s.since_last:
            previous = read_versions(s.kafka_bootstrap, s.topic_models)
            if previous:
                after = SourceRange.from_dict(previous[-1].metadata["source"])
        rng = resolve_range(s.kafka_bootstrap, s.topic_features, max_records=s.train_records, newest=s.from_end,
                            after=after, since_ms=s.since_ms, until_ms=s.until_ms)
    if rng.records < s.min_records:
        raise TrainError(f"only {rng.records} records in range on {s.topic_features} (need {s.min_records}); "
                         "let more data arrive or lower --min-records")
    features = [f.strip() for f in s.features.split(",")] if s.features else infer_features(s.kafka_bootstrap, rng)
    if not features:
        raise TrainError(f"no numeric feature fields found on {s.topic_features}")
    layers = [int(w) for w in s.layers.split(",") if w.strip()]
    log.info("training_range", topic=rng.topic, partitions=rng.as_dict()["partitions"], records=rng.records,
             features=features)

    source = KafkaSource(s.kafka_bootstrap, rng, features)
    mean, std, n_rows = stream_moments(source)
    if n_rows < s.min_records:
        raise TrainError(f"only {n_rows} usable records ({source.skipped} skipped) in range; need {s.min_records}")
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)

    def normalize(x, y):
        return (x - mean32) / std32, (y - mean32) / std32

    if s.backend == "tfio":
        from trainer.tfio_source import tfio_dataset  # noqa: PLC0415
        ds = tfio_dataset(s.kafka_bootstrap, rng, features, s.batch_size)
    else:
        ds = source.dataset(s.batch_size, cache=s.cache, shuffle=4096, seed=s.seed)
    ds = ds.map(normalize)
    val_every = int(round(1 / s.validation_fraction)) if s.validation_fraction else 0
    if val_every:
        def is_train(i, xy):
            return i % val_every != 0

        def is_validation(i, xy):
            return i % val_every == 0

        def drop_index(i, xy):
            return xy

        train_ds = ds.enumerate().filter(is_train).map(drop_index)
        val_ds = ds.enumerate().filter(is_validation).map(drop_index)
    else:
        train_ds, val_ds = ds, None

    model = build_autoencoder(len(features), layers, s.learning_rate, s.seed)
    callbacks = [_ProgressLog(s.epochs)]
    if s.tensorboard_dir:
        import keras  # noqa: PLC0415
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(s.tensorboard_dir / f"v{version or 'next'}")))
    reads_before = source.reads
    t_fit = time.monotonic()
    history = model.fit(train_ds, validation_data=val_ds, epochs=s.epochs, verbose=0, callbacks=callbacks)
    fit_seconds = time.monotonic() - t_fit
    epochs_read = source.reads - reads_before

    # Threshold from the errors of the (normalized) training rows, read once more from Kafka.
    errors = []
    raw_sample = None
    for x, _ in source.batches():
        if raw_sample is None:
            raw_sample = x[:64]
        xn = (x - mean32) / std32
        errors.append(reconstruction_error(xn, model(xn, training=False).numpy()))
    errors = np.concatenate(errors)
    threshold = robust_threshold(errors, s.threshold_k)

    if publish:
        previous = read_versions(s.kafka_bootstrap, s.topic_models)
        if version is None:
            version = max((mv.version for mv in previous), default=0) + 1
        if parent is None and previous:
            parent = previous[-1].version
    meta = {
        "version": version,
        "parent_version": parent,
        "created_at": time.time(),
        "created_by": socket.gethostname(),
        "format": ARTEFACT_FORMAT,
        "model": "dense_autoencoder",
        "source": rng.as_dict(),
        "record_count": int(n_rows),
        "skipped_records": int(source.skipped),
        "feature_names": features,
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "threshold": float(threshold),
        "threshold_rule": f"median + {s.threshold_k} * MAD of training reconstruction errors",
        "training_anomaly_rate": float((errors > threshold).mean()),
        "config": {"layers": layers, "epochs": s.epochs, "batch_size": s.batch_size,
                   "learning_rate": s.learning_rate, "seed": s.seed, "validation_fraction": s.validation_fraction,
                   "threshold_k": s.threshold_k, "backend": s.backend, "cache": s.cache},
        "metrics": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "kafka_reads_during_fit": epochs_read,
        "train_seconds": round(time.monotonic() - t_start, 2),
        "fit_seconds": round(fit_seconds, 3),
        "records_per_second": round(n_rows * s.epochs / max(time.monotonic() - t_start, 1e-6), 1),
    }
    if publish:
        producer = Producer(producer_config(s.kafka_bootstrap, **{"message.max.bytes": 2 * 1024 * 1024}))
        publish_model(producer, s.topic_models, save_artefact(model), meta,
                      attachments=_exports(model, mean32, std32, raw_sample))
        log.info("model_published", version=version, parent_version=parent, topic=s.topic_models,
                 records=n_rows, threshold=round(threshold, 6), final_loss=meta["metrics"]["loss"][-1],
                 seconds=meta["train_seconds"])
    meta["_model"] = model
    return meta


def _exports(model, mean32, std32, sample) -> dict[str, bytes]:
    """The same model for scorers outside Python (the Kafka Streams scorer reads the ONNX graph)."""
    try:
        return {ONNX_ATTACHMENT: export_scoring_graph(model, mean32, std32, check_rows=sample)}
    except NotExportable as exc:
        log.warning("onnx_not_exported", reason=str(exc))
        return {}


class _ProgressLog:
    """Keras callback that writes one structured line per epoch."""

    def __new__(cls, epochs: int):
        import keras  # noqa: PLC0415

        class Progress(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs_=None):
                log.info("epoch_done", epoch=epoch + 1, of=epochs,
                         **{k: round(float(v), 6) for k, v in (logs_ or {}).items()})

        return Progress()


def reproduce(s: TrainSettings, version: int) -> dict:
    """Retrain a published version from its metadata: same offsets, features, config, seed."""
    versions = {mv.version: mv for mv in read_versions(s.kafka_bootstrap, s.topic_models)}
    if version not in versions:
        raise TrainError(f"version {version} is not on {s.topic_models} (have {sorted(versions)})")
    meta = versions[version].metadata
    cfg = meta["config"]
    s2 = s.model_copy(update={
        "features": ",".join(meta["feature_names"]), "epochs": cfg["epochs"], "batch_size": cfg["batch_size"],
        "layers": ",".join(str(w) for w in cfg["layers"]), "learning_rate": cfg["learning_rate"],
        "seed": cfg["seed"], "validation_fraction": cfg["validation_fraction"], "threshold_k": cfg["threshold_k"],
        "topic_features": meta["source"]["topic"]})
    again = train_once(s2, SourceRange.from_dict(meta["source"]), version=version,
                       parent=meta.get("parent_version"), publish=False)
    return {"version": version, "record_count": (meta["record_count"], again["record_count"]),
            "normalization_equal": np.allclose(meta["normalization"]["mean"], again["normalization"]["mean"])
            and np.allclose(meta["normalization"]["std"], again["normalization"]["std"]),
            "threshold": (meta["threshold"], again["threshold"]),
            "final_loss": (meta["metrics"]["loss"][-1], again["metrics"]["loss"][-1])}

