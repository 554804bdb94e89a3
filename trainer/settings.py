"""Settings of `streamtrain train` (their class lives in the core, `streamtrain.train_settings`, so the
operator generates its CRD from it) and the trainer's refusal error."""

from __future__ import annotations

from streamtrain.train_settings import TrainSettings

__all__ = ["TrainError", "TrainSettings"]


class TrainError(RuntimeError):
    """A training run refused with a reason the operator can act on (too few records, bad options)."""
