"""A model version ready to score: the Keras autoencoder plus what travels with it
(feature names, normalization, threshold). Shared by the trainer (to save) and scorers."""
from __future__ import annotations

import io
import os
import tempfile
import zipfile

import numpy as np

from streamtrain.modelcodec import ModelRejected, ModelVersion

ARTEFACT_FORMAT = "keras-v3"


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415 - TensorFlow loads only in programs that need it
    return keras


def save_artefact(model) -> bytes:
    """Serialize a Keras model to the bytes of a .keras file."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def reconstruction_error(x_norm: np.ndarray, reconstructed: np.ndarray) -> np.ndarray:
    return np.mean(np.square(x_norm - reconstructed), axis=1)


class LoadedModel:
    """Scores raw feature rows: normalize with the training statistics, reconstruct, MSE."""

    def __init__(self, keras_model, metadata: dict) -> None:
        self.keras_model = keras_model
        self.metadata = metadata
        self.version = int(metadata["version"])
        self.feature_names = list(metadata["feature_names"])
        self.threshold = float(metadata["threshold"])
        norm = metadata.get("normalization") or {}
        n = len(self.feature_names)
        self.mean = np.asarray(norm.get("mean", [0.0] * n), dtype=np.float32)
        self.std = np.asarray(norm.get("std", [1.0] * n), dtype=np.float32)
        self.std = np.where(self.std > 1e-9, self.std, 1.0).astype(np.float32)

    @classmethod
    def from_version(cls, mv: ModelVersion) -> "LoadedModel":
        meta = mv.metadata
        if meta.get("format") != ARTEFACT_FORMAT:
            raise ModelRejected("incompatible", f"artefact format {meta.get('format')!r}, expected {ARTEFACT_FORMAT}")
        names = meta.get("feature_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ModelRejected("bad_metadata", "feature_names must be a non-empty list of strings")
        try:
            threshold = float(meta["threshold"])
        except (TypeError, ValueError):
            raise ModelRejected("bad_metadata", f"threshold {meta.get('threshold')!r} is not a number") from None
        if not np.isfinite(threshold) or threshold <= 0:
            raise ModelRejected("bad_metadata", f"threshold {threshold} must be finite and positive")
        if not isinstance(meta.get("version"), int) or isinstance(meta.get("version"), bool):
            raise ModelRejected("bad_metadata", f"version {str(meta.get('version'))[:40]!r} is not an integer")
        norm = meta.get("normalization") or {}
        if not isinstance(norm, dict):
            raise ModelRejected("bad_metadata", "normalization must be an object with mean and std")
        for key in ("mean", "std"):
            vals = norm.get(key)
            if not isinstance(vals, list) or len(vals) != len(names) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in vals):
                raise ModelRejected("bad_metadata", f"normalization.{key} must have {len(names)} finite numbers")
        if not zipfile.is_zipfile(io.BytesIO(mv.artefact)):
            raise ModelRejected("not_a_model", f"artefact of {len(mv.artefact)} bytes is not a .keras archive")
        keras = _keras()
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.keras")
            with open(path, "wb") as fh:
                fh.write(mv.artefact)
            try:
                km = keras.models.load_model(path, compile=False)
            except Exception as exc:  # noqa: BLE001 - any load failure refuses the version
                raise ModelRejected("load_failed", f"{type(exc).__name__}: {str(exc)[:300]}") from None
        n = len(names)
        in_shape, out_shape = tuple(km.input_shape), tuple(km.output_shape)
        if in_shape[-1] != n or out_shape[-1] != n:
            raise ModelRejected("incompatible", f"model maps {in_shape} -> {out_shape}, metadata has {n} features")
        return cls(km, meta)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean) / self.std

    def score(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        xn = self.normalize(x)
        rec = self.keras_model(xn, training=False).numpy()
        return reconstruction_error(xn, rec)

    def warm(self) -> None:
        self.score(np.tile(self.mean, (8, 1)))
