"""The windowed model's window score on arrays (real Keras network, no brokers): the scorer's
arithmetic (``LoadedModel.assess``) with statistics chosen the way the trainer chooses them."""

from __future__ import annotations

import numpy as np

from streamtrain.baselines import DeviceBaselines
from streamtrain.model import LoadedModel, window_means, window_score
from streamtrain.trainer.networks import build_conv_autoencoder
from streamtrain.trainer.thresholds import window_spread, window_threshold

WINDOW = 16


def windows(x: np.ndarray) -> np.ndarray:
    return np.stack([x[i - WINDOW + 1 : i + 1] for i in range(WINDOW - 1, len(x))]).astype(np.float32)


def loaded(n_features: int, train: np.ndarray, newest_threshold: float = 1e9) -> LoadedModel:
    """A one-device model whose baseline is ``train``'s median/IQR, window statistics from its windows."""
    net = build_conv_autoencoder(WINDOW, n_features, [4, 1], 3, 0.005, 7)
    med = np.median(train, 0)
    iqr = (np.percentile(train, 75, 0) - np.percentile(train, 25, 0)) / 1.349
    means = window_means((windows(train) - med) / iqr, None)
    center, scale = window_spread(means)
    threshold = window_threshold(window_score(means, center, scale), 4.0)
    b = DeviceBaselines(
        50,
        {"dev": 0},
        med[None, :],
        iqr[None, :],
        np.asarray([newest_threshold]),
        np.asarray([len(train)]),
        {},
        center[None, :],
        scale[None, :],
        np.asarray([threshold]),
    )
    meta = {
        "version": 1,
        "feature_names": [f"f{i}" for i in range(n_features)],
        "threshold": newest_threshold,
        "normalization": {"mean": [0.0] * n_features, "std": [1.0] * n_features},
        "input": {"kind": "sequences", "length": WINDOW},
        "baselines": b.as_metadata(),
        "window_score": {"of": "input", "center": center.tolist(), "scale": scale.tolist(), "threshold": threshold},
    }
    return LoadedModel(net, meta)


def test_a_lasting_shift_hidden_in_reading_noise_is_flagged_and_normal_windows_are_not():
    rng = np.random.default_rng(1)
    # One channel of bytes per second: a shift of 1.5 standard deviations, far inside one reading's noise.
    train = 1e6 + 5e4 * rng.normal(size=(400, 1))
    normal = 1e6 + 5e4 * rng.normal(size=(200, 1))
    fault = 1e6 + 5e4 * (rng.normal(size=(200, 1)) + 1.5)
    model = loaded(1, train)
    quiet = model.assess(windows(normal), ["dev"] * (200 - WINDOW + 1))
    assert quiet.flags.mean() <= 0.02 and quiet.baselines[0] == "device"
    caught = model.assess(windows(fault), ["dev"] * (200 - WINDOW + 1))
    assert caught.flags.mean() >= 0.9
    # The score is in units of the thresholds, so the record's threshold is 1.
    assert np.all(caught.thresholds == 1.0) and np.all(caught.flags == (caught.scores > 1.0))


def test_a_spike_is_still_caught_by_the_newest_readings_own_threshold():
    rng = np.random.default_rng(2)
    train = 20 + rng.normal(size=(400, 3))
    model = loaded(3, train, newest_threshold=25.0)
    x = 20 + rng.normal(size=(60, 3))
    x[40, 1] += 60  # one reading far out: the window mean moves by about 4 standard deviations only
    judged = model.assess(windows(x), ["dev"] * (60 - WINDOW + 1))
    assert judged.flags[40 - WINDOW + 1]
