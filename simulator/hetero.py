"""A heterogeneous fleet: several device types, each device with its own operating point.

Real fleets are not uniform: one pump runs at 60 °C, its neighbour at 75 °C, a compressor
of the same site at 90 °C. Here every device is drawn from a device type and gets

- its own baseline per channel (type baseline + a device offset that is several times
  larger than any anomaly, so a global normalization cannot tell a fault from a neighbour),
- its own noise level (a factor 0.5-2 on the type's noise) and its own slow drift,
- its own load cycle, which drives all four channels (they stay correlated).

Anomalies are episodes; ``label`` = 1 on every reading of an episode, ``anomaly`` names it:

- ``spike``: one reading of one channel jumps by several times the device's spread;
- ``degraded``: a lasting state (``episode_readings``, e.g. 20-180 readings = tens of
  seconds to minutes at 1 Hz) where one channel or a pair of channels sits off its usual
  relation to the load: a worn bearing (vibration and temperature up), a clogged filter
  (pressure up, current up), a failing sensor that reads low;
- ``stuck``: one channel freezes at its last value for a lasting episode.

``fault_fraction`` sets the share of anomalous readings the fleet aims at (rare faults at
0.01, long faulty periods at 0.3): the episode start probability is derived from it and the
mean episode length. A seed reproduces the exact values whatever the timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamtrain.simulator.fleet import CHANNELS, telemetry_messages

#: Per device type and channel: (baseline, device-to-device spread of the baseline, load gain, noise sigma).
DEVICE_TYPES: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "pump": {
        "temperature": (62.0, 8.0, 12.0, 0.30),
        "current": (1.8, 0.45, 1.0, 0.02),
        "vibration": (0.30, 0.10, 0.25, 0.006),
        "pressure": (3.0, 0.6, 1.2, 0.03),
    },
    "compressor": {
        "temperature": (88.0, 8.0, 18.0, 0.50),
        "current": (4.0, 0.8, 2.5, 0.05),
        "vibration": (0.60, 0.15, 0.50, 0.012),
        "pressure": (8.0, 1.0, 3.0, 0.06),
    },
    "fan": {
        "temperature": (42.0, 6.0, 8.0, 0.25),
        "current": (0.9, 0.25, 0.6, 0.015),
        "vibration": (0.15, 0.06, 0.20, 0.004),
        "pressure": (1.2, 0.3, 0.4, 0.015),
    },
}
HETERO_KINDS = ("spike", "degraded", "stuck")
#: Degraded patterns: channel index -> shift in units of the device's spread of that channel.
_PATTERNS = (
    {2: 2.0, 0: 1.2},  # worn bearing: vibration and temperature up
    {3: 2.0, 1: 1.2},  # clogged filter: pressure and current up
    {0: -2.2},  # sensor reading low
    {1: 1.8, 0: 1.1},  # winding fault: current and temperature up
)


@dataclass
class HeteroConfig:
    devices: int = 30
    seed: int = 42
    types: tuple[str, ...] = tuple(DEVICE_TYPES)
    fault_fraction: float = 0.05  # aimed share of anomalous readings
    anomaly_kinds: tuple[str, ...] = ("spike", "degraded")
    episode_readings: tuple[int, int] = (20, 180)  # length of lasting episodes (degraded, stuck)
    device_prefix: str = "dev"
    noise_factor: tuple[float, float] = (0.5, 2.0)
    anomaly_size: float = 1.4  # multiplies every anomaly shift


class HeterogeneousFleet:
    """Same interface as ``Fleet``: ``step()``, ``messages(ts)``, ``device_ids``, ``rng``, ``cfg.devices``."""

    def __init__(self, cfg: HeteroConfig) -> None:
        unknown_types = set(cfg.types) - set(DEVICE_TYPES)
        if unknown_types or not cfg.types:
            raise ValueError(f"unknown device types {sorted(unknown_types)}; known: {list(DEVICE_TYPES)}")
        unknown = set(cfg.anomaly_kinds) - set(HETERO_KINDS)
        if unknown:
            raise ValueError(f"unknown anomaly kinds {sorted(unknown)}; known: {list(HETERO_KINDS)}")
        if not 0.0 <= cfg.fault_fraction < 0.9:
            raise ValueError("fault_fraction must be in [0, 0.9)")
        lo, hi = cfg.episode_readings
        if not 1 <= lo <= hi:
            raise ValueError("episode_readings must be (min, max) with 1 <= min <= max")
        self.cfg = cfg
        n = cfg.devices
        rng = self.rng = np.random.default_rng(cfg.seed)
        width = max(5, len(str(n - 1)))
        self.device_ids = [f"{cfg.device_prefix}-{i:0{width}d}" for i in range(n)]
        self.type_index = np.arange(n) % len(cfg.types)  # types interleaved: every type in any prefix of the fleet
        self.device_types = [cfg.types[t] for t in self.type_index]
        model = np.array([[DEVICE_TYPES[t][c] for c in CHANNELS] for t in cfg.types])  # [types, channels, 4]
        per = model[self.type_index]  # [n, channels, 4]
        self.base = per[:, :, 0] + per[:, :, 1] * rng.standard_normal((n, len(CHANNELS)))
        self.gain = per[:, :, 2] * rng.uniform(0.85, 1.15, (n, 1))
        self.noise = per[:, :, 3] * rng.uniform(*cfg.noise_factor, (n, 1))
        # A device's own spread (load swings ~0.2 around its mean): the unit of anomaly sizes.
        self.scale = self.gain * 0.2 + self.noise
        self.period = rng.uniform(60, 240, n)
        self.phase = rng.uniform(0, 2 * np.pi, n)
        self.drift_amp = rng.uniform(0.5, 1.5, (n, len(CHANNELS))) * self.noise
        self.drift_period = rng.uniform(2000, 6000, (n, 1))
        self.drift_phase = rng.uniform(0, 2 * np.pi, (n, len(CHANNELS)))
        self.kind = np.full(n, -1)
        self.left = np.zeros(n, dtype=int)
        self.channel = np.zeros(n, dtype=int)
        self.pattern = np.zeros(n, dtype=int)
        self.sign = np.ones(n)
        self.frozen = np.zeros((n, len(CHANNELS)))
        self.last = self.base.copy()
        self.start_p = self._start_probability()
        self.seq = 0

    def _mean_episode(self) -> float:
        lo, hi = self.cfg.episode_readings
        lengths = [1.0 if k == "spike" else (lo + hi) / 2 for k in self.cfg.anomaly_kinds]
        return float(np.mean(lengths)) if lengths else 1.0

    def _start_probability(self) -> float:
        f = self.cfg.fault_fraction
        return f / (self._mean_episode() * (1 - f)) if f > 0 else 0.0

    def step(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, k, rng = self.cfg.devices, self.seq, self.rng
        load = 0.5 + 0.3 * np.sin(2 * np.pi * k / self.period + self.phase) + 0.02 * rng.standard_normal(n)
        drift = self.drift_amp * np.sin(2 * np.pi * k / self.drift_period + self.drift_phase)
        values = self.base + self.gain * load[:, None] + drift + rng.standard_normal((n, len(CHANNELS))) * self.noise
        kinds = [HETERO_KINDS.index(x) for x in self.cfg.anomaly_kinds]
        start = (self.kind < 0) & (rng.random(n) < self.start_p) & (k > 0)
        idx = np.flatnonzero(start)
        if len(idx) and kinds:
            chosen = rng.choice(kinds, len(idx))
            self.kind[idx] = chosen
            self.channel[idx] = rng.integers(0, len(CHANNELS), len(idx))
            self.pattern[idx] = rng.integers(0, len(_PATTERNS), len(idx))
            self.sign[idx] = rng.choice([-1.0, 1.0], len(idx))
            lo, hi = self.cfg.episode_readings
            self.left[idx] = np.where(chosen == HETERO_KINDS.index("spike"), 1, rng.integers(lo, hi + 1, len(idx)))
            self.frozen[idx] = self.last[idx]
        label = (self.kind >= 0).astype(np.int8)
        kind_now = self.kind.copy()
        rows = np.flatnonzero(self.kind >= 0)
        size = self.cfg.anomaly_size
        for d in rows:
            kind = HETERO_KINDS[self.kind[d]]
            c = self.channel[d]
            if kind == "spike":
                values[d, c] += self.sign[d] * 4.0 * size * self.scale[d, c]
            elif kind == "degraded":
                for ch, shift in _PATTERNS[self.pattern[d]].items():
                    values[d, ch] += shift * size * self.scale[d, ch]
            elif kind == "stuck":
                values[d, c] = self.frozen[d, c]
        self.last = values.copy()
        self.left[rows] -= 1
        self.kind[rows[self.left[rows] <= 0]] = -1
        self.seq += 1
        return values, label, kind_now

    def messages(self, ts: Sequence[float] | np.ndarray) -> list[tuple[str, dict]]:
        seq = self.seq
        values, label, kind = self.step()
        return telemetry_messages(self.device_ids, ts, seq, values, label, kind, HETERO_KINDS, self.device_types)
