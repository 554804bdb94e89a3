"""Train the anomaly model from the features topic and publish it as the next model version.

A run is six steps, each a module returning a typed result:

1. ``plan``: check the options, resolve the exact offset range, find the features -> ``TrainingPlan``;
2. ``normalization``: learn the normalization from the stream (one pass) -> ``Normalization``;
3. ``fit``: train a Keras autoencoder on a ``tf.data`` pipeline that re-reads Kafka each epoch -> ``FitResult``;
4. ``thresholds``: thresholds from the training reconstruction errors -> ``Thresholds``;
5. ``manifest``: the version's metadata;
6. ``publish``: artefact + manifest on the models topic.

Two models: ``dense`` (one feature record at a time, from the features topic) and
``windowed`` (a causal 1-D convolutional autoencoder over a device's last N readings, from the
sequences topic the preprocessor builds). Two normalizations: ``global`` (one mean/std and
one threshold for the fleet) and ``device`` (each device's own mean/std and threshold from
its own training errors, after ``warmup_records``; the fleet's statistics as the fallback).
"""

from __future__ import annotations

import json
import time

import numpy as np

from streamtrain.kafka_dataset import KafkaSource, SourceRange
from streamtrain.trainer.distributed import Cluster, barrier, fit_distributed, from_chief, start_strategy
from streamtrain.trainer.fit import fit
from streamtrain.trainer.manifest import MAX_METADATA_BYTES, build_manifest, window_scored
from streamtrain.trainer.networks import build_autoencoder, build_conv_autoencoder
from streamtrain.trainer.normalization import learn_normalization
from streamtrain.trainer.plan import plan_training
from streamtrain.trainer.publish import Publisher, accepted_versions
from streamtrain.trainer.settings import TrainError, TrainSettings
from streamtrain.trainer.statistics import epochs_for
from streamtrain.trainer.thresholds import choose_thresholds

__all__ = [
    "MAX_METADATA_BYTES",
    "TrainError",
    "TrainSettings",
    "build_autoencoder",
    "build_conv_autoencoder",
    "epochs_for",
    "reproduce",
    "train_once",
]


def train_once(
    s: TrainSettings,
    source_range: SourceRange | None = None,
    version: int | None = None,
    parent: int | None = None,
    publish: bool = True,
) -> dict:
    """Train one version over ``source_range`` (default: the range the settings' bounds resolve to);
    returns its metadata (published unless ``publish`` is False), the Keras model under ``_model``."""
    started = time.monotonic()
    cluster = Cluster.from_env()
    cluster = cluster if cluster is not None and cluster.workers > 1 else None
    strategy = start_strategy(cluster) if cluster else None
    if source_range is None and s.source_range:
        source_range = SourceRange.from_dict(json.loads(s.source_range))
    if cluster and source_range is None:
        # Every worker must train on the same records: the chief resolves the range, the others take its.
        chosen = plan_training(s, None).source_range.as_dict() if cluster.chief else None
        source_range = SourceRange.from_dict(json.loads(from_chief(strategy, cluster, json.dumps(chosen))))
    plan = plan_training(s, source_range)
    source = KafkaSource(
        s.kafka_bootstrap, plan.source_range, plan.features, plan.window, readers=s.readers, apart=s.reader_process
    )
    try:
        norm = learn_normalization(s, source)
        if cluster:
            fitted, distribution = fit_distributed(s, plan, norm, cluster, strategy, version)
            if not cluster.chief:  # the chief alone chooses thresholds and publishes
                barrier(strategy)
                return {
                    "version": None,
                    "worker": cluster.index,
                    "record_count": norm.rows,
                    "threshold": None,
                    "source": plan.source_range.as_dict(),
                    "_model": fitted.model,
                }
        else:
            fitted = fit(s, plan, source, norm, version)
            distribution = {
                "strategy": None,
                "workers": 1,
                "partitions": {"0": sorted(p for p, (a, b) in plan.source_range.partitions.items() if b > a)},
            }
        th = choose_thresholds(
            source,
            norm,
            fitted,
            s.threshold_k,
            (s.window_score, s.window_threshold_factor, s.window_newest_k) if window_scored(s, plan) else None,
        )
        publisher = Publisher(s) if publish else None  # fences other trainers of the topic before numbering
        if publisher:
            version, parent = publisher.number(version, parent)
        meta = build_manifest(
            s,
            plan,
            norm,
            fitted,
            th,
            version=version,
            parent=parent,
            skipped=source.skipped,
            started=started,
            distribution=distribution,
        )
        if publisher:
            publisher.publish(fitted.model, meta, norm, th.raw_sample)
        if cluster:
            barrier(strategy)
        meta["_model"] = fitted.model
        return meta
    finally:
        source.close()  # its reader process, if any


def reproduce(s: TrainSettings, version: int) -> dict:
    """Retrain a published version from its metadata: same offsets, features, config, seed."""
    versions = {mv.version: mv for mv in accepted_versions(s)}
    if version not in versions:
        raise TrainError(f"version {version} is not on {s.topic_models} (have {sorted(versions)})")
    meta = versions[version].metadata
    cfg = meta["config"]
    cluster = Cluster.from_env()
    if cfg.get("workers", 1) != (cluster.workers if cluster else 1):
        raise TrainError(
            f"version {version} was trained by {cfg.get('workers', 1)} worker(s): reproduce it with "
            f"--workers {cfg.get('workers', 1)} (the same partitions per worker)"
        )
    s2 = s.model_copy(
        update={
            "features": ",".join(meta["feature_names"]),
            "epochs": cfg.get("epochs_run", cfg["epochs"]),
            "batch_size": cfg["batch_size"],
            "layers": ",".join(str(w) for w in cfg["layers"]),
            "learning_rate": cfg["learning_rate"],
            "seed": cfg["seed"],
            "validation_fraction": cfg["validation_fraction"],
            "threshold_k": cfg["threshold_k"],
            "min_steps": cfg.get("min_steps", 0),  # versions from before min_steps trained exactly `epochs`
            **{
                k: cfg[k]
                for k in (
                    "model_kind",
                    "baselines",
                    "warmup_records",
                    "smoothing",
                    "kernel_size",
                    "window_score",
                    "window_threshold_factor",
                    "window_newest_k",
                )
                if k in cfg
            },
            # versions from before the window score scored the newest reading
            **({} if "window_score" in cfg else {"window_score": "newest"}),
            **({"conv_filters": ",".join(str(f) for f in cfg["conv_filters"])} if "conv_filters" in cfg else {}),
            ("topic_sequences" if cfg.get("model_kind") == "windowed" else "topic_features"): meta["source"]["topic"],
        }
    )
    again = train_once(
        s2, SourceRange.from_dict(meta["source"]), version=version, parent=meta.get("parent_version"), publish=False
    )
    if again.get("worker"):
        return {"version": version, "worker": again["worker"]}
    return {
        "version": version,
        "record_count": (meta["record_count"], again["record_count"]),
        "normalization_equal": np.allclose(meta["normalization"]["mean"], again["normalization"]["mean"])
        and np.allclose(meta["normalization"]["std"], again["normalization"]["std"]),
        "threshold": (meta["threshold"], again["threshold"]),
        "final_loss": (meta["metrics"]["loss"][-1], again["metrics"]["loss"][-1]),
    }
