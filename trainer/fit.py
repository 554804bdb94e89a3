"""Step 3 of a run: the tf.data pipeline over the range, the validation split, and the fit.

Each epoch re-reads the range from Kafka, unless it is cached (``--cache``, or a small range
given extra epochs to reach ``min_steps``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streamtrain.kafka_dataset import KafkaSource
from streamtrain.trainer.networks import build_autoencoder, build_conv_autoencoder, progress_log
from streamtrain.trainer.normalization import Normalization
from streamtrain.trainer.plan import TrainingPlan
from streamtrain.trainer.settings import TrainSettings
from streamtrain.trainer.statistics import DEFAULT_EPOCHS, epochs_for


@dataclass
class FitResult:
    model: Any  # the trained keras.Model
    history: dict[str, list[float]]
    epochs: int  # epochs run
    cache: bool  # whether epochs after the first came from the tf.data cache
    fit_seconds: float
    kafka_reads: int  # reads of the range from Kafka during the fit


def training_dataset(s: TrainSettings, plan: TrainingPlan, source: KafkaSource, norm: Normalization, cache: bool):
    """Normalized ``(x, x)`` batches of the range."""

    def fleet(x, y):
        return norm.fleet(x), norm.fleet(y)

    if norm.baselines is not None:
        return source.dataset(
            s.batch_size,
            cache=cache,
            shuffle=4096,
            seed=s.seed,
            transform=lambda x, devices: norm.per_device(x, devices)[0],
        )
    if s.backend == "tfio":
        from streamtrain.trainer.tfio_source import tfio_dataset  # noqa: PLC0415

        return tfio_dataset(s.kafka_bootstrap, plan.source_range, plan.features, s.batch_size, s.readers).map(fleet)
    return source.dataset(s.batch_size, cache=cache, shuffle=4096, seed=s.seed).map(fleet)


def split_validation(ds, fraction: float):
    """(training, validation) datasets: every ``1/fraction``-th batch is held out."""
    every = int(round(1 / fraction)) if fraction else 0
    if not every:
        return ds, None

    def is_train(i, xy):
        return i % every != 0

    def is_validation(i, xy):
        return i % every == 0

    def drop_index(i, xy):
        return xy

    return ds.enumerate().filter(is_train).map(drop_index), ds.enumerate().filter(is_validation).map(drop_index)


def build_network(s: TrainSettings, plan: TrainingPlan):
    if plan.windowed:
        return build_conv_autoencoder(
            plan.window, len(plan.features), plan.filters, s.kernel_size, s.learning_rate, s.seed
        )
    return build_autoencoder(len(plan.features), plan.layers, s.learning_rate, s.seed)


def fit(
    s: TrainSettings, plan: TrainingPlan, source: KafkaSource, norm: Normalization, version: int | None
) -> FitResult:
    epochs = epochs_for(s, norm.training_rows)
    # A small range given extra epochs (no --epochs) is read from Kafka once and cached: it is small.
    cache = s.cache or (s.epochs is None and epochs > DEFAULT_EPOCHS)
    train_ds, val_ds = split_validation(training_dataset(s, plan, source, norm, cache), s.validation_fraction)
    model = build_network(s, plan)
    callbacks = [progress_log(epochs)]
    if s.tensorboard_dir:
        import keras  # noqa: PLC0415

        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(s.tensorboard_dir / f"v{version or 'next'}")))
    reads_before = source.reads
    t_fit = time.monotonic()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, callbacks=callbacks)
    return FitResult(model, history.history, epochs, cache, time.monotonic() - t_fit, source.reads - reads_before)
