"""A model version ready to score: the Keras autoencoder plus what travels with it
(feature names, normalization, threshold, optional per-device baselines, input kind and
smoothing, window score). Shared by the trainer (to save) and scorers.

Two input kinds: ``features`` (one feature record per score, a dense autoencoder) and
``sequences`` (a device's last N feature records per score, a windowed autoencoder whose
score is the reconstruction error of the newest reading). Optional k-of-m smoothing (windowed
only) flags a reading when at least k of the device's last m readings exceed the threshold;
the window carries those m readings, so the scorer stays stateless.

**Window score** (windowed models, the default since issue 23): two alarms in one score. (1) the
newest reading's reconstruction error against its threshold (``threshold``: a spike, a broken
relation between channels); (2) the *window mean* of the device's last N normalized readings
(``window_score.of = "input"``, or of their reconstruction residuals, ``"residual"``), each feature
centred and scaled by the median and IQR/1.349 that mean had over the device's own training
windows, squared and averaged over features, against its own threshold
(``window_score.center/scale/threshold``; per device ``baselines.window_center/window_scale/
window_threshold``). The score is the larger of the two, each in units of its threshold, so a
reading is flagged when its score exceeds 1. Real channels are noisy reading by reading (a motor
current whose single readings spread 25 % of its level) while a fault shifts their level for
minutes: the window mean cancels the noise and keeps the shift, and the training windows' own
spread absorbs the slow drift a device showed while it trained.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from streamtrain.baselines import DeviceBaselines
from streamtrain.modelcodec import ModelRejected, ModelVersion

ARTEFACT_FORMAT = "keras-v3"
INPUT_KINDS = ("features", "sequences")
#: What this reader implements; a version whose ``requires`` names anything else is refused.
SUPPORTED = {"device_baselines", "sequences", "smoothing", "window_score"}


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
    """Mean squared error over the feature axis: [rows] for rows, [windows, steps] for windows."""
    return np.mean(np.square(x_norm - reconstructed), axis=-1)


WINDOW_OF = ("input", "residual")


def window_means(x_norm: np.ndarray, reconstructed: np.ndarray | None) -> np.ndarray:
    """[windows, features]: each window's normalized readings (or residuals, input minus
    reconstruction, when ``reconstructed`` is given) averaged over its readings."""
    return np.mean(x_norm if reconstructed is None else x_norm - reconstructed, axis=1)


def window_score(means: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """[windows]: mean over features of the squared window mean, centred and scaled by its training spread."""
    return np.mean(np.square((means - center) / scale), axis=-1)


class BadInput(ValueError):
    """A record this model cannot score; ``reason`` becomes the dead-letter reason."""

    #: Every reason raised (exported at 0 from the start by the scorer).
    REASONS = ("missing_feature", "bad_feature_value", "not_a_sequence", "bad_window")

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Assessment:
    """Scores of one batch: score, threshold and decision per row, and which baseline applied."""

    def __init__(
        self,
        scores: np.ndarray,
        thresholds: np.ndarray,
        flags: np.ndarray,
        baselines: list[str],
        baseline_records: list[int] | None,
    ) -> None:
        self.scores, self.thresholds, self.flags = scores, thresholds, flags
        self.baselines, self.baseline_records = baselines, baseline_records

    def fields(self, i: int) -> dict:
        """Additive fields of row i's score record."""
        out: dict[str, Any] = {"baseline": self.baselines[i]}
        if self.baseline_records is not None:
            out["baseline_records"] = self.baseline_records[i]
        return out


#: Inputs must stay finite after the cast to float32 (3.5e38 is a finite double but an infinite float32).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= FLOAT32_MAX


class LoadedModel:
    """Scores raw feature rows (or windows): normalize with the training statistics, reconstruct, MSE."""

    def __init__(self, keras_model, metadata: dict) -> None:
        self.keras_model = keras_model
        self._traced: Any = None  # the traced call of keras_model (_reconstruct)
        self.metadata = metadata
        self.version = int(metadata["version"])
        self.feature_names = list(metadata["feature_names"])
        self.threshold = float(metadata["threshold"])
        norm = metadata.get("normalization") or {}
        n = len(self.feature_names)
        self.mean = np.asarray(norm.get("mean", [0.0] * n), dtype=np.float32)
        self.std = np.asarray(norm.get("std", [1.0] * n), dtype=np.float32)
        self.std = np.where(self.std > 1e-9, self.std, 1.0).astype(np.float32)
        spec = metadata.get("input") or {}
        self.input_kind = spec.get("kind", "features")
        self.window = int(spec["length"]) if self.input_kind == "sequences" else None
        self.baselines = DeviceBaselines.from_metadata(metadata, n)
        smoothing = metadata.get("smoothing") or {}
        self.smoothing = (int(smoothing["k"]), int(smoothing["m"])) if smoothing else None
        ws = metadata.get("window_score")
        self.window_of = ws.get("of", "residual") if ws else None
        self.window_scale = np.asarray(ws["scale"], dtype=np.float32) if ws else None
        self.window_center = np.asarray(ws.get("center", [0.0] * n), dtype=np.float32) if ws else None
        self.window_threshold = float(ws["threshold"]) if ws else None

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
            if (
                not isinstance(vals, list)
                or len(vals) != len(names)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in vals)
            ):
                raise ModelRejected("bad_metadata", f"normalization.{key} must have {len(names)} finite numbers")
        unknown = set(meta.get("requires") or []) - SUPPORTED
        if unknown:
            raise ModelRejected("incompatible", f"requires {sorted(unknown)}, this scorer supports {sorted(SUPPORTED)}")
        spec = meta.get("input") or {}
        kind = spec.get("kind", "features")
        if kind not in INPUT_KINDS:
            raise ModelRejected("incompatible", f"input kind {kind!r}, expected one of {INPUT_KINDS}")
        window = None
        if kind == "sequences":
            try:
                window = int(spec["length"])
            except (KeyError, TypeError, ValueError):
                raise ModelRejected("bad_metadata", "input.length must be the window length") from None
        smoothing = meta.get("smoothing")
        if smoothing:
            try:
                k, m = int(smoothing["k"]), int(smoothing["m"])
            except (KeyError, TypeError, ValueError):
                raise ModelRejected("bad_metadata", "smoothing must be {k, m}") from None
            if not (1 <= k <= m and window and m <= window):
                raise ModelRejected("bad_metadata", f"smoothing {k} of {m} needs 1 <= k <= m <= window ({window})")
        ws = meta.get("window_score")
        if ws:
            scale = ws.get("scale") if isinstance(ws, dict) else None
            center = ws.get("center", [0.0] * len(names)) if isinstance(ws, dict) else None
            if window is None or not isinstance(scale, list) or len(scale) != len(names):
                raise ModelRejected("bad_metadata", f"window_score needs a windowed model and {len(names)} scales")
            if not all(_is_number(v) and v > 0 for v in scale):
                raise ModelRejected("bad_metadata", "window_score.scale must be finite positive numbers")
            if not isinstance(center, list) or len(center) != len(names) or not all(_is_number(v) for v in center):
                raise ModelRejected("bad_metadata", f"window_score.center must have {len(names)} finite numbers")
            if not (_is_number(ws.get("threshold")) and ws["threshold"] > 0):
                raise ModelRejected("bad_metadata", "window_score.threshold must be a positive number")
            if ws.get("of", "residual") not in WINDOW_OF:
                raise ModelRejected("incompatible", f"window_score.of {ws.get('of')!r}, expected one of {WINDOW_OF}")
        b = DeviceBaselines.from_metadata(meta, len(names))  # raises ModelRejected when malformed
        if ws and b is not None and b.window_scale is None:
            raise ModelRejected("bad_metadata", "window_score with per-device baselines needs baselines.window_scale")
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
        if window is not None and (len(in_shape) != 3 or in_shape[1] != window):
            raise ModelRejected("incompatible", f"model input {in_shape} is not a window of {window} readings")
        return cls(km, meta)

    # ------------------------------------------------------------ input
    def extract(self, body: dict) -> list:
        """The model input of one record (a feature row, or a window of rows); BadInput when unusable."""
        if self.input_kind == "features":
            missing = [f for f in self.feature_names if f not in body]
            if missing:
                raise BadInput("missing_feature", f"missing {missing}")
            vals = [body[f] for f in self.feature_names]
            if not all(_is_number(v) for v in vals):
                raise BadInput("bad_feature_value", "features must be finite numbers within float32 range")
            return vals
        names, values = body.get("features"), body.get("values")
        if not isinstance(names, list) or not isinstance(values, list):
            raise BadInput("not_a_sequence", "a sequence record needs 'features' and 'values'")
        missing = [f for f in self.feature_names if f not in names]
        if missing:
            raise BadInput("missing_feature", f"missing {missing}")
        if len(values) != self.window:
            raise BadInput("bad_window", f"{len(values)} readings, the model needs {self.window}")
        cols = [names.index(f) for f in self.feature_names]
        try:
            rows = [[row[c] for c in cols] for row in values]
        except (TypeError, IndexError):
            raise BadInput("bad_window", "every reading of the window needs every feature") from None
        if not all(_is_number(v) for row in rows for v in row):
            raise BadInput("bad_feature_value", "features must be finite numbers within float32 range")
        return rows

    def empty_input(self) -> np.ndarray:
        shape = (0, len(self.feature_names)) if self.window is None else (0, self.window, len(self.feature_names))
        return np.zeros(shape, np.float32)

    # ------------------------------------------------------------ scoring
    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean) / self.std

    def _reconstruct(self, xn: np.ndarray) -> np.ndarray:
        """The network's output for a batch, through one traced graph per version (any batch size).

        An eager Keras call re-runs Python layer code per batch and cost 5x the traced call (26 vs 5 ms
        for 512 rows): most of the scorer's CPU per record. Traced at the first call, which is ``warm()``
        for a scorer's new version, off the scoring thread. Its float32 scores stay within the topology
        fixture's bounds (tests/unit/streamtrain/test_onnx_export.py), which the Java scorer is tested on.
        """
        if self._traced is None:
            import tensorflow as tf  # noqa: PLC0415 - loaded with Keras, only where a model scores

            km = self.keras_model
            spec = tf.TensorSpec((None, *km.input_shape[1:]), tf.float32)
            self._traced = tf.function(lambda a: km(a, training=False), input_signature=[spec])
        return self._traced(np.asarray(xn, np.float32)).numpy()

    def _errors(self, xn: np.ndarray) -> np.ndarray:
        """Reconstruction errors: [rows] (dense) or [windows, steps] (windowed)."""
        return reconstruction_error(xn, self._reconstruct(xn))

    def _window_scores(
        self, xn: np.ndarray, center: np.ndarray, scale: np.ndarray, newest_threshold, window_threshold
    ) -> np.ndarray:
        """The larger of the newest reading's error and the window score, each over its threshold."""
        recon = self._reconstruct(xn)
        newest = reconstruction_error(xn[:, -1], recon[:, -1])
        ws = window_score(window_means(xn, recon if self.window_of == "residual" else None), center, scale)
        return np.maximum(newest / newest_threshold, ws / window_threshold)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Fleet-wide score (global normalization) of each row or window's newest reading."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        if self.window_scale is not None:
            return self._window_scores(
                self.normalize(x), self.window_center, self.window_scale, self.threshold, self.window_threshold
            )
        e = self._errors(self.normalize(x))
        return e[:, -1] if e.ndim == 2 else e

    def assess(self, x: np.ndarray, devices: list) -> Assessment:
        """Score a batch with each device's own baseline (or the fallback) and decide per row."""
        x = np.asarray(x, dtype=np.float32)
        b = self.baselines
        if b is None:
            mean, std = self.mean, self.std
            thresholds = np.full(len(x), self.threshold, dtype=np.float32)
            kinds, records = ["global"] * len(x), None
        else:
            idx, kinds, records = b.lookup(devices)
            own = idx >= 0
            mean = np.where(own[:, None], b.mean[np.maximum(idx, 0)], self.mean)
            std = np.where(own[:, None], b.std[np.maximum(idx, 0)], self.std)
            thresholds = np.where(own, b.threshold[np.maximum(idx, 0)], self.threshold).astype(np.float32)
            if x.ndim == 3:
                mean, std = mean[:, None, :], std[:, None, :]
        if len(x) == 0:
            return Assessment(np.zeros(0, np.float32), thresholds, np.zeros(0, bool), kinds, records)
        if self.window_scale is not None:
            if b is None:
                center, scale = self.window_center[None, :], self.window_scale[None, :]
                window_threshold = np.full(len(x), self.window_threshold, np.float32)
            else:
                center = np.where(own[:, None], b.window_center[np.maximum(idx, 0)], self.window_center)
                scale = np.where(own[:, None], b.window_scale[np.maximum(idx, 0)], self.window_scale)
                window_threshold = np.where(own, b.window_threshold[np.maximum(idx, 0)], self.window_threshold)
            scores = self._window_scores((x - mean) / std, center, scale, thresholds, window_threshold)
            ones = np.ones(len(x), np.float32)  # the score is in units of the thresholds
            return Assessment(scores.astype(np.float32), ones, scores > 1.0, kinds, records)
        e = self._errors((x - mean) / std)
        if e.ndim == 2:
            scores = e[:, -1]
            if self.smoothing:
                k, m = self.smoothing
                flags = (e[:, -m:] > thresholds[:, None]).sum(axis=1) >= k
            else:
                flags = scores > thresholds
        else:
            scores, flags = e, e > thresholds
        return Assessment(scores, thresholds, flags, kinds, records)

    def warm(self) -> None:
        x = np.tile(self.mean, (8, 1)) if self.window is None else np.tile(self.mean, (8, self.window, 1))
        self.score(x)
        self.assess(x, [None] * 8)
