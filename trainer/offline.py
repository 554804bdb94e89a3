"""The trainer's per-device model fitted on in-memory arrays instead of a Kafka range.

For fast quality iterations (`python -m bench.quality_offline`): the same statistics, network,
threshold rule and training-health check as `streamtrain train --baselines device`, and the
scorer's own arithmetic (``LoadedModel.assess``) to flag readings. Only the reading differs:
arrays in memory instead of tf.data over Kafka.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamtrain.model import LoadedModel, reconstruction_error
from streamtrain.trainer.statistics import Moments, baselines_from_rows, device_thresholds, training_health
from streamtrain.trainer.train import TrainSettings, build_autoencoder, epochs_for


@dataclass
class Fitted:
    model: LoadedModel
    health: dict

    def flags(self, x: np.ndarray, device: str) -> np.ndarray:
        return self.model.assess(np.asarray(x, np.float32), [device] * len(x)).flags


def fit_arrays(train: dict[str, np.ndarray], **overrides) -> Fitted:
    """Fit on {device: training rows [readings, features]} with TrainSettings' defaults (+ overrides;
    per-device baselines unless ``baselines="global"``)."""
    s = TrainSettings(**{"baselines": "device", **overrides})
    n_features = next(iter(train.values())).shape[1]
    baselines, mean, std, _, _ = baselines_from_rows(train, s.warmup_records, n_features)
    devices = sorted(baselines.index, key=baselines.index.__getitem__) if s.baselines == "device" else sorted(train)
    if s.baselines == "device":
        xs = [(np.asarray(train[d], np.float64) - baselines.mean[i]) / baselines.std[i] for i, d in enumerate(devices)]
    else:
        xs = [(np.asarray(train[d], np.float64) - mean) / std for d in devices]
    owner = np.concatenate([np.full(len(x), i) for i, x in enumerate(xs)])
    xn = np.concatenate(xs).astype(np.float32)
    rng = np.random.default_rng(s.seed)
    order = rng.permutation(len(xn))
    hold = np.zeros(len(xn), bool)
    if s.validation_fraction:
        hold[order[::int(round(1 / s.validation_fraction))]] = True
    layers = [int(w) for w in s.layers.split(",") if w.strip()]
    model = build_autoencoder(n_features, layers, s.learning_rate, s.seed)
    history = model.fit(xn[~hold], xn[~hold], batch_size=s.batch_size, epochs=epochs_for(s, len(xn)), shuffle=True,
                        verbose=0, validation_data=(xn[hold], xn[hold]) if hold.any() else None)
    errors = reconstruction_error(xn, model(xn, training=False).numpy())
    moments = Moments()
    moments.add(xn)
    health = training_health(history.history, moments.mean_variance())
    meta = {"version": 0, "feature_names": [f"f{i}" for i in range(n_features)],
            "normalization": {"mean": list(map(float, mean)), "std": list(map(float, std))},
            "threshold": device_thresholds([errors], s.threshold_k)[0]}
    if s.baselines == "device":
        baselines.threshold = device_thresholds([errors[owner == i] for i in range(len(devices))], s.threshold_k)
        meta["baselines"] = baselines.as_metadata()
    return Fitted(LoadedModel(model, meta), health)
