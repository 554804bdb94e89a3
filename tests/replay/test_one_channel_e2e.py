"""Devices with a single channel, at scales orders of magnitude apart (bytes per second, a
percentage, degrees), replayed live and trained with the README's defaults for recordings: the
training is healthy and a lasting fault on each one-channel device is caught.

Why it works with one channel: the windowed model's alarm is the window score (``streamtrain.model``)
next to the newest reading's reconstruction error. An autoencoder over one channel can learn the
identity and flag nothing; the window score needs no bottleneck, it compares the mean of the last
N readings with how that mean moved over the device's own training windows. Each device is
normalized with its own median and IQR, so a stream in bytes per second and one in percent train
together on the same scale.
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone

import numpy as np
import pytest

from streamtrain.quality import Quality
from tests.replay.live import train_and_score

WINDOW, TRAIN, TEST = 16, 400, 300
FAULT = range(TRAIN + 100, TRAIN + 200)
#: device -> (level, noise): scales from about 1 to about a million.
DEVICES = {"net-bytes": (1.2e6, 5e4), "cpu-percent": (40.0, 3.0), "probe-celsius": (21.0, 0.2)}
SPEC = f"features: [value]\nsequences: {{length: {WINDOW}}}\nlabel: label\n"
TRAIN_ARGS = ["--model", "windowed", "--baselines", "device", "--max-records", "1000000"]


def write(path, rows: range, rng: np.random.Generator) -> int:
    start = datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp()
    n = 0
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["device", "timestamp", "value", "label"])
        for device, (level, noise) in DEVICES.items():
            for i in rows:
                fault = i in FAULT
                value = level + noise * (rng.normal() + (3.0 if fault else 0.0))
                w.writerow(
                    [device, datetime.fromtimestamp(start + i, timezone.utc).isoformat(), f"{value:.6g}", int(fault)]
                )
                n += 1
    return n


@pytest.mark.e2e
def test_one_channel_devices_at_any_scale_train_healthily_and_their_faults_are_caught(pipeline, tmp_path):
    rng = np.random.default_rng(23)
    n_train = write(tmp_path / "train.csv", range(TRAIN), rng)
    n_test = write(tmp_path / "test.csv", range(TRAIN, TRAIN + TEST), rng)
    windows = n_train - len(DEVICES) * (WINDOW - 1)
    meta, scores = train_and_score(
        pipeline, tmp_path, SPEC, tmp_path / "train.csv", tmp_path / "test.csv", windows, n_test, TRAIN_ARGS
    )
    assert meta["training_health"]["status"] == "ok", meta["training_health"]
    assert meta["window_score"]["of"] == "input" and len(meta["baselines"]["window_threshold"]) == len(DEVICES)
    assert len({(s["device_id"], s["seq"]) for s in scores}) == n_test == len(scores)
    tail = range(FAULT.stop, FAULT.stop + WINDOW - 1)  # windows that still hold fault readings
    for device in DEVICES:
        q, rest = Quality(), Quality()
        for s in scores:
            if s["device_id"] == device:
                q.add(bool(s["is_anomaly"]), bool(s["label"]))
                if s["seq"] not in tail:
                    rest.add(bool(s["is_anomaly"]), bool(s["label"]))
        # Alarms in the window's length after a fault ends are the price of the window mean; the
        # newest reading's own threshold (median + 8 MAD) adds a few per hundred normal readings.
        assert q.recall >= 0.8 and rest.false_alarm_rate <= 0.1, (device, q.as_dict(), rest.as_dict())
