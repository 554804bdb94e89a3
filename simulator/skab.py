"""SKAB (Skoltech Anomaly Benchmark) as replay files: a public real benchmark to replay through the
live pipeline the way the README tells a user (``bench/skab.py`` and ``make bench-quality``,
``tests/replay/test_skab_e2e.py``).

SKAB: 34 recorded experiments on a water-circulation testbed, 8 channels at 1 Hz, valve closures,
rotor imbalance, cavitation and other faults lasting minutes (github.com/waico/SKAB, GPL-3.0; get
it from there, it is not part of this repository). Its leaderboard's protocol ("outlier
detection"): per experiment the first 400 rows train and every later row is test; point-wise
precision and recall pooled over the test rows of all 34 experiments.

Live: each experiment is one device. One spec names the eight channels (``SPEC``, with
``sequences: {length: 16}`` like ``docs/fleet_spec.yaml``); the training rows of every experiment
are replayed (``simulate --csv``), ``train --model windowed --baselines device`` trains with every
other setting at its default, a scorer starts with ``--start-at latest`` and the test rows are
replayed; the scores topic is read back and compared with SKAB's labels. Nothing of SKAB is
written into the repository: the CSVs go to a temporary directory.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from streamtrain.quality import Quality

#: SKAB's column -> the feature name in StreamTrain's records.
COLUMNS = {
    "Accelerometer1RMS": "accel1_rms",
    "Accelerometer2RMS": "accel2_rms",
    "Current": "current",
    "Pressure": "pressure",
    "Temperature": "temperature",
    "Thermocouple": "thermocouple",
    "Voltage": "voltage",
    "Volume Flow RateRMS": "flow_rms",
}
CHANNELS = list(COLUMNS.values())
TRAIN_ROWS = 400  # SKAB's protocol
WINDOW = 16
SPEC = f"features: [{', '.join(CHANNELS)}]\nsequences: {{length: {WINDOW}}}\nlabel: label\n"
#: `streamtrain train` as the README tells a user for recordings: per-device baselines, windowed model.
TRAIN_ARGS = ["--model", "windowed", "--baselines", "device", "--max-records", "1000000"]
#: The SKAB leaderboard's outlier-detection table (README of github.com/waico/SKAB): F1, FAR, MAR.
LEADERBOARD = [
    ("Conv-AE (SKAB leaderboard)", 0.78, 0.1355, 0.2802),
    ("PCA T²+Q (SKAB leaderboard)", 0.76, 0.2662, 0.2492),
    ("LSTM-AE (SKAB leaderboard)", 0.74, 0.2996, 0.2592),
]


@dataclass
class Experiment:
    name: str  # the device id: folder-number, e.g. valve1-3
    times: list[str]
    x: np.ndarray  # [rows, 8]
    labels: np.ndarray  # [rows] bool

    @property
    def train(self) -> np.ndarray:
        return self.x[:TRAIN_ROWS]

    @property
    def test(self) -> np.ndarray:
        return self.x[TRAIN_ROWS:]

    @property
    def test_labels(self) -> np.ndarray:
        return self.labels[TRAIN_ROWS:]


class SkabMissing(FileNotFoundError):
    pass


def load(data: Path, only: list[str] | None = None) -> list[Experiment]:
    """The 34 experiments with anomalies (valve1, valve2, other), in file order; ``only``: their names."""
    root = data / "data"
    if not root.is_dir():
        raise SkabMissing(
            f"no SKAB data at {data} (expected {root}/valve1/*.csv ...): clone it from its authors, "
            f"`git clone https://github.com/waico/SKAB`, and pass --skab-data SKAB (the clone's folder)"
        )
    out = []
    for folder in ("valve1", "valve2", "other"):
        for path in sorted((root / folder).glob("*.csv"), key=lambda p: int(p.stem)):
            name = f"{folder}-{path.stem}"
            if only is not None and name not in only:
                continue
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter=";"))
            out.append(
                Experiment(
                    name,
                    [r["datetime"] for r in rows],
                    np.asarray([[float(r[c]) for c in COLUMNS] for r in rows]),
                    np.asarray([float(r["anomaly"]) > 0 for r in rows]),
                )
            )
    if not out:
        raise SkabMissing(f"no SKAB experiments under {root}")
    return out


def write_csv(path: Path, experiments: list[Experiment], part: str) -> int:
    """The training (first 400 rows) or test part of every experiment as one replay CSV; its row count."""
    n = 0
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["device", "timestamp", *CHANNELS, "label"])
        for e in experiments:
            rows = range(TRAIN_ROWS) if part == "train" else range(TRAIN_ROWS, len(e.x))
            for i in rows:
                w.writerow(
                    [e.name, datetime.fromisoformat(e.times[i]).isoformat() + "+00:00", *e.x[i], int(e.labels[i])]
                )
                n += 1
    return n


def quality_of(flags: np.ndarray, labels: np.ndarray) -> Quality:
    f, y = np.asarray(flags, bool), np.asarray(labels, bool)
    return Quality(tp=int(np.sum(f & y)), fp=int(np.sum(f & ~y)), tn=int(np.sum(~f & ~y)), fn=int(np.sum(~f & y)))


def live_flags(scores: list[dict], experiments: list[Experiment]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{experiment: (flags, labels)} over its test rows from the score records (one per reading;
    a test reading without a score counts as not flagged, so a loss shows as missed alarms)."""
    by_key = {(s["device_id"], int(s["seq"])): bool(s["is_anomaly"]) for s in scores}
    out = {}
    for e in experiments:
        seqs = range(TRAIN_ROWS, len(e.x))
        out[e.name] = (np.asarray([by_key.get((e.name, q), False) for q in seqs]), e.test_labels)
    return out


def pooled(flags: dict[str, tuple[np.ndarray, np.ndarray]]) -> Quality:
    return quality_of(np.concatenate([f for f, _ in flags.values()]), np.concatenate([y for _, y in flags.values()]))
