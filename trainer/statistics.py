"""The statistics a version is trained with: per-device location and scale (with floors that
cannot collapse), thresholds from training errors, and the training run's health.

**Per-device scale.** Each feature of each device gets a robust location and scale from its
training history: the median and IQR / 1.349 (the standard deviation, for normal data), so a
lasting fault inside the history does not become its baseline. Real recordings have channels
whose IQR is zero or next to it (a supply voltage that sits on one value, a valve that is open
or shut, a pressure quantised to 0.05 bar): dividing by such a scale turns one quantisation
step into dozens of standard deviations and drowns every other channel. So the scale is never
below a floor:

- the channel's **resolution** on that device: the smallest step between two distinct values
  in its training history (one step of a quantised channel is then at most one unit);
- **1/20 of the fleet's scale** of that feature (the median of the other floors' results over
  the devices where it moves):
  a device may be much quieter than its neighbours, not a thousand times quieter;
- a feature that is **constant** over the device's whole training history has no scale of its
  own: it gets the fleet's scale of that feature, or, when the whole fleet is constant on it,
  1 % of its magnitude (1 if that is zero).

The manifest records, per feature, how many devices' scales a floor raised (``scale_floors``).
"""

from __future__ import annotations

import math

import numpy as np

from streamtrain.baselines import DeviceBaselines

#: A device's scale is at least this share of the fleet's scale of the same feature.
FLEET_SCALE_SHARE = 1 / 20
#: A model whose validation error is above this share of a constant predictor's learned next to nothing.
CONSTANT_PREDICTOR_RATIO = 0.9


#: Epochs when none are given, and the most a small range gets to reach ``min_steps``.
DEFAULT_EPOCHS, MAX_AUTO_EPOCHS = 20, 200


def epochs_for(s, rows: int) -> int:
    """Epochs of a run over ``rows`` inputs: ``epochs`` when given; otherwise 20, or as many as
    ``min_steps`` optimizer steps take (at most 200)."""
    if s.epochs is not None:
        return s.epochs
    steps_per_epoch = max(1, math.ceil(rows * (1 - s.validation_fraction) / s.batch_size))
    return int(min(MAX_AUTO_EPOCHS, max(DEFAULT_EPOCHS, math.ceil(s.min_steps / steps_per_epoch))))


def newest_rows(x: np.ndarray) -> np.ndarray:
    """The reading each input scores: the row itself, or a window's newest row."""
    return x[:, -1, :] if x.ndim == 3 else x


def robust_location_scale(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column median and IQR / 1.349 (0 where the IQR is 0)."""
    q25, med, q75 = np.percentile(rows, [25, 50, 75], axis=0)
    return med, (q75 - q25) / 1.349


def resolution(rows: np.ndarray) -> np.ndarray:
    """Per column: the smallest step between distinct values (0 for a constant column)."""
    out = np.zeros(rows.shape[1])
    for c in range(rows.shape[1]):
        distinct = np.unique(rows[:, c])
        if len(distinct) > 1:
            out[c] = float(np.min(np.diff(distinct)))
    return out


def floored_scales(
    location: np.ndarray, scale: np.ndarray, steps: np.ndarray, constant: np.ndarray
) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Apply the floors (module docstring) to [devices, features] scales; also how many each raised."""
    own = np.maximum(scale, steps)  # a quantised channel: at least one step
    fleet = np.zeros(own.shape[1])
    for c in range(own.shape[1]):
        moving = own[:, c][~constant[:, c] & (own[:, c] > 0)]
        fleet[c] = float(np.median(moving)) if len(moving) else 0.0
    magnitude = np.abs(location) * 0.01
    for_constant = np.where(fleet > 0, fleet, np.where(magnitude > 0, magnitude, 1.0))
    out = np.where(constant, for_constant, np.maximum(own, FLEET_SCALE_SHARE * fleet))
    raised = {
        "resolution": [
            int(v) for v in np.sum(~constant & (steps > scale) & (own >= FLEET_SCALE_SHARE * fleet), axis=0)
        ],
        "fleet": [int(v) for v in np.sum(~constant & (FLEET_SCALE_SHARE * fleet > own), axis=0)],
        "constant": [int(v) for v in np.sum(constant, axis=0)],
    }
    return out, raised


def baselines_from_rows(
    per_device: dict, warmup: int, n_features: int
) -> tuple[DeviceBaselines, np.ndarray, np.ndarray, int, dict]:
    """Per-device baselines, the fleet's mean/std, the row count and the floors applied, from each
    device's training rows [readings, features]."""
    if not per_device:
        n = n_features
        empty = DeviceBaselines(warmup, {}, np.zeros((0, n)), np.ones((0, n)), np.zeros(0), np.zeros(0, int), {})
        return empty, np.zeros(n), np.ones(n), 0, {}
    everything = np.concatenate([np.asarray(v) for v in per_device.values()])
    g_mean, g_std = everything.mean(0), everything.std(0)
    ready = sorted(d for d, v in per_device.items() if len(v) >= warmup and d is not None)
    rows = [np.asarray(per_device[d], np.float64) for d in ready]
    stats = [robust_location_scale(r) for r in rows]
    location = np.asarray([m for m, _ in stats]).reshape(len(ready), n_features)
    scale = np.asarray([sd for _, sd in stats]).reshape(len(ready), n_features)
    steps = np.asarray([resolution(r) for r in rows]).reshape(len(ready), n_features)
    constant = np.asarray([r.min(0) == r.max(0) for r in rows]).reshape(len(ready), n_features)
    scale, raised = floored_scales(location, scale, steps, constant)
    warming = {str(d): len(v) for d, v in per_device.items() if d is not None and len(v) < warmup}
    b = DeviceBaselines(
        warmup,
        {d: i for i, d in enumerate(ready)},
        location,
        scale,
        np.ones(len(ready)),
        np.asarray([len(per_device[d]) for d in ready], dtype=np.int64),
        warming,
    )
    return b, g_mean, np.where(g_std > 1e-9, g_std, 1.0), len(everything), raised


def robust_threshold(errors: np.ndarray, k: float) -> float:
    med = float(np.median(errors))
    mad = float(np.median(np.abs(errors - med))) * 1.4826
    return med + k * max(mad, 1e-9)


def device_thresholds(errors_by_device: list[np.ndarray], k: float) -> np.ndarray:
    """Each device's threshold from its own training reconstruction errors."""
    return np.asarray([robust_threshold(np.asarray(e), k) for e in errors_by_device])


def training_health(history: dict[str, list[float]], constant_loss: float) -> dict:
    """Did the run converge, and is the model better than predicting each feature's mean?

    ``constant_loss``: the error of the best constant predictor on the training inputs as the
    network saw them (the mean per-feature variance). ``status`` is ``ok``, ``not_converged``
    (a loss that is not finite or did not fall) or ``no_better_than_constant`` (final validation
    error, or training error without validation, at or above 0.9 of the constant predictor's).
    """
    loss = [float(v) for v in history.get("loss", [])]
    val = [float(v) for v in history.get("val_loss", [])]
    final = val[-1] if val else (loss[-1] if loss else float("nan"))
    problems = []
    if not loss or not all(np.isfinite(loss + val)):
        problems.append("not_converged: the loss is not finite")
    elif len(loss) > 1 and loss[-1] >= loss[0]:
        problems.append(f"not_converged: the loss did not fall ({loss[0]:.4g} -> {loss[-1]:.4g})")
    ratio = final / constant_loss if constant_loss > 0 and np.isfinite(final) else float("nan")
    if not ratio < CONSTANT_PREDICTOR_RATIO:
        problems.append(
            f"no_better_than_constant: {'validation' if val else 'training'} error {final:.4g} vs "
            f"{constant_loss:.4g} for predicting each feature's mean"
        )
    return {
        "status": problems[0].split(":")[0] if problems else "ok",
        "problems": problems,
        "final_loss": loss[-1] if loss else None,
        "final_val_loss": val[-1] if val else None,
        "constant_predictor_loss": round(float(constant_loss), 6),
        "error_ratio": round(ratio, 4) if np.isfinite(ratio) else None,
    }


class Moments:
    """Running per-feature mean and variance of normalized inputs (the constant predictor's error)."""

    def __init__(self) -> None:
        self.n, self.total, self.total_sq = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        rows = newest_rows(np.asarray(x, np.float64))
        self.n += len(rows)
        self.total = self.total + rows.sum(0)
        self.total_sq = self.total_sq + (rows**2).sum(0)

    def mean_variance(self) -> float:
        if not self.n:
            return float("nan")
        mean = self.total / self.n
        return float(np.mean(np.maximum(self.total_sq / self.n - mean**2, 0.0)))
