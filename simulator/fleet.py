"""A simulated fleet: correlated sensor channels with noise and drift, and labelled anomalies.

Every device emits reading ``seq`` = 0, 1, 2, ... at ``rate`` per second. Readings for one
``seq`` are generated for the whole fleet at once (vectorised with numpy) from a single
seeded generator, so a seed reproduces the exact values whatever the timing.

Each device has a latent load that drives all four channels (hence they are correlated):
temperature, current, vibration and pressure. Anomalies are episodes that set ``label`` = 1
on every affected reading, with ``anomaly`` naming the kind:

- ``spike``: one reading of one channel jumps by several standard deviations;
- ``stuck``: one channel reads exactly 0.0 (a dead sensor) for several readings;
- ``drift``: one channel walks away from the others, growing for tens of readings;
- ``correlated``: temperature and current rise while pressure falls (a real fault breaks
  the usual correlation between channels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNELS = ("temperature", "current", "vibration", "pressure")
#: Per-channel: baseline, baseline spread across devices, load gain, noise sigma. Devices of
#: one type differ by about their noise level (a fleet of different types is another matter).
_CHANNEL_MODEL = {
    "temperature": (60.0, 0.5, 25.0, 0.4),
    "current": (1.5, 0.02, 2.0, 0.03),
    "vibration": (0.30, 0.005, 0.40, 0.008),
    "pressure": (3.0, 0.02, 1.5, 0.03),
}
ANOMALY_KINDS = ("spike", "stuck", "drift", "correlated")


@dataclass
class FleetConfig:
    devices: int = 100
    seed: int = 42
    anomaly_rate: float = 0.004  # probability per reading that an anomaly episode starts
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS
    device_prefix: str = "dev"
    device_type: str = "pump"


class Fleet:
    """Generates the fleet's readings one ``seq`` at a time."""

    def __init__(self, cfg: FleetConfig) -> None:
        unknown = set(cfg.anomaly_kinds) - set(ANOMALY_KINDS)
        if unknown:
            raise ValueError(f"unknown anomaly kinds {sorted(unknown)}; known: {list(ANOMALY_KINDS)}")
        if not 0.0 <= cfg.anomaly_rate < 1.0:
            raise ValueError("anomaly_rate must be in [0, 1)")
        self.cfg = cfg
        n = cfg.devices
        self.rng = np.random.default_rng(cfg.seed)
        width = max(5, len(str(n - 1)))
        self.device_ids = [f"{cfg.device_prefix}-{i:0{width}d}" for i in range(n)]
        self.base = np.stack([m[0] + m[1] * self.rng.standard_normal(n) for m in _CHANNEL_MODEL.values()], axis=1)
        self.gain = np.array([m[2] for m in _CHANNEL_MODEL.values()])
        self.noise = np.array([m[3] for m in _CHANNEL_MODEL.values()])
        # Overall spread of each channel (load varies over ~[0.2, 0.8]): the anomaly scale.
        self.scale = self.gain * 0.25 + self.noise
        self.period = self.rng.uniform(60, 240, n)  # readings per load cycle
        self.phase = self.rng.uniform(0, 2 * np.pi, n)
        # Slow drift: each channel wanders by about its noise level over thousands of readings.
        self.drift_amp = self.rng.uniform(0.5, 1.5, (n, len(CHANNELS))) * self.noise
        self.drift_period = self.rng.uniform(2000, 6000, (n, 1))
        self.drift_phase = self.rng.uniform(0, 2 * np.pi, (n, len(CHANNELS)))
        # Anomaly episode state per device.
        self.kind = np.full(n, -1)  # index into ANOMALY_KINDS, -1 = healthy
        self.left = np.zeros(n, dtype=int)  # readings left in the episode
        self.age = np.zeros(n, dtype=int)  # readings since the episode started
        self.channel = np.zeros(n, dtype=int)
        self.sign = np.ones(n)
        self.seq = 0

    def step(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Readings for the next seq: (values [n, channels], label [n], kind index [n], -1 = none)."""
        n, k, rng = self.cfg.devices, self.seq, self.rng
        load = 0.5 + 0.3 * np.sin(2 * np.pi * k / self.period + self.phase) + 0.02 * rng.standard_normal(n)
        drift = self.drift_amp * np.sin(2 * np.pi * k / self.drift_period + self.drift_phase)
        values = self.base + np.outer(load, self.gain) + drift + rng.standard_normal((n, 4)) * self.noise
        # Start new episodes on healthy devices.
        kinds = [ANOMALY_KINDS.index(x) for x in self.cfg.anomaly_kinds]
        start = (self.kind < 0) & (rng.random(n) < self.cfg.anomaly_rate) & (k > 0)
        idx = np.flatnonzero(start)
        if len(idx) and kinds:
            chosen = rng.choice(kinds, len(idx))
            self.kind[idx] = chosen
            self.age[idx] = 0
            self.channel[idx] = rng.integers(0, 4, len(idx))
            self.sign[idx] = rng.choice([-1.0, 1.0], len(idx))
            lengths = {0: (1, 2), 1: (5, 20), 2: (10, 30), 3: (5, 15)}
            for kind_idx, (lo, hi) in lengths.items():
                sel = idx[chosen == kind_idx]
                self.left[sel] = rng.integers(lo, hi, len(sel))
        label = (self.kind >= 0).astype(np.int8)
        kind_now = self.kind.copy()
        rows = np.flatnonzero(self.kind >= 0)
        for d in rows:
            c, s, age = self.channel[d], self.sign[d], self.age[d]
            kind = ANOMALY_KINDS[self.kind[d]]
            if kind == "spike":
                values[d, c] += s * 4.0 * self.scale[c]
            elif kind == "stuck":
                values[d, c] = 0.0
            elif kind == "drift":
                values[d, c] += s * (2.5 + 0.15 * age) * self.scale[c]
            elif kind == "correlated":
                values[d, 0] += 2.5 * self.scale[0]
                values[d, 1] += 2.5 * self.scale[1]
                values[d, 3] -= 2.5 * self.scale[3]
        self.age[rows] += 1
        self.left[rows] -= 1
        ended = rows[self.left[rows] <= 0]
        self.kind[ended] = -1
        self.seq += 1
        return values, label, kind_now

    def messages(self, ts: np.ndarray) -> list[tuple[str, dict]]:
        """The next seq as (device_id, telemetry dict) pairs; ``ts`` is each device's timestamp."""
        seq = self.seq
        values, label, kind = self.step()
        return telemetry_messages(
            self.device_ids, ts, seq, values, label, kind, ANOMALY_KINDS, [self.cfg.device_type] * len(self.device_ids)
        )


def telemetry_messages(
    device_ids, ts, seq: int, values: np.ndarray, label: np.ndarray, kind: np.ndarray, kind_names, device_types
) -> list[tuple[str, dict]]:
    """One step of a fleet as (device_id, telemetry dict) pairs; ``kind`` indexes ``kind_names`` (-1: normal)."""
    out = []
    for i, device_id in enumerate(device_ids):
        msg = {"device_id": device_id, "ts": round(float(ts[i]), 3), "seq": seq}
        for j, name in enumerate(CHANNELS):
            msg[name] = round(float(values[i, j]), 4)
        msg["device_type"] = device_types[i]
        msg["label"] = int(label[i])
        msg["anomaly"] = kind_names[kind[i]] if kind[i] >= 0 else None
        out.append((device_id, msg))
    return out
