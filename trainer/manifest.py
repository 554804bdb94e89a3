"""Step 5 of a run: the version's metadata (the manifest on the models topic), built from the
results of the earlier steps. It says exactly what the version was trained on and how."""

from __future__ import annotations

import json
import socket
import time

from streamtrain.model import ARTEFACT_FORMAT
from streamtrain.trainer.fit import FitResult
from streamtrain.trainer.normalization import Normalization
from streamtrain.trainer.plan import TrainingPlan
from streamtrain.trainer.settings import TrainError, TrainSettings
from streamtrain.trainer.thresholds import Thresholds

#: The manifest is one Kafka record (at most 2 MiB on the models topic): room for ~10,000 device baselines.
MAX_METADATA_BYTES = 1_800_000


def requirements(s: TrainSettings, plan: TrainingPlan) -> list[str]:
    """What a reader must implement to score the version as trained."""
    return (
        (["device_baselines"] if s.baselines == "device" else [])
        + (["sequences"] if plan.windowed else [])
        + (["smoothing"] if plan.smoothing else [])
        + (["window_score"] if window_scored(s, plan) else [])
    )


def window_scored(s: TrainSettings, plan: TrainingPlan) -> bool:
    """The window score applies: a windowed model, window_score input or residual, and no k-of-m
    smoothing (alarm logic over the newest readings' errors, so it keeps that score)."""
    return plan.windowed and s.window_score != "newest" and not plan.smoothing


def build_manifest(
    s: TrainSettings,
    plan: TrainingPlan,
    norm: Normalization,
    fitted: FitResult,
    th: Thresholds,
    *,
    version: int | None,
    parent: int | None,
    skipped: int,
    started: float,
    distribution: dict,
) -> dict:
    """``started``: ``time.monotonic()`` at the start of the run; ``distribution``: the workers and the
    partitions each read (``streamtrain.trainer.distributed``)."""
    per_device = norm.baselines is not None
    elapsed = time.monotonic() - started
    meta = {
        "version": version,
        "parent_version": parent,
        "created_at": time.time(),
        "created_by": socket.gethostname(),
        "format": ARTEFACT_FORMAT,
        "model": "conv_autoencoder" if plan.windowed else "dense_autoencoder",
        "requires": requirements(s, plan),
        "input": {"kind": "sequences", "length": plan.window} if plan.windowed else {"kind": "features"},
        "source": plan.source_range.as_dict(),
        "record_count": int(norm.rows),
        "skipped_records": int(skipped),
        "offsets_gone_before_range": int(plan.source_range.gone),
        "feature_names": plan.features,
        "normalization": {"mean": [float(v) for v in norm.mean], "std": [float(v) for v in norm.std]},
        "threshold": float(th.threshold),
        "threshold_rule": (
            f"newest reading: median + {s.window_newest_k} * MAD of training reconstruction errors (one "
            f"channel: at least their 99th percentile); window "
            f"score: {s.window_threshold_factor} * 99th percentile of the training windows' scores"
            if window_scored(s, plan)
            else f"median + {s.threshold_k} * MAD of training reconstruction errors"
        )
        + (" (per device; this one is the fleet-wide fallback)" if per_device else ""),
        "training_anomaly_rate": th.anomaly_rate,
        "config": {
            "layers": plan.layers,
            "epochs": s.epochs,
            "epochs_run": fitted.epochs,
            "min_steps": s.min_steps,
            "batch_size": s.batch_size,
            "learning_rate": s.learning_rate,
            "seed": s.seed,
            "validation_fraction": s.validation_fraction,
            "threshold_k": s.threshold_k,
            "backend": s.backend,
            "cache": fitted.cache,
            "model_kind": s.model_kind,
            "baselines": s.baselines,
            "warmup_records": s.warmup_records,
            "smoothing": s.smoothing,
            "window_score": s.window_score,
            "window_threshold_factor": s.window_threshold_factor,
            "window_newest_k": s.window_newest_k,
            "conv_filters": plan.filters,
            "kernel_size": s.kernel_size,
            "workers": distribution["workers"],
            "readers": s.readers,
        },
        "distribution": distribution,
        "metrics": {k: [float(v) for v in vals] for k, vals in fitted.history.items()},
        "training_health": th.health,
        "kafka_reads_during_fit": fitted.kafka_reads,
        "train_seconds": round(elapsed, 2),
        "fit_seconds": round(fitted.fit_seconds, 3),
        "records_per_second": round(norm.rows * fitted.epochs / max(elapsed, 1e-6), 1),
    }
    if per_device:
        meta["baselines"] = norm.baselines.as_metadata()
        meta["scale_floors"] = {
            "rule": "scale >= max(resolution, fleet scale / 20); constant: fleet scale",
            "raised": {kind: dict(zip(plan.features, counts)) for kind, counts in norm.floors.items()},
        }
    if plan.smoothing:
        meta["smoothing"] = {"k": plan.smoothing[0], "m": plan.smoothing[1]}
    if th.window_scale is not None and th.window_center is not None and th.window_threshold is not None:
        meta["window_score"] = {
            "threshold": float(th.window_threshold),
            "of": s.window_score,
            "statistic": f"mean over features of ((window mean of the {s.window_score} - centre) / scale)^2",
            "center": [float(f"{v:.7g}") for v in th.window_center],
            "scale": [float(f"{v:.7g}") for v in th.window_scale],
        }
    size = len(json.dumps(meta))
    if size > MAX_METADATA_BYTES:
        raise TrainError(
            f"model metadata of {size} bytes exceeds {MAX_METADATA_BYTES} (too many devices for one "
            "version's baselines: train per device group)"
        )
    return meta
