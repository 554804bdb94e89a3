"""Train the anomaly model from the features topic and publish it as the next model version.

Steps: resolve the exact offset range -> learn normalization from the stream (one pass) ->
train a Keras autoencoder on a ``tf.data`` pipeline that re-reads Kafka each epoch ->
choose the threshold from the training reconstruction errors -> publish artefact + metadata.

Two models: ``dense`` (one feature record at a time, from the features topic) and
``windowed`` (a causal 1-D convolutional autoencoder over a device's last N readings, from the
sequences topic the preprocessor builds). Two normalizations: ``global`` (one mean/std and
one threshold for the fleet) and ``device`` (each device's own mean/std and threshold from
its own training errors, after ``warmup_records``; the fleet's statistics as the fallback).
"""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Literal

import numpy as np
from confluent_kafka import Producer
from pydantic import Field

from streamtrain import logs
from streamtrain.kafka import producer_config
from streamtrain.baselines import DeviceBaselines
from streamtrain.kafka_dataset import KafkaSource, SourceRange, infer_features, infer_window, resolve_range
from streamtrain.model import ARTEFACT_FORMAT, reconstruction_error, save_artefact
from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.onnx_export import ONNX_ATTACHMENT, NotExportable, export_scoring_graph
from streamtrain.settings import CommonSettings
from streamtrain.trainer.statistics import (DEFAULT_EPOCHS, Moments, baselines_from_rows, device_thresholds, epochs_for,
                                newest_rows, robust_threshold, training_health)

log = logs.get("trainer")


class TrainSettings(CommonSettings):
    """Settings of `streamtrain train` (env prefix STREAMTRAIN_)."""

    train_records: int | None = Field(20000, ge=1, description="Records to train on (the newest with from_end)")
    from_end: bool = Field(False, description="Train on the newest records instead of the oldest")
    since_last: bool = Field(False, description="Start where the newest published version's range ended")
    since_ms: int | None = Field(None, description="Only records that arrived in Kafka at or after this (epoch ms)")
    until_ms: int | None = Field(None, description="Only records that arrived in Kafka before this (epoch ms)")
    features: str | None = Field(None, description="Comma-separated feature names (default: numeric fields found)")
    epochs: int | None = Field(None, ge=1, description="Passes over the same offset range; default: 20, or more "
                                                       "for a small range (see min_steps)")
    min_steps: int = Field(1500, ge=0, description="Without epochs: optimizer steps a run takes at least, so a small "
                                                   "range (a few hundred readings per device) still converges; at "
                                                   "most 200 epochs")
    batch_size: int = Field(256, ge=1, description="Rows per training step")
    layers: str = Field("16,4,16", description="Hidden layer widths of the autoencoder, comma-separated")
    learning_rate: float = Field(0.005, gt=0, description="Adam learning rate")
    cache: bool = Field(False, description="Cache the first read in memory instead of re-reading Kafka per epoch")
    validation_fraction: float = Field(0.1, ge=0, lt=0.5, description="Share of each batch held out for validation")
    threshold_k: float = Field(8.0, gt=0, description="Threshold = median + k * MAD of training errors")
    seed: int = Field(7, description="Seed for weights and shuffling")
    tensorboard_dir: Path | None = Field(None, description="TensorBoard logs go here (default: none)")
    min_records: int = Field(500, ge=1, description="Refuse to train on fewer usable records")
    backend: str = Field("confluent", description="confluent (default) or tfio (tensorflow-io's Kafka dataset)")
    model_kind: Literal["dense", "windowed"] = Field(
        "dense", description="dense: autoencoder on single feature records (features topic); windowed: 1-D conv "
                             "autoencoder on a device's last N readings (sequences topic)")
    baselines: Literal["global", "device"] = Field(
        "global", description="global: one normalization and threshold for the fleet; device: per-device mean, std "
                              "and threshold learned from the stream, fleet-wide fallback for new devices")
    warmup_records: int = Field(50, ge=2, description="Training records a device needs before its own baseline is used")
    smoothing: str | None = Field(None, description="Windowed models: flag when k of the last m readings exceed "
                                                     "the threshold, as 'k/m' (e.g. 2/3); default off")
    conv_filters: str = Field("16,1", description="Windowed models: filters of the encoder's causal conv layers; "
                                                   "the last is the bottleneck")
    kernel_size: int = Field(5, ge=1, description="Windowed models: kernel size of the causal conv layers")


class TrainError(RuntimeError):
    pass


#: The manifest is one Kafka record (at most 2 MiB on the models topic): room for ~10,000 device baselines.
MAX_METADATA_BYTES = 1_800_000


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


def build_conv_autoencoder(window: int, n_features: int, filters: list[int], kernel_size: int, learning_rate: float,
                           seed: int):
    """Causal 1-D conv autoencoder: each reading is rebuilt from itself and the readings before it,
    through a narrow bottleneck, so its error at the newest step scores the newest reading."""
    import keras  # noqa: PLC0415
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((window, n_features), name="window")
    x = inputs
    for i, f in enumerate(filters):
        last = i == len(filters) - 1
        x = keras.layers.Conv1D(f, kernel_size, padding="causal", activation=None if last else "tanh",
                                name=f"encode_{i}")(x)
    for i, f in enumerate(reversed(filters[:-1])):
        x = keras.layers.Conv1D(f, kernel_size, padding="causal", activation="tanh", name=f"decode_{i}")(x)
    outputs = keras.layers.Conv1D(n_features, 1, name="reconstruction")(x)
    model = keras.Model(inputs, outputs, name="conv_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def parse_smoothing(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, m = (int(v) for v in text.split("/"))
    except ValueError:
        raise TrainError(f"smoothing {text!r}: expected k/m, e.g. 2/3") from None
    if not 1 <= k <= m:
        raise TrainError(f"smoothing {text!r}: need 1 <= k <= m")
    return k, m


def device_statistics(source: KafkaSource, warmup: int) -> tuple[DeviceBaselines, np.ndarray, np.ndarray, int, dict]:
    """Per-device location/scale (devices with >= ``warmup`` records), the fleet's mean/std, the row
    count and the scale floors applied (``streamtrain.trainer.statistics``), in one pass.

    Each reading counts once: a window contributes its newest row."""
    per_device: dict = {}
    for x, _, devices in source.batches_with_devices():
        rows = newest_rows(x).astype(np.float64)
        for d, row in zip(devices, rows):
            per_device.setdefault(d, []).append(row)
    return baselines_from_rows({d: np.asarray(v) for d, v in per_device.items()}, warmup,
                               len(source.feature_names))


def stream_moments(source: KafkaSource) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and standard deviation of every feature, in one streaming pass over the range."""
    n, total, total_sq = 0, None, None
    for x, _ in source.batches():
        x64 = newest_rows(x).astype(np.float64)
        total = x64.sum(0) if total is None else total + x64.sum(0)
        total_sq = (x64 ** 2).sum(0) if total_sq is None else total_sq + (x64 ** 2).sum(0)
        n += len(x)
    if n == 0:
        return np.zeros(0), np.ones(0), 0
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 0.0))
    return mean, np.where(std > 1e-9, std, 1.0), n


def train_once(s: TrainSettings, rng: SourceRange | None = None, version: int | None = None,
               parent: int | None = None, publish: bool = True) -> dict:
    """Train one version; returns its metadata (published unless ``publish`` is False)."""
    import tensorflow as tf  # noqa: PLC0415

    t_start = time.monotonic()
    windowed = s.model_kind == "windowed"
    per_device = s.baselines == "device"
    smoothing = parse_smoothing(s.smoothing)
    if smoothing and not windowed:
        raise TrainError("smoothing needs the windowed model (the window carries the last m readings)")
    if per_device and s.backend != "confluent":
        raise TrainError("per-device baselines need the confluent backend")
    topic = s.topic_sequences if windowed else s.topic_features
    if rng is None:
        after = None
        if s.since_last:
            previous = read_versions(s.kafka_bootstrap, s.topic_models)
            if previous:
                after = SourceRange.from_dict(previous[-1].metadata["source"])
        rng = resolve_range(s.kafka_bootstrap, topic, max_records=s.train_records, newest=s.from_end,
                            after=after, since_ms=s.since_ms, until_ms=s.until_ms)
    if rng.gone:
        log.warning("training_data_gone", topic=rng.topic, offsets_gone=rng.gone,
                    why="the range starts at the oldest retained record: older ones were deleted (retention?)")
    if rng.records < s.min_records:
        raise TrainError(f"only {rng.records} records in range on {rng.topic} (need {s.min_records}); "
                         "let more data arrive or lower --min-records")
    features = [f.strip() for f in s.features.split(",")] if s.features else infer_features(s.kafka_bootstrap, rng)
    if not features:
        raise TrainError(f"no numeric feature fields found on {rng.topic}")
    window = infer_window(s.kafka_bootstrap, rng) if windowed else None
    if windowed and not window:
        raise TrainError(f"{rng.topic} holds no sequence records; give the preprocessing spec a 'sequences' "
                         "section and point the trainer at its sequences topic")
    if smoothing and smoothing[1] > window:
        raise TrainError(f"smoothing over {smoothing[1]} readings needs windows of at least that many ({window})")
    layers = [int(w) for w in s.layers.split(",") if w.strip()]
    filters = [int(w) for w in s.conv_filters.split(",") if w.strip()]
    log.info("training_range", topic=rng.topic, partitions=rng.as_dict()["partitions"], records=rng.records,
             features=features, model=s.model_kind, baselines=s.baselines, window=window)

    source = KafkaSource(s.kafka_bootstrap, rng, features, window)
    baselines, floors = None, None
    if per_device:
        baselines, mean, std, n_rows, floors = device_statistics(source, s.warmup_records)
        if not baselines.index:
            raise TrainError(f"no device has {s.warmup_records} records in the range; lower --warmup-records "
                             "or train on more records")
    else:
        mean, std, n_rows = stream_moments(source)
    if n_rows < s.min_records:
        raise TrainError(f"only {n_rows} usable records ({source.skipped} skipped) in range; need {s.min_records}")
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)

    def per_device_normalize(x: np.ndarray, devices: list, fallback: bool = False):
        """(normalized inputs, row mask): rows of devices without a baseline are dropped, or use the fallback."""
        idx = np.asarray([baselines.index.get(d, -1) for d in devices], dtype=np.int64)
        own = idx >= 0
        mu = np.where(own[:, None], baselines.mean[np.maximum(idx, 0)], mean32).astype(np.float32)
        sd = np.where(own[:, None], baselines.std[np.maximum(idx, 0)], std32).astype(np.float32)
        if x.ndim == 3:
            mu, sd = mu[:, None, :], sd[:, None, :]
        xn = (x - mu) / sd
        return (xn, np.ones(len(x), bool)) if fallback else (xn[own], own)

    def normalize(x, y):
        return (x - mean32) / std32, (y - mean32) / std32

    epochs = epochs_for(s, int(baselines.records.sum()) if per_device else n_rows)
    # A small range given extra epochs (no --epochs) is read from Kafka once and cached: it is small.
    cache = s.cache or (s.epochs is None and epochs > DEFAULT_EPOCHS)
    if per_device:
        ds = source.dataset(s.batch_size, cache=cache, shuffle=4096, seed=s.seed,
                            transform=lambda x, devices: per_device_normalize(x, devices)[0])
    elif s.backend == "tfio":
        if windowed:
            raise TrainError("the windowed model reads sequences with the confluent backend")
        from streamtrain.trainer.tfio_source import tfio_dataset  # noqa: PLC0415
        ds = tfio_dataset(s.kafka_bootstrap, rng, features, s.batch_size).map(normalize)
    else:
        ds = source.dataset(s.batch_size, cache=cache, shuffle=4096, seed=s.seed).map(normalize)
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

    if windowed:
        model = build_conv_autoencoder(window, len(features), filters, s.kernel_size, s.learning_rate, s.seed)
    else:
        model = build_autoencoder(len(features), layers, s.learning_rate, s.seed)
    callbacks = [_ProgressLog(epochs)]
    if s.tensorboard_dir:
        import keras  # noqa: PLC0415
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(s.tensorboard_dir / f"v{version or 'next'}")))
    reads_before = source.reads
    t_fit = time.monotonic()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, callbacks=callbacks)
    fit_seconds = time.monotonic() - t_fit
    epochs_read = source.reads - reads_before

    def newest_errors(xn: np.ndarray) -> np.ndarray:
        e = reconstruction_error(xn, model(xn, training=False).numpy())
        return e[:, -1] if e.ndim == 2 else e

    # Thresholds from the errors of the (normalized) training inputs, read once more from Kafka.
    errors, fallback_errors, error_devices = [], [], []
    raw_sample = None  # rows the ONNX export is checked against
    moments = Moments()  # of the inputs as the network saw them: the constant predictor's error
    for x, _, devices in source.batches_with_devices():
        if raw_sample is None:
            raw_sample = x[:64]
        if per_device:
            xn, own = per_device_normalize(x, devices)
            errors.append(newest_errors(xn))
            error_devices += [d for d, keep in zip(devices, own) if keep]
            fallback_errors.append(newest_errors((x - mean32) / std32))
        else:
            xn = (x - mean32) / std32
            errors.append(newest_errors(xn))
        moments.add(xn)
    errors = np.concatenate(errors)
    health = training_health(history.history, moments.mean_variance())
    if health["status"] != "ok":
        log.warning("training_unhealthy", status=health["status"], problems=health["problems"],
                    final_loss=health["final_loss"], final_val_loss=health["final_val_loss"],
                    constant_predictor_loss=health["constant_predictor_loss"])
    if per_device:
        by_device: dict = {}
        for d, e in zip(error_devices, errors):
            by_device.setdefault(d, []).append(e)
        ids = sorted(baselines.index, key=baselines.index.get)
        baselines.threshold = device_thresholds([np.asarray(by_device[d]) for d in ids], s.threshold_k)
        threshold = robust_threshold(np.concatenate(fallback_errors), s.threshold_k)
        row_thresholds = np.asarray([baselines.threshold[baselines.index[d]] for d in error_devices])
        anomaly_rate = float((errors > row_thresholds).mean())
    else:
        threshold = robust_threshold(errors, s.threshold_k)
        anomaly_rate = float((errors > threshold).mean())

    if publish:
        previous = read_versions(s.kafka_bootstrap, s.topic_models)
        if version is None:
            version = max((mv.version for mv in previous), default=0) + 1
        if parent is None and previous:
            parent = previous[-1].version
    requires = (["device_baselines"] if per_device else []) + (["sequences"] if windowed else []) \
        + (["smoothing"] if smoothing else [])
    meta = {
        "version": version,
        "parent_version": parent,
        "created_at": time.time(),
        "created_by": socket.gethostname(),
        "format": ARTEFACT_FORMAT,
        "model": "conv_autoencoder" if windowed else "dense_autoencoder",
        "requires": requires,
        "input": {"kind": "sequences", "length": window} if windowed else {"kind": "features"},
        "source": rng.as_dict(),
        "record_count": int(n_rows),
        "skipped_records": int(source.skipped),
        "offsets_gone_before_range": int(rng.gone),
        "feature_names": features,
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "threshold": float(threshold),
        "threshold_rule": f"median + {s.threshold_k} * MAD of training reconstruction errors"
                          + (" (per device; this one is the fleet-wide fallback)" if per_device else ""),
        "training_anomaly_rate": anomaly_rate,
        "config": {"layers": layers, "epochs": s.epochs, "epochs_run": epochs, "min_steps": s.min_steps,
                   "batch_size": s.batch_size,
                   "learning_rate": s.learning_rate, "seed": s.seed, "validation_fraction": s.validation_fraction,
                   "threshold_k": s.threshold_k, "backend": s.backend, "cache": cache,
                   "model_kind": s.model_kind, "baselines": s.baselines, "warmup_records": s.warmup_records,
                   "smoothing": s.smoothing, "conv_filters": filters, "kernel_size": s.kernel_size},
        "metrics": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "training_health": health,
        "kafka_reads_during_fit": epochs_read,
        "train_seconds": round(time.monotonic() - t_start, 2),
        "fit_seconds": round(fit_seconds, 3),
        "records_per_second": round(n_rows * epochs / max(time.monotonic() - t_start, 1e-6), 1),
    }
    if per_device:
        meta["baselines"] = baselines.as_metadata()
        meta["scale_floors"] = {"rule": "scale >= max(resolution, fleet scale / 20); constant: fleet scale",
                                "raised": {kind: dict(zip(features, counts)) for kind, counts in floors.items()}}
    if smoothing:
        meta["smoothing"] = {"k": smoothing[0], "m": smoothing[1]}
    size = len(json.dumps(meta))
    if size > MAX_METADATA_BYTES:
        raise TrainError(f"model metadata of {size} bytes exceeds {MAX_METADATA_BYTES} (too many devices for one "
                         "version's baselines: train per device group)")
    if publish:
        producer = Producer(producer_config(s.kafka_bootstrap, **{"message.max.bytes": 2 * 1024 * 1024}))
        publish_model(producer, s.topic_models, save_artefact(model), meta,
                      attachments={} if requires else _exports(model, mean32, std32, raw_sample))
        log.info("model_published", version=version, parent_version=parent, topic=s.topic_models,
                 records=n_rows, threshold=round(threshold, 6), final_loss=meta["metrics"]["loss"][-1],
                 seconds=meta["train_seconds"], model=meta["model"], baselines=s.baselines,
                 training_health=health["status"],
                 devices=len(baselines.index) if baselines else None)
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
        "features": ",".join(meta["feature_names"]), "epochs": cfg.get("epochs_run", cfg["epochs"]), "batch_size": cfg["batch_size"],
        "layers": ",".join(str(w) for w in cfg["layers"]), "learning_rate": cfg["learning_rate"],
        "seed": cfg["seed"], "validation_fraction": cfg["validation_fraction"], "threshold_k": cfg["threshold_k"],
        "min_steps": cfg.get("min_steps", 0),  # versions from before min_steps trained exactly `epochs`
        **{k: cfg[k] for k in ("model_kind", "baselines", "warmup_records", "smoothing", "kernel_size") if k in cfg},
        **({"conv_filters": ",".join(str(f) for f in cfg["conv_filters"])} if "conv_filters" in cfg else {}),
        ("topic_sequences" if cfg.get("model_kind") == "windowed" else "topic_features"): meta["source"]["topic"]})
    again = train_once(s2, SourceRange.from_dict(meta["source"]), version=version,
                       parent=meta.get("parent_version"), publish=False)
    return {"version": version, "record_count": (meta["record_count"], again["record_count"]),
            "normalization_equal": np.allclose(meta["normalization"]["mean"], again["normalization"]["mean"])
            and np.allclose(meta["normalization"]["std"], again["normalization"]["std"]),
            "threshold": (meta["threshold"], again["threshold"]),
            "final_loss": (meta["metrics"]["loss"][-1], again["metrics"]["loss"][-1])}

