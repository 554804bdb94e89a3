"""Settings of `streamtrain train` (env prefix STREAMTRAIN_), in the core: the trainer reads them, and the
operator generates the StreamingTraining CRD's model fields from them (defaults, bounds, descriptions)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from streamtrain.settings import CommonSettings


class TrainSettings(CommonSettings):
    """Settings of `streamtrain train` (env prefix STREAMTRAIN_)."""

    train_records: int | None = Field(20000, ge=1, description="Records to train on (the newest with from_end)")
    from_end: bool = Field(False, description="Train on the newest records instead of the oldest")
    since_last: bool = Field(False, description="Start where the newest published version's range ended")
    since_ms: int | None = Field(None, description="Only records that arrived in Kafka at or after this (epoch ms)")
    until_ms: int | None = Field(None, description="Only records that arrived in Kafka before this (epoch ms)")
    features: str | None = Field(None, description="Comma-separated feature names (default: numeric fields found)")
    epochs: int | None = Field(
        None,
        ge=1,
        description="Passes over the same offset range; default: 20, or more for a small range (see min_steps)",
    )
    min_steps: int = Field(
        1500,
        ge=0,
        description="Without epochs: optimizer steps a run takes at least, so a small "
        "range (a few hundred readings per device) still converges; at "
        "most 200 epochs",
    )
    batch_size: int = Field(256, ge=1, description="Rows per training step")
    layers: str = Field("16,4,16", description="Hidden layer widths of the autoencoder, comma-separated")
    learning_rate: float = Field(0.005, gt=0, description="Adam learning rate")
    cache: bool = Field(False, description="Cache the first read in memory instead of re-reading Kafka per epoch")
    validation_fraction: float = Field(0.1, ge=0, lt=0.5, description="Share of each batch held out for validation")
    threshold_k: float = Field(8.0, gt=0, description="Threshold = median + k * MAD of training errors")
    seed: int = Field(7, description="Seed for weights and shuffling")
    tensorboard_dir: Path | None = Field(None, description="TensorBoard logs go here (default: none)")
    min_records: int = Field(500, ge=1, description="Refuse to train on fewer usable records")
    backend: str = Field("confluent", description="confluent (default) or tfio (tensorflow-io's Kafka dataset)")
    source_range: str | None = Field(
        None,
        description="Exact range to train on, as JSON like a manifest's source "
        "({topic, partitions: {p: [start, end]}}); overrides the "
        "bounds above (the multi-worker launcher pins it)",
    )
    worker_hosts: str | None = Field(
        None,
        description="host:port of every training worker, in index order; with "
        "JOB_COMPLETION_INDEX (a Kubernetes indexed Job) this process "
        "is that worker (TF_CONFIG, when set, wins)",
    )
    readers: int = Field(
        3,
        ge=1,
        description="Partitions of the range read in parallel (threads, each with its own "
        "consumer), decoding ahead of the training step",
    )
    reader_process: bool = Field(
        True,
        description="Read and decode the range in a child process (off the training process's GIL); "
        "false: in threads of the training process (multi-worker fits always read in threads)",
    )
    model_kind: Literal["dense", "windowed"] = Field(
        "dense",
        description="dense: autoencoder on single feature records (features topic); windowed: 1-D conv "
        "autoencoder on a device's last N readings (sequences topic)",
    )
    baselines: Literal["global", "device"] = Field(
        "global",
        description="global: one normalization and threshold for the fleet; device: per-device mean, std "
        "and threshold learned from the stream, fleet-wide fallback for new devices",
    )
    warmup_records: int = Field(50, ge=2, description="Training records a device needs before its own baseline is used")
    smoothing: str | None = Field(
        None,
        description="Windowed models: flag when k of the last m readings exceed "
        "the threshold, as 'k/m' (e.g. 2/3); default off",
    )
    window_score: Literal["input", "residual", "newest"] = Field(
        "input",
        description="Windowed models: input (default): flag a reading when the mean of the device's last N "
        "normalized readings (each feature centred and scaled by that mean's spread over the training "
        "windows: noise averages out, a lasting fault does not) or the newest reading's reconstruction "
        "error passes its threshold; residual: the same with the window mean of the reconstruction "
        "residuals; newest: the newest reading's error alone (also whenever smoothing is set)",
    )
    window_threshold_factor: float = Field(
        4.0,
        gt=0,
        description="Windowed models with window_score input or residual: threshold = this factor x the 99th percentile "
        "of the training windows' scores (per device with per-device baselines)",
    )
    window_newest_k: float = Field(
        8.0,
        gt=0,
        description="Windowed models with a window score: the newest reading's own alarm (a spike) next to "
        "it, at median + k * MAD of the training errors (one channel: at least their 99th percentile)",
    )
    conv_filters: str = Field(
        "16,1", description="Windowed models: filters of the encoder's causal conv layers; the last is the bottleneck"
    )
    kernel_size: int = Field(5, ge=1, description="Windowed models: kernel size of the causal conv layers")
    model_keep_versions: int = Field(
        10,
        ge=1,
        description="Model versions kept on the models topic: publishing a version deletes (tombstones) the "
        "older ones beyond this many, in the same transaction, so readers never hold them all",
    )
    model_signing_key_file: Path | None = Field(
        None,
        description="Ed25519 private key (PEM, e.g. a mounted Secret) the trainer signs each version's manifest "
        "with; scorers given its public key in model_verify_keys refuse versions it did not sign. Unset: unsigned",
    )
