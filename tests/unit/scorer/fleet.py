"""A fleet's score records with known labels, built without brokers: what the scorer would have written for
``devices`` devices over a few hours of event time, scored by two model versions (v2 replaces v1 halfway),
plus the manifests whose training ranges leave some readings out, duplicates and unlabelled readings."""

from __future__ import annotations

import random
from typing import Any

START_TS = 1_796_000_000.0  # 2026-11-30 UTC
STEP_S = 60.0
V1_THRESHOLD, V2_THRESHOLD = 0.8, 1.1
#: v1 trained on offsets [0, TRAINED) of each partition; the scores of those readings are left out.
TRAINED = 40
PARTITIONS = 3


def manifests() -> list[dict]:
    source = {
        "topic": "streamtrain.telemetry.features",
        "partitions": {str(p): [0, TRAINED] for p in range(PARTITIONS)},
    }
    later = {
        "topic": "streamtrain.telemetry.features",
        "partitions": {str(p): [TRAINED, 2 * TRAINED] for p in range(PARTITIONS)},
    }
    return [
        {
            "version": 1,
            "parent_version": None,
            "created_at": START_TS - 600,
            "source": source,
            "record_count": TRAINED * PARTITIONS,
            "threshold": V1_THRESHOLD,
            "training_health": {"status": "ok", "problems": []},
            "metrics": {"loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.6, 0.35]},
        },
        {
            "version": 2,
            "parent_version": 1,
            "created_at": START_TS + 3600,
            "source": later,
            "record_count": TRAINED * PARTITIONS,
            "threshold": V2_THRESHOLD,
            "training_health": None,
        },
    ]


def scores(devices: int, readings: int = 80, seed: int = 7) -> list[dict]:
    """Device ``d`` anomalous in one burst; quiet devices have a few false alarms, noisy ones many."""
    rng = random.Random(seed)
    out: list[dict] = []
    offsets = [0] * PARTITIONS
    for d in range(devices):
        device = f"dev-{d:04d}"
        partition = d % PARTITIONS
        burst = rng.randrange(10, readings - 10) if d % 4 else None  # every 4th device has no anomaly
        noise = 0.15 + 0.5 * (d % 7) / 6  # spread of the normal scores: some devices alarm often
        for seq in range(readings):
            version = 1 if seq < readings // 2 else 2
            threshold = V1_THRESHOLD if version == 1 else V2_THRESHOLD
            label = burst is not None and burst <= seq < burst + 5
            score = rng.lognormvariate(0.8 if label else -1.0, noise)
            offset = offsets[partition]
            offsets[partition] += 1
            rec: dict[str, Any] = {
                "device_id": device,
                "seq": seq,
                "ts": START_TS + seq * STEP_S + d * 0.5,
                "model_version": version,
                "score": score,
                "threshold": threshold,
                "is_anomaly": score > threshold,
                "baseline": "global",
                "scorer": "python",
                "source": {"partition": partition, "offset": offset},
                "label": int(label) if seq % 37 != 5 else None,
                "device_type": ("pump", "fan", "valve")[d % 3],
            }
            out.append(rec)
            if seq % 29 == 3:
                out.append(dict(rec, score=rec["score"] * 2))  # a redelivered duplicate: not counted
    return out
