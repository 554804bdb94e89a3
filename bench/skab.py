"""SKAB through the live pipeline (``bench/quality.py``) next to baselines computed in the same run
on the same split: PCA T²+Q and Isolation Forest (``bench/baselines.py``) and a windowed
convolutional autoencoder fitted offline per experiment (the strongest published kind on SKAB's
leaderboard), each with its own usual threshold rule; and the leaderboard's published figures.
The experiments and how they are replayed: ``streamtrain.simulator.skab``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from streamtrain.simulator.publish import replay_args
from streamtrain.simulator.skab import (
    LEADERBOARD,
    SPEC,
    TRAIN_ARGS,
    WINDOW,
    Experiment,
    SkabMissing,
    live_flags,
    load,
    pooled,
    quality_of,
    write_csv,
)

REPO = Path(__file__).resolve().parents[1]
#: Where the SKAB checkout is by default (``--skab-data``): ``../shared/data/skab`` from the repository.
DEFAULT_DATA = REPO.parent / "shared" / "data" / "skab"

#: Epochs of the offline conv AE per experiment (about 340 training windows each).
EPOCHS = 12

__all__ = ["LEADERBOARD", "SPEC", "TRAIN_ARGS", "WINDOW", "SkabMissing", "live_flags", "load", "pooled", "write_csv"]


# ---------------------------------------------------------------- the live pipeline


def replay(csv_path: Path, env: dict, seq_state: Path, streamtrain: list[str]) -> dict:
    done = subprocess.run(
        [*streamtrain, *replay_args(csv_path, seq_state=seq_state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"simulate exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- offline baselines


def conv_autoencoder_flags(train: np.ndarray, test: np.ndarray, window: int = 60, seed: int = 0) -> np.ndarray:
    """The leaderboard's strongest kind, offline per experiment: a 1-D convolutional autoencoder over
    sliding windows of standardized readings (encoder 32 -> 16 filters, stride 2; mirrored decoder),
    trained on the training rows; threshold = the largest reconstruction error on the training
    windows; a test reading is flagged when any window holding it is over it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    z = (np.concatenate([train, test]) - mu) / sd

    def windows(a: np.ndarray) -> np.ndarray:
        return np.stack([a[i : i + window] for i in range(len(a) - window + 1)]).astype(np.float32)

    w_train = windows(z[: len(train)])
    n = z.shape[1]
    inputs = keras.Input((window, n))
    x = keras.layers.Conv1D(32, 7, padding="same", strides=2, activation="relu")(inputs)
    x = keras.layers.Conv1D(16, 7, padding="same", strides=2, activation="relu")(x)
    x = keras.layers.Conv1DTranspose(16, 7, padding="same", strides=2, activation="relu")(x)
    x = keras.layers.Conv1DTranspose(32, 7, padding="same", strides=2, activation="relu")(x)
    outputs = keras.layers.Conv1DTranspose(n, 7, padding="same")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(w_train, w_train, epochs=EPOCHS, batch_size=32, validation_split=0.1, verbose=0)
    threshold = float(np.max(np.mean(np.square(w_train - model.predict(w_train, verbose=0)), axis=(1, 2))))
    w_all = windows(z)
    errors = np.mean(np.square(w_all - model.predict(w_all, verbose=0)), axis=(1, 2))
    flagged = np.zeros(len(z), bool)
    for i in np.flatnonzero(errors > threshold):
        flagged[i : i + window] = True
    return flagged[len(train) :]


def baseline_flags(experiments: list[Experiment], conv_ae: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """{detector: {experiment: flags of its test rows}} for the offline baselines."""
    from bench.baselines import isolation_forest, pca_t2_q  # noqa: PLC0415

    detectors = {"PCA T²+Q (99 % limits), this run": pca_t2_q, "Isolation Forest, this run": isolation_forest}
    if conv_ae:
        detectors["Conv-AE (offline, per experiment), this run"] = conv_autoencoder_flags
    return {name: {e.name: detect(e.train, e.test) for e in experiments} for name, detect in detectors.items()}


def per_experiment_table(ours: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    lines = [
        "| experiment | test rows | anomalies | F1 | false-alarm rate | missed-alarm rate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (f, y) in ours.items():
        q = quality_of(f, y)
        lines.append(
            f"| {name} | {len(y)} | {int(y.sum())} | {q.f1:.3f} | {100 * q.false_alarm_rate:.1f} % "
            f"| {100 * q.missed_alarm_rate:.1f} % |"
        )
    return "\n".join(lines)


def timed(label: str, started: float) -> None:
    print(f"  {label} ({time.monotonic() - started:.0f} s)", flush=True)
