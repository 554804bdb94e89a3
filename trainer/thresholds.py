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


#: One channel: the newest reading's threshold of a window-scored model is at least this quantile of
#: the device's training errors over the windows its window score calls normal. With one channel there
#: is no relation between channels to break: the error is a function of the reading's own deviation,
#: and a network that rebuilds it almost exactly until its tanh saturates makes that function grow with
#: a high power of the deviation, so median + 8 * MAD sat near 2 standard deviations of the input and
#: flagged 3-10 % of a white-noise channel's normal readings. With several channels median + k * MAD
#: stays alone: there the tail of the training errors is where broken relations show (raising the
#: threshold to this quantile took the heterogeneous fleet's windowed F1 from 0.85+ to 0.51).
NEWEST_FLOOR_QUANTILE = 0.99
#: A window mean's scale is never below this share of a reading's own (normalized) scale.
WINDOW_SCALE_FLOOR = 0.05
WINDOW_QUANTILE = 0.99


def window_spread(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature: median and IQR/1.349 (floored) of the training windows' means [windows, features]."""
    q25, med, q75 = np.percentile(means, [25, 50, 75], axis=0)
    return med, np.maximum((q75 - q25) / 1.349, WINDOW_SCALE_FLOOR)


def window_threshold(scores: np.ndarray, factor: float) -> float:
    return max(float(np.quantile(scores, WINDOW_QUANTILE)) * factor, 1e-9)


@dataclass
class WindowRule:
    """One group's (a device's, or the fleet's) thresholds of the window score."""

    center: np.ndarray
    scale: np.ndarray
    threshold: float  # of the window score
    newest: float  # of the newest reading's error

    @classmethod
    def fit(cls, means: np.ndarray, errors: np.ndarray, factor: float, newest_k: float) -> "WindowRule":
        """From the training windows' means [windows, features] and their newest readings' errors."""
        center, scale = window_spread(means)
        scores = window_score(means, center, scale)
        threshold = window_threshold(scores, factor)
        calm = errors[scores <= threshold]
        newest = robust_threshold(errors, newest_k)
        if means.shape[1] == 1 and len(calm):
            newest = max(newest, float(np.quantile(calm, NEWEST_FLOOR_QUANTILE)))
        return cls(center, scale, threshold, newest)

    def flags(self, means: np.ndarray, errors: np.ndarray) -> np.ndarray:
        return (window_score(means, self.center, self.scale) > self.threshold) | (errors > self.newest)


def choose_window_thresholds(
    source: KafkaSource, norm: Normalization, fitted: FitResult, of: str, factor: float, newest_k: float
) -> Thresholds:
    """Window score (``streamtrain.model``), per device (and the fleet's as the fallback), in one read
    of the training range: centre and scale of the training windows' means per feature and a threshold
    from their scores; the newest reading's threshold, median + ``newest_k`` MAD of its training errors (one
    channel: at least their 99th percentile over the windows under the window threshold)."""
    model = fitted.model

    def assess(xn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window means, newest reading's errors) of normalized windows."""
        recon = model(xn, training=False).numpy()
        errors = reconstruction_error(xn[:, -1], recon[:, -1])
        return window_means(xn, recon if of == "residual" else None), errors

    per_device = norm.baselines is not None
    found, fallback, devices_seen = [], [], []
    raw_sample = None
    moments = Moments()
    for x, _, devices in source.batches_with_devices():
        if raw_sample is None:
            raw_sample = x[:64]
        if per_device:
            xn, own = norm.per_device(x, devices)
            devices_seen += [d for d, keep in zip(devices, own) if keep]
            fallback.append(assess(norm.fleet(x)))
        else:
            xn = norm.fleet(x)
        found.append(assess(xn))
        moments.add(xn)
    health = _health(fitted, moments)
    means = np.concatenate([m for m, _ in found])
    errors = np.concatenate([e for _, e in found])
    if per_device:
        b = norm.baselines
        ids = sorted(b.index, key=b.index.get)
        where = np.asarray(devices_seen, dtype=object)
        rules = [WindowRule.fit(means[where == d], errors[where == d], factor, newest_k) for d in ids]
        b.window_center = np.asarray([r.center for r in rules])
        b.window_scale = np.asarray([r.scale for r in rules])
        b.window_threshold = np.asarray([r.threshold for r in rules])
        b.threshold = np.asarray([r.newest for r in rules])
        fleet = WindowRule.fit(
            np.concatenate([m for m, _ in fallback]), np.concatenate([e for _, e in fallback]), factor, newest_k
        )
        flagged = np.concatenate([rules[i].flags(means[where == d], errors[where == d]) for i, d in enumerate(ids)])
    else:
        fleet = WindowRule.fit(means, errors, factor, newest_k)
        flagged = fleet.flags(means, errors)
    return Thresholds(
        fleet.newest,
        float(flagged.mean()) if len(flagged) else 0.0,
        health,
        raw_sample,
        fleet.center,
        fleet.scale,
        fleet.threshold,
    )


def _health(fitted: FitResult, moments: Moments) -> dict:
    """``training_health`` of the run (logged when it is not ok)."""
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
    return health


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
    health = _health(fitted, moments)
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
