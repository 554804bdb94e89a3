"""Per-device baselines: each device's own normalization and threshold, carried by the model version.

A fleet is not uniform: one pump runs at 60 °C, its neighbour at 75 °C. The trainer learns,
for every device with at least ``warmup_records`` training records, a location and scale of
each feature (robust ones: median and IQR/1.349, stored under ``mean``/``std``, the names the
scorer's arithmetic uses) and a threshold from that device's own training errors. Devices
with less history, and devices never seen in training, are scored with the fleet-wide
fallback (global mean, std and threshold), and their score records say which applied:

    baseline = "device"    the device's own statistics (``baseline_records`` of them)
               "warmup"    seen in training, but with fewer than ``warmup_records`` records
               "fallback"  never seen in training
               "global"    the model has no per-device baselines at all

In the version's metadata (JSON, additive to the codec's required fields)::

    "baselines": {"scope": "device", "key": "device_id", "warmup_records": 50,
                  "devices": [ids], "mean": [[...]], "std": [[...]], "threshold": [...], "records": [...],
                  "seen": {id: records} of devices still warming up}

``normalization`` and ``threshold`` of the metadata hold the fallback, so a reader that does
not know baselines still gets a fleet-wide model; the ``requires`` list names what a reader
must implement to score the version as trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamtrain.modelcodec import ModelRejected

BASELINE_KINDS = ("device", "warmup", "fallback", "global")


@dataclass
class DeviceBaselines:
    warmup_records: int
    index: dict[str, int]
    mean: np.ndarray  # [devices, features]
    std: np.ndarray  # [devices, features]
    threshold: np.ndarray  # [devices]
    records: np.ndarray  # [devices]
    seen: dict[str, int]  # devices with too little history: their training records
    window_center: np.ndarray | None = None  # [devices, features]: window score's centre (model.py)
    window_scale: np.ndarray | None = None  # [devices, features]: and scale
    window_threshold: np.ndarray | None = None  # [devices]: and threshold

    def as_metadata(self, digits: int = 7) -> dict:
        ids = sorted(self.index, key=self.index.__getitem__)

        def r(v):
            return float(f"{float(v):.{digits}g}")

        out = {
            "scope": "device",
            "key": "device_id",
            "warmup_records": int(self.warmup_records),
            "devices": ids,
            "mean": [[r(v) for v in row] for row in self.mean],
            "std": [[r(v) for v in row] for row in self.std],
            "threshold": [r(v) for v in self.threshold],
            "records": [int(v) for v in self.records],
            "seen": {k: int(v) for k, v in sorted(self.seen.items())},
        }
        if self.window_scale is not None and self.window_center is not None and self.window_threshold is not None:
            out["window_center"] = [[r(v) for v in row] for row in self.window_center]
            out["window_scale"] = [[r(v) for v in row] for row in self.window_scale]
            out["window_threshold"] = [r(v) for v in self.window_threshold]
        return out

    @classmethod
    def from_metadata(cls, meta: dict, n_features: int) -> "DeviceBaselines | None":
        b = meta.get("baselines")
        if not b or b.get("scope") != "device":
            return None
        try:
            ids = [str(d) for d in b["devices"]]
            mean = np.asarray(b["mean"], dtype=np.float32).reshape(len(ids), n_features)
            std = np.asarray(b["std"], dtype=np.float32).reshape(len(ids), n_features)
            threshold = np.asarray(b["threshold"], dtype=np.float32).reshape(len(ids))
            records = np.asarray(b["records"], dtype=np.int64).reshape(len(ids))
            warmup = int(b["warmup_records"])
            seen = {str(k): int(v) for k, v in (b.get("seen") or {}).items()}
            windowed = b.get("window_scale") is not None
            window_scale = np.asarray(b["window_scale"], np.float32).reshape(len(ids), n_features) if windowed else None
            window_threshold = np.asarray(b["window_threshold"], np.float32).reshape(len(ids)) if windowed else None
            window_center = (
                np.asarray(b.get("window_center") or np.zeros((len(ids), n_features)), np.float32).reshape(
                    len(ids), n_features
                )
                if windowed
                else None
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelRejected("bad_metadata", f"baselines: {exc}") from None
        if len(set(ids)) != len(ids):
            raise ModelRejected("bad_metadata", "baselines: duplicate device ids")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and np.isfinite(threshold).all()):
            raise ModelRejected("bad_metadata", "baselines: non-finite statistics")
        if len(threshold) and threshold.min() <= 0:
            raise ModelRejected("bad_metadata", "baselines: thresholds must be positive")
        if window_scale is not None and not (np.isfinite(window_scale).all() and (window_scale > 0).all()):
            raise ModelRejected("bad_metadata", "baselines: window_scale must be finite and positive")
        if window_threshold is not None and not (np.isfinite(window_threshold).all() and (window_threshold > 0).all()):
            raise ModelRejected("bad_metadata", "baselines: window_threshold must be finite and positive")
        if window_center is not None and not np.isfinite(window_center).all():
            raise ModelRejected("bad_metadata", "baselines: window_center must be finite")
        std = np.where(std > 1e-9, std, 1.0).astype(np.float32)
        return cls(
            warmup,
            {d: i for i, d in enumerate(ids)},
            mean,
            std,
            threshold,
            records,
            seen,
            window_center,
            window_scale,
            window_threshold,
        )

    def lookup(self, devices: list) -> tuple[np.ndarray, list[str], list[int]]:
        """Row index into the statistics per device (-1 = fallback), the baseline kind, the records behind it."""
        idx = np.full(len(devices), -1, dtype=np.int64)
        kinds, records = [], []
        for i, d in enumerate(devices):
            j = self.index.get(d)
            if j is not None:
                idx[i] = j
                kinds.append("device")
                records.append(int(self.records[j]))
            elif d in self.seen:
                kinds.append("warmup")
                records.append(self.seen[d])
            else:
                kinds.append("fallback")
                records.append(0)
        return idx, kinds, records
