"""A recorded fleet: what real recordings look like, written as CSV files to replay.

Each device is one recording (its own day, years ago, at 1 Hz) of eight channels of a pump
rig. Unlike the live simulator's fleets it has the awkward properties of real recordings:

- **old timestamps** (2019-2021), one recording per device at its own time;
- **short training histories**: the first ``train_readings`` (a few hundred) readings of each
  recording are normal and meant for training; the rest is the test period;
- **constant and quantised channels**: ``voltage`` reads one value for (almost) the whole
  training history on some devices, then steps now and then, and moves in 0.5 V steps on the
  others; ``pressure`` is quantised to 0.05 bar and ``thermocouple`` to 0.25 degrees; ``valve``
  is open or closed; so their interquartile range is often zero;
- **scales that differ by orders of magnitude**, and negative values: vibration in g
  (~0.03 spread) next to motor speed in rpm (~1,500), suction pressure below zero;
- **regime changes between normal states**: the rig switches between two or three operating
  points (valve positions) during normal operation, in training and test alike;
- **long fault episodes**: one to three per recording, together a third or more of the test
  period, each with a short ramp at its start, labelled ``1`` on every reading; and rare
  one-reading sensor glitches in normal operation (labelled normal).

Faults change the relation between channels more than any single channel's range: a
restricted outlet (flow down, pressure and current up), a worn bearing (vibration and
temperature up), cavitation (suction pressure down, vibration noisy, flow down), a drifting
flow sensor. ``label`` is ground truth for evaluation, never a feature.

``python -m streamtrain.simulator.recorded --out DIR`` writes ``DIR/train.csv`` and ``DIR/test.csv``
(columns: device, timestamp, seq, the channels, label); a seed reproduces every value.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np

CHANNELS = (
    "accel1",
    "accel2",
    "current",
    "pressure",
    "suction",
    "temperature",
    "thermocouple",
    "voltage",
    "flow",
    "speed",
    "valve",
)
#: Per channel: (level, device-to-device spread of the level, gain on the operating point, noise, resolution).
_CHANNEL_MODEL = {
    "accel1": (0.21, 0.02, 0.05, 0.004, 0.0),
    "accel2": (0.27, 0.03, 0.06, 0.005, 0.0),
    "current": (1.9, 0.3, 0.9, 0.04, 0.0),
    "pressure": (0.4, 0.1, 0.5, 0.02, 0.05),
    "suction": (-0.35, 0.05, -0.2, 0.01, 0.0),
    "temperature": (72.0, 6.0, 8.0, 0.15, 0.0),
    "thermocouple": (27.0, 2.0, 1.5, 0.08, 0.25),
    "voltage": (229.0, 2.0, 0.0, 0.4, 0.5),
    "flow": (32.0, 5.0, 14.0, 0.4, 0.0),
    "speed": (1450.0, 40.0, 300.0, 6.0, 0.0),
    "valve": (0.0, 0.0, 0.0, 0.0, 0.0),  # open (1) or closed (0), set below
}
#: Fault kinds: channel -> shift in units of that channel's operating-point gain (or noise where no gain).
FAULTS = {
    "restricted_outlet": {"flow": -0.35, "pressure": 0.4, "current": 0.25},
    "worn_bearing": {"accel1": 0.9, "accel2": 0.8, "temperature": 0.35},
    "cavitation": {"suction": 0.6, "flow": -0.25, "accel2": 0.6},
    "flow_sensor_drift": {"flow": -0.5},
}


@dataclass
class RecordedConfig:
    devices: int = 8
    seed: int = 14
    train_readings: int = 400  # normal readings at the start of each recording, for training
    test_readings: int = 800
    fault_share: tuple[float, float] = (0.33, 0.5)  # share of the test period inside fault episodes
    constant_voltage_share: float = 0.5  # devices whose voltage channel never moves


def _regimes(rng: np.random.Generator, n: int, train: int) -> np.ndarray:
    """Operating point per reading: dwell 60-250 readings per regime, every regime visited in training."""
    points = np.sort(rng.uniform(0.2, 1.0, rng.integers(2, 4)))
    out = np.empty(n)
    k, i = 0, 0
    order = list(rng.permutation(len(points)))
    while k < n:
        dwell = int(rng.integers(60, 250)) if k >= train else max(40, train // len(points))
        j = order[i % len(order)] if k < train else int(rng.integers(len(points)))
        out[k : k + dwell] = points[j]
        k, i = k + dwell, i + 1
    return out


def _episodes(rng: np.random.Generator, cfg: RecordedConfig) -> list[tuple[int, int, str]]:
    """(start, end, kind) within the test period, together the configured share of it."""
    total = int(cfg.test_readings * rng.uniform(*cfg.fault_share))
    count = int(rng.integers(1, 4))
    lengths = np.maximum(40, (rng.dirichlet(np.ones(count)) * total).astype(int))
    gaps = rng.dirichlet(np.ones(count + 1)) * (cfg.test_readings - lengths.sum())
    out, k = [], cfg.train_readings
    for length, gap in zip(lengths, gaps):
        k += int(gap)
        out.append((k, k + int(length), str(rng.choice(list(FAULTS)))))
        k += int(length)
    return out


def device_recording(cfg: RecordedConfig, index: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, str]]]:
    """Values [readings, channels], labels [readings] and fault episodes of one device's recording."""
    rng = np.random.default_rng([cfg.seed, index])
    n = cfg.train_readings + cfg.test_readings
    model = np.array([_CHANNEL_MODEL[c] for c in CHANNELS])
    level = model[:, 0] + model[:, 1] * rng.standard_normal(len(CHANNELS))
    gain = model[:, 2] * rng.uniform(0.8, 1.2, len(CHANNELS))
    noise = model[:, 3] * rng.uniform(0.6, 1.6, len(CHANNELS))
    op = _regimes(rng, n, cfg.train_readings)
    # The rig follows a new operating point over ~10 readings; the temperature over ~60.
    smooth = np.empty(n)
    slow = np.empty(n)
    smooth[0] = slow[0] = op[0]
    for k in range(1, n):
        smooth[k] = smooth[k - 1] + (op[k] - smooth[k - 1]) / 10
        slow[k] = slow[k - 1] + (op[k] - slow[k - 1]) / 60
    drive = np.tile(smooth[:, None], (1, len(CHANNELS)))
    for name in ("temperature", "thermocouple"):
        drive[:, CHANNELS.index(name)] = slow
    values = level + gain * drive + noise * rng.standard_normal((n, len(CHANNELS)))
    # Revisited operating points are never exactly the same.
    values += gain * 0.03 * rng.standard_normal(len(CHANNELS)) * np.sin(np.arange(n) / 300)[:, None]
    # Vibration grows with the square of the speed: a relation no linear model holds exactly.
    for name in ("accel1", "accel2"):
        values[:, CHANNELS.index(name)] += 0.08 * smooth**2
    labels = np.zeros(n, dtype=np.int8)
    episodes = _episodes(rng, cfg)
    unit = np.where(gain != 0, np.abs(gain), noise * 5)
    for start, end, kind in episodes:
        ramp = np.minimum(1.0, (np.arange(end - start) + 1) / 15)
        size = rng.uniform(0.5, 1.1)  # some faults are subtle
        for ch, shift in FAULTS[kind].items():
            c = CHANNELS.index(ch)
            values[start:end, c] += ramp * shift * size * unit[c]
            if kind == "cavitation" and ch.startswith("accel"):
                values[start:end, c] += 3 * noise[c] * rng.standard_normal(end - start)
        labels[start:end] = 1
    # Sensor glitches in normal operation: one channel, one reading, about 1 reading in 200.
    glitch = np.flatnonzero((rng.random(n) < 0.005) & (labels == 0))
    glitch_channel = rng.integers(0, len(CHANNELS), len(glitch))
    values[glitch, glitch_channel] += 6 * rng.choice([-1, 1], len(glitch)) * noise[glitch_channel]
    # The supply voltage: on some rigs it sits on one value for the whole training history (and
    # steps now and then later: a normal event); on the others it wanders by a few 0.5 V steps.
    v = CHANNELS.index("voltage")
    if rng.random() < cfg.constant_voltage_share:
        values[:, v] = round(level[v])
        steps = np.sort(rng.integers(cfg.train_readings, n, 3))
        for k in steps:
            values[k:, v] += rng.choice([-0.5, 0.5])
        values[rng.integers(0, cfg.train_readings, 2), v] += 0.5  # two readings in training off by one step
    for c, resolution in enumerate(model[:, 4]):  # what the sensors' converters report
        if resolution:
            values[:, c] = np.round(values[:, c] / resolution) * resolution
    # The valve position: a two-state channel that follows the operating point.
    values[:, CHANNELS.index("valve")] = (smooth > np.median(op[: cfg.train_readings])).astype(float)
    return values, labels, episodes


def device_ids(cfg: RecordedConfig) -> list[str]:
    return [f"rig-{i:02d}" for i in range(cfg.devices)]


def write_recordings(cfg: RecordedConfig, out: Path) -> dict:
    """Write train.csv (the normal start of every recording) and test.csv (the rest); returns a summary."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    header = ["device", "timestamp", "seq", *CHANNELS, "label"]
    summary: dict[str, Any] = {
        "devices": cfg.devices,
        "train_readings": 0,
        "test_readings": 0,
        "test_faulty": 0,
        "episodes": {},
    }
    with open(out / "train.csv", "w", newline="") as ftrain, open(out / "test.csv", "w", newline="") as ftest:
        writers = (csv.writer(ftrain), csv.writer(ftest))
        for w in writers:
            w.writerow(header)
        for i, device in enumerate(device_ids(cfg)):
            values, labels, episodes = device_recording(cfg, i)
            start = datetime(2019, 3, 1, 8, 0, tzinfo=timezone.utc) + timedelta(days=int(rng.integers(0, 900)))
            for k, (row, label) in enumerate(zip(values, labels)):
                ts = (start + timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%SZ")
                part = 0 if k < cfg.train_readings else 1
                writers[part].writerow([device, ts, k, *(f"{v:.6g}" for v in row), int(label)])
            summary["train_readings"] += cfg.train_readings
            summary["test_readings"] += cfg.test_readings
            summary["test_faulty"] += int(labels[cfg.train_readings :].sum())
            summary["episodes"][device] = [(s, e, kind) for s, e, kind in episodes]
    return summary


def load_split(cfg: RecordedConfig):
    """In memory, the same data as the files: {device: (train values, test values, test labels)}."""
    out = {}
    for i, device in enumerate(device_ids(cfg)):
        values, labels, _ = device_recording(cfg, i)
        t = cfg.train_readings
        # The CSV keeps 6 significant digits: so do the arrays, so both give the same numbers.
        values = np.asarray([[float(f"{v:.6g}") for v in row] for row in values])
        out[device] = (values[:t], values[t:], labels[t:])
    return out


@click.command("recorded")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for train.csv and test.csv.",
)
@click.option("--devices", type=int, default=RecordedConfig.devices, show_default=True, help="Recordings (devices).")
@click.option("--seed", type=int, default=RecordedConfig.seed, show_default=True, help="Random seed.")
@click.option(
    "--train-readings",
    type=int,
    default=RecordedConfig.train_readings,
    show_default=True,
    help="Normal readings at the start of each recording (the training part).",
)
@click.option(
    "--test-readings",
    type=int,
    default=RecordedConfig.test_readings,
    show_default=True,
    help="Readings after the training part (with the fault episodes).",
)
def main(out: Path, devices: int, seed: int, train_readings: int, test_readings: int) -> None:
    """Write a recorded fleet (old timestamps, constant and quantised channels, short histories,
    long faults, regime changes) as train.csv and test.csv for `streamtrain simulate --csv`."""
    summary = write_recordings(RecordedConfig(devices, seed, train_readings, test_readings), out)
    click.echo(
        f"{out}: {summary['devices']} devices, {summary['train_readings']} training readings, "
        f"{summary['test_readings']} test readings of which {summary['test_faulty']} faulty"
    )


if __name__ == "__main__":
    main()
