"""Step 4 of a run: thresholds from the reconstruction errors of the training inputs (read once
more from Kafka), the training anomaly rate, and the run's health."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamtrain import logs
from streamtrain.kafka_dataset import KafkaSource
from streamtrain.model import reconstruction_error, window_means, window_score
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
    window_center: np.ndarray | None = None  # window score: the fleet's (fallback) centre per feature
    window_scale: np.ndarray | None = None  # ... and scale
    window_threshold: float | None = None  # ... and threshold


#: A window mean's scale is never below this share of a reading's own (normalized) scale.
WINDOW_SCALE_FLOOR = 0.05
WINDOW_QUANTILE = 0.99


def window_spread(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature: median and IQR/1.349 (floored) of the training windows' means [windows, features]."""
    q25, med, q75 = np.percentile(means, [25, 50, 75], axis=0)
    return med, np.maximum((q75 - q25) / 1.349, WINDOW_SCALE_FLOOR)


def window_threshold(scores: np.ndarray, factor: float) -> float:
    return max(float(np.quantile(scores, WINDOW_QUANTILE)) * factor, 1e-9)


def choose_window_thresholds(
    source: KafkaSource, norm: Normalization, fitted: FitResult, of: str, factor: float, newest_k: float
) -> Thresholds:
    """Window score (``streamtrain.model``): the newest reading's thresholds (median + ``newest_k``
    MAD), then centre and scale of the training windows' means per feature and a threshold from
    their scores, per device (and the fleet's as the fallback)."""
    newest = choose_thresholds(source, norm, fitted, newest_k)
    model = fitted.model

    def means(xn: np.ndarray) -> np.ndarray:
        return window_means(xn, model(xn, training=False).numpy() if of == "residual" else None)

    per_device = norm.baselines is not None
    found, fallback, devices_seen = [], [], []
    raw_sample = None
    for x, _, devices in source.batches_with_devices():
        if raw_sample is None:
            raw_sample = x[:64]
        if per_device:
            xn, own = norm.per_device(x, devices)
            devices_seen += [d for d, keep in zip(devices, own) if keep]
            fallback.append(means(norm.fleet(x)))
        else:
            xn = norm.fleet(x)
        found.append(means(xn))
    r = np.concatenate(found)
    if per_device:
        b = norm.baselines
        ids = sorted(b.index, key=b.index.get)
        where = np.asarray(devices_seen, dtype=object)
        spreads = [window_spread(r[where == d]) for d in ids]
        b.window_center = np.asarray([c for c, _ in spreads])
        b.window_scale = np.asarray([sc for _, sc in spreads])
        b.window_threshold = np.asarray(
            [
                window_threshold(window_score(r[where == d], b.window_center[i], b.window_scale[i]), factor)
                for i, d in enumerate(ids)
            ]
        )
        rf = np.concatenate(fallback)
        center, scale = window_spread(rf)
        threshold = window_threshold(window_score(rf, center, scale), factor)
        rows = [b.index[d] for d in devices_seen]
        scores = window_score(r, b.window_center[rows], b.window_scale[rows])
        window_rate = float((scores > b.window_threshold[rows]).mean())
    else:
        center, scale = window_spread(r)
        threshold = window_threshold(window_score(r, center, scale), factor)
        window_rate = float((window_score(r, center, scale) > threshold).mean())
    # The training inputs over either threshold: at least the larger of the two rates.
    return Thresholds(
        newest.threshold,
        max(newest.anomaly_rate, window_rate),
        newest.health,
        raw_sample,
        center,
        scale,
        threshold,
    )


def choose_thresholds(
    source: KafkaSource,
    norm: Normalization,
    fitted: FitResult,
    k: float,
    window: tuple[str, float, float] | None = None,
) -> Thresholds:
    """With per-device baselines, also sets ``norm.baselines.threshold`` (each device's own).
    ``window``: (of, factor, newest k) of the windowed model's window score (``choose_window_thresholds``)."""
    if window is not None:
        return choose_window_thresholds(source, norm, fitted, *window)
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
