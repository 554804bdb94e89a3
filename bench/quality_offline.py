"""The quality benchmark on in-memory arrays: StreamTrain's model (the trainer's own functions,
no Kafka) against the classic baselines, on the recorded fleet's split. Fast, for iterating;
`make bench-quality` confirms through the live pipeline.

    python -m bench.quality_offline [--devices 8] [--seed 14]
"""

from __future__ import annotations

import os
import time

import click
import numpy as np

from bench.baselines import run_baselines
from streamtrain.quality import Quality
from streamtrain.simulator.recorded import RecordedConfig, load_split


def quality_of(flags: np.ndarray, labels: np.ndarray) -> Quality:
    q = Quality()
    q.tp = int(np.sum(flags & labels))
    q.fp = int(np.sum(flags & ~labels))
    q.fn = int(np.sum(~flags & labels))
    q.tn = int(np.sum(~flags & ~labels))
    return q


def row(name: str, q: Quality) -> str:
    d = q.as_dict()
    return (
        f"| {name} | {d['records']:,} | {d['precision']:.3f} | {d['recall']:.3f} | **{d['f1']:.3f}** "
        f"| {100 * d['false_alarm_rate']:.1f} % | {100 * d['missed_alarm_rate']:.1f} % |"
    )


HEADER = (
    "| detector | scored | precision | recall | F1 | false-alarm rate | missed-alarm rate |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
)


def ours_offline(split: dict, **overrides) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train StreamTrain's default model on the training parts and flag the test parts."""
    from streamtrain.trainer.offline import fit_arrays  # noqa: PLC0415 - TensorFlow loads here

    devices = sorted(split)
    fitted = fit_arrays({d: split[d][0] for d in devices}, **overrides)
    flags, labels = [], []
    for d in devices:
        flags.append(fitted.flags(split[d][1], d))
        labels.append(np.asarray(split[d][2], bool))
    return np.concatenate(flags), np.concatenate(labels), fitted.health


def simulated_split(profile: str, seed: int) -> dict:
    """The live simulator's fleets as the quality tests and the demo use them: train, then test."""
    from streamtrain.simulator.fleet import Fleet, FleetConfig  # noqa: PLC0415
    from streamtrain.simulator.hetero import HeteroConfig, HeterogeneousFleet  # noqa: PLC0415

    if profile == "heterogeneous":  # tests/fleet/test_fleet_quality_e2e.py
        fleet, train, total = (
            HeterogeneousFleet(HeteroConfig(devices=30, seed=seed, fault_fraction=0.06, episode_readings=(15, 60))),
            300,
            480,
        )
    else:  # the demo: uniform fleet, 40 devices
        fleet, train, total = Fleet(FleetConfig(devices=40, seed=seed)), 300, 600
    steps = [fleet.step() for _ in range(total)]
    values = np.stack([v for v, *_ in steps], axis=1)  # [devices, steps, 4 channels]
    labels = np.stack([np.asarray(lab) for _, lab, *_ in steps], axis=1)
    power = values[:, :, 1:2] * values[:, :, 3:4]  # the default spec's derived feature
    x = np.concatenate([values, power], axis=2)
    return {f"d{i:03d}": (x[i, :train], x[i, train:], labels[i, train:]) for i in range(len(x))}


@click.command()
@click.option(
    "--profile",
    type=click.Choice(["recorded", "heterogeneous", "uniform"]),
    default="recorded",
    show_default=True,
    help="recorded: the recorded fleet; heterogeneous/uniform: the simulator's fleets.",
)
@click.option("--devices", type=int, default=RecordedConfig.devices, show_default=True)
@click.option("--seed", type=int, default=RecordedConfig.seed, show_default=True)
@click.option("--set", "sets", multiple=True, help="Trainer setting override NAME=VALUE (repeatable).")
def main(profile: str, devices: int, seed: int, sets: tuple[str, ...]) -> None:
    """Offline quality table of StreamTrain's default model and the classic baselines."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    split = (
        load_split(RecordedConfig(devices=devices, seed=seed))
        if profile == "recorded"
        else simulated_split(profile, seed)
    )
    overrides = dict(s.split("=", 1) for s in sets)
    print(HEADER)
    for name, (flags, labels) in run_baselines(split).items():
        print(row(name, quality_of(flags, labels)))
    t0 = time.monotonic()
    flags, labels, health = ours_offline(split, **overrides)
    print(row("StreamTrain (default)", quality_of(flags, labels)))
    print(f"training: {health} ({time.monotonic() - t0:.1f} s)")


if __name__ == "__main__":
    main()
