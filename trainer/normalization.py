"""Step 2 of a run: learn the normalization from the stream (one pass over the range).

``global``: one mean/std for the fleet. ``device``: each device's own location/scale
(``streamtrain.trainer.statistics``), the fleet's mean/std as the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamtrain.baselines import DeviceBaselines
from streamtrain.kafka_dataset import KafkaSource
from streamtrain.trainer.settings import TrainError, TrainSettings
from streamtrain.trainer.statistics import baselines_from_rows, newest_rows


@dataclass
class Normalization:
    """The fleet's mean/std (float64, as published), and per-device baselines when asked for."""

    mean: np.ndarray
    std: np.ndarray
    rows: int  # usable readings in the range
    baselines: DeviceBaselines | None = None
    floors: dict | None = None  # how many devices' scales each floor raised

    @property
    def mean32(self) -> np.ndarray:
        return self.mean.astype(np.float32)

    @property
    def std32(self) -> np.ndarray:
        return self.std.astype(np.float32)

    def fleet(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean32) / self.std32

    def per_device(self, x: np.ndarray, devices: list, fallback: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(normalized inputs, row mask): rows of devices without a baseline are dropped, or use the fallback."""
        b = self.baselines
        idx = np.asarray([b.index.get(d, -1) for d in devices], dtype=np.int64)
        own = idx >= 0
        mu = np.where(own[:, None], b.mean[np.maximum(idx, 0)], self.mean32).astype(np.float32)
        sd = np.where(own[:, None], b.std[np.maximum(idx, 0)], self.std32).astype(np.float32)
        if x.ndim == 3:
            mu, sd = mu[:, None, :], sd[:, None, :]
        xn = (x - mu) / sd
        return (xn, np.ones(len(x), bool)) if fallback else (xn[own], own)

    @property
    def training_rows(self) -> int:
        """Rows the network trains on: per device, only devices with a baseline."""
        return int(self.baselines.records.sum()) if self.baselines is not None else self.rows


def device_statistics(source: KafkaSource, warmup: int) -> tuple[DeviceBaselines, np.ndarray, np.ndarray, int, dict]:
    """Per-device location/scale (devices with >= ``warmup`` records), the fleet's mean/std, the row
    count and the scale floors applied (``streamtrain.trainer.statistics``), in one pass.

    Each reading counts once: a window contributes its newest row."""
    per_device: dict = {}
    for x, _, devices in source.batches_with_devices():
        rows = newest_rows(x).astype(np.float64)
        for d, row in zip(devices, rows):
            per_device.setdefault(d, []).append(row)
    return baselines_from_rows({d: np.asarray(v) for d, v in per_device.items()}, warmup, len(source.feature_names))


def stream_moments(source: KafkaSource) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and standard deviation of every feature, in one streaming pass over the range."""
    n, total, total_sq = 0, None, None
    for x in source.inputs():
        x64 = newest_rows(x).astype(np.float64)
        total = x64.sum(0) if total is None else total + x64.sum(0)
        total_sq = (x64**2).sum(0) if total_sq is None else total_sq + (x64**2).sum(0)
        n += len(x)
    if n == 0:
        return np.zeros(0), np.ones(0), 0
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return mean, np.where(std > 1e-9, std, 1.0), n


def learn_normalization(s: TrainSettings, source: KafkaSource) -> Normalization:
    if s.baselines == "device":
        baselines, mean, std, rows, floors = device_statistics(source, s.warmup_records)
        if not baselines.index:
            raise TrainError(
                f"no device has {s.warmup_records} records in the range; lower --warmup-records "
                "or train on more records"
            )
        norm = Normalization(mean, std, rows, baselines, floors)
    else:
        norm = Normalization(*stream_moments(source))
    if norm.rows < s.min_records:
        raise TrainError(f"only {norm.rows} usable records ({source.skipped} skipped) in range; need {s.min_records}")
    return norm
