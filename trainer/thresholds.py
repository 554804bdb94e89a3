"""Step 4 of a run: thresholds from the reconstruction errors of the training inputs (read once
more from Kafka), the training anomaly rate, and the run's health."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamtrain import logs
from streamtrain.kafka_dataset import KafkaSource
from streamtrain.model import reconstruction_error
from streamtrain.trainer.fit import FitResult
from streamtrain.trainer.normalization import Normalization
from streamtrain.trainer.statistics import Moments, device_thresholds, robust_threshold, training_health

log = logs.get("trainer")


@dataclass
class Thresholds:
    threshold: float  # the fleet's (with per-device baselines: the fallback's)
    anomaly_rate: float  # share of training inputs above their threshold
    health: dict  # ``training_health`` of the run
    raw_sample: np.ndarray | None  # raw rows the ONNX export is checked against


def choose_thresholds(source: KafkaSource, norm: Normalization, fitted: FitResult, k: float) -> Thresholds:
    """With per-device baselines, also sets ``norm.baselines.threshold`` (each device's own)."""
    model = fitted.model

    def newest_errors(xn: np.ndarray) -> np.ndarray:
        e = reconstruction_error(xn, model(xn, training=False).numpy())
        return e[:, -1] if e.ndim == 2 else e

    per_device = norm.baselines is not None
    errors, fallback_errors, error_devices = [], [], []
    raw_sample = None
    moments = Moments()  # of the inputs as the network saw them: the constant predictor's error
    for x, _, devices in source.batches_with_devices():
        if raw_sample is None:
            raw_sample = x[:64]
        if per_device:
            xn, own = norm.per_device(x, devices)
            errors.append(newest_errors(xn))
            error_devices += [d for d, keep in zip(devices, own) if keep]
            fallback_errors.append(newest_errors(norm.fleet(x)))
        else:
            xn = norm.fleet(x)
            errors.append(newest_errors(xn))
        moments.add(xn)
    all_errors = np.concatenate(errors)
    health = training_health(fitted.history, moments.mean_variance())
    if health["status"] != "ok":
        log.warning(
            "training_unhealthy",
            status=health["status"],
            problems=health["problems"],
            final_loss=health["final_loss"],
            final_val_loss=health["final_val_loss"],
            constant_predictor_loss=health["constant_predictor_loss"],
        )
    if per_device:
        b = norm.baselines
        by_device: dict = {}
        for d, e in zip(error_devices, all_errors):
            by_device.setdefault(d, []).append(e)
        ids = sorted(b.index, key=b.index.get)
        b.threshold = device_thresholds([np.asarray(by_device[d]) for d in ids], k)
        threshold = robust_threshold(np.concatenate(fallback_errors), k)
        row_thresholds = np.asarray([b.threshold[b.index[d]] for d in error_devices])
        anomaly_rate = float((all_errors > row_thresholds).mean())
    else:
        threshold = robust_threshold(all_errors, k)
        anomaly_rate = float((all_errors > threshold).mean())
    return Thresholds(threshold, anomaly_rate, health, raw_sample)
