"""The per-device scale floors and the training-health verdict, on arrays (no brokers)."""

from __future__ import annotations

import numpy as np
import pytest

from streamtrain.trainer.statistics import baselines_from_rows, resolution, training_health


def test_scales_never_collapse_on_constant_quantised_or_near_constant_channels():
    rng = np.random.default_rng(0)
    per_device = {}
    for d in range(5):
        rows = np.column_stack(
            [
                10 + rng.normal(0, 1 + d, 300),  # ordinary channel, scales 1..5
                np.round(rng.normal(0.4, 0.01, 300) / 0.05) * 0.05,  # quantised to 0.05, nearly always one value
                np.full(300, 229.0),  # constant on this device...
                5 + rng.normal(0, 0.2, 300),  # ordinary channel
            ]
        )
        if d == 0:
            rows[:, 3] = 5 + rng.normal(0, 1e-7, 300)  # ...and float noise around a constant
        if d >= 3:
            rows[:, 2] = 229 + rng.normal(0, 0.5, 300)  # but not on every device
        per_device[f"d{d}"] = rows
    b, *_, floors = baselines_from_rows(per_device, 50, 4)
    std = b.std
    assert np.all(std > 0)
    # The ordinary channel keeps its own robust scale (IQR / 1.349 of a normal ~ its sigma).
    assert std[b.index["d2"], 0] == pytest.approx(3, rel=0.2)
    # Quantised: at least one step of its resolution.
    assert np.all(std[:, 1] >= 0.05 - 1e-9)
    # Constant on d0..d2: the scale of the devices where it moves (~0.5).
    assert std[b.index["d0"], 2] == pytest.approx(np.median(std[3:, 2]), rel=1e-6)
    assert floors["constant"][2] == 3
    # Float noise around a constant: at least 1/20 of the fleet's scale of that channel (~0.2).
    assert std[b.index["d0"], 3] >= 0.2 / 20 * 0.8
    assert floors["fleet"][3] == 1


def test_a_channel_constant_across_the_fleet_gets_one_percent_of_its_magnitude():
    b, *_ = baselines_from_rows(
        {f"d{d}": np.column_stack([np.arange(100.0), np.full(100, -40.0)]) for d in range(3)}, 50, 2
    )
    assert np.allclose(b.std[:, 1], 0.4)


def test_resolution_is_the_smallest_step_between_distinct_values():
    assert resolution(np.array([[1.0, 3.0], [1.5, 3.0], [2.5, 3.0]])).tolist() == [0.5, 0.0]


def test_training_health_verdicts():
    ok = training_health({"loss": [1.0, 0.3, 0.1], "val_loss": [1.0, 0.3, 0.12]}, 1.0)
    assert ok["status"] == "ok" and ok["error_ratio"] == pytest.approx(0.12)
    flat = training_health({"loss": [1.0, 0.98, 0.95], "val_loss": [1.0, 0.99, 0.97]}, 1.0)
    assert flat["status"] == "no_better_than_constant"
    rising = training_health({"loss": [0.5, 0.7, 0.9]}, 10.0)
    assert rising["status"] == "not_converged" and "did not fall" in rising["problems"][0]
    assert training_health({"loss": [0.5, float("nan")]}, 1.0)["status"] == "not_converged"


def test_a_small_range_gets_enough_optimizer_steps_unless_epochs_are_given():
    from streamtrain.trainer.train import TrainSettings, epochs_for

    assert epochs_for(TrainSettings(), 3200) == 125  # 12 steps per epoch, 1,500 steps
    assert epochs_for(TrainSettings(), 200_000) == 20  # a large range: the usual 20
    assert epochs_for(TrainSettings(), 100) == 200  # capped
    assert epochs_for(TrainSettings(epochs=3), 3200) == 3  # given: exactly that
