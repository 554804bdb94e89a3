"""`streamtrain simulate`: a simulated fleet or a CSV replay, published over MQTT QoS 1."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from prometheus_client import CollectorRegistry

from streamtrain import exitcodes, logs
from streamtrain.lifecycle import StopFlag
from streamtrain.metrics import MetricsServer
from streamtrain.mqtt import MqttError
from streamtrain.settings import load
from streamtrain.simulator import seqstate
from streamtrain.simulator.fleet import ANOMALY_KINDS, Fleet, FleetConfig
from streamtrain.simulator.hetero import DEVICE_TYPES, HeteroConfig, HeterogeneousFleet
from streamtrain.simulator.publish import CsvReplayConfig, PublishReport, replay_csv, run_fleet
from streamtrain.simulator.settings import SimulatorSettings

log = logs.get("simulator")


@click.command("simulate")
@click.option("--devices", type=int, help="Number of simulated devices (default 100).")
@click.option("--rate", type=float, help="Readings per second per device (default 1; 0 = flat out).")
@click.option("--count", type=int, help="Readings per device, then stop.")
@click.option("--duration", "duration_s", type=float, help="Stop after this many seconds.")
@click.option("--anomaly-rate", type=float, help="Probability per reading that an anomaly starts (default 0.004).")
@click.option(
    "--anomaly-kinds",
    default=None,
    help=f"Comma-separated anomaly kinds to inject (uniform: {','.join(ANOMALY_KINDS)}; "
    "heterogeneous: spike,degraded,stuck, default spike,degraded).",
)
@click.option(
    "--profile",
    type=click.Choice(["uniform", "heterogeneous"]),
    default="uniform",
    show_default=True,
    help="uniform: one device type, short episodes; heterogeneous: device types with their own "
    "baselines, noise and drift, and lasting degraded states.",
)
@click.option(
    "--device-types",
    default=",".join(DEVICE_TYPES),
    show_default=True,
    help="Heterogeneous: comma-separated device types, assigned in turn.",
)
@click.option(
    "--fault-fraction",
    type=float,
    default=0.05,
    show_default=True,
    help="Heterogeneous: aimed share of anomalous readings (0.01 rare faults, 0.3 long faulty periods).",
)
@click.option(
    "--episode-readings",
    default="20,180",
    show_default=True,
    help="Heterogeneous: min,max readings of a lasting episode (degraded, stuck).",
)
@click.option("--seed", type=int, help="Random seed (default 42).")
@click.option("--connections", type=int, help="MQTT connections shared by the devices (default 4).")
@click.option(
    "--credentials",
    "credentials_file",
    type=click.Path(path_type=Path),
    help="device_id:password file (0600; `streamtrain stack passwd-fleet` writes one): each device "
    "connects on its own connection as itself (client id and user = device id). The fleet's "
    "device ids are the file's, in file order (--devices takes the first N, default all); "
    "--connections is ignored. CSV replay: every device of the file needs a line. Devices the "
    "broker refuses are named on stderr and in the report's `refused`, publish nothing, and "
    "the exit code is 1.",
)
@click.option("--mqtt-host", help="MQTT broker host (default 127.0.0.1).")
@click.option("--mqtt-port", type=int, help="MQTT broker port (default 1883).")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Replay this CSV file instead of simulating.",
)
@click.option("--device-id", help="CSV replay: device id for every row.")
@click.option("--device-column", help="CSV replay: column holding the device id.")
@click.option("--timestamp-column", default="timestamp", show_default=True, help="CSV replay: timestamp column.")
@click.option("--label-column", help="CSV replay: ground-truth label column (0/1).")
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="CSV replay: speed factor over the recorded timing (0 = as fast as possible).",
)
@click.option(
    "--seq-column",
    default="seq",
    show_default=True,
    help="CSV replay: column holding each reading's seq (whole number >= 0). Without it, each device's "
    "seqs continue after the newest one an earlier replay published to the same broker.",
)
@click.option(
    "--seq-state",
    "seq_state_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV replay: file remembering the newest seq per broker and device (default .streamtrain/replay-seqs.json).",
)
@click.pass_context
def command(
    ctx,
    devices,
    rate,
    count,
    duration_s,
    anomaly_rate,
    anomaly_kinds,
    profile,
    device_types,
    fault_fraction,
    episode_readings,
    seed,
    connections,
    credentials_file,
    mqtt_host,
    mqtt_port,
    csv_path,
    device_id,
    device_column,
    timestamp_column,
    label_column,
    speed,
    seq_column,
    seq_state_file,
) -> None:
    """Publish JSON telemetry to devices/<id>/telemetry.

    Simulated readings carry device_id, ts, seq, four correlated channels (temperature,
    current, vibration, pressure) and ground truth in `label`/`anomaly`, never a feature.
    With --csv, the file's numeric columns are replayed as channels instead. With
    --profile heterogeneous, devices come from several types, each with its own baseline,
    noise and drift, and faults include degraded states that last.
    """
    given = dict(
        devices=devices,
        rate=rate,
        count=count,
        duration_s=duration_s,
        anomaly_rate=anomaly_rate,
        seed=seed,
        connections=connections,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        credentials_file=credentials_file,
        seq_state_file=seq_state_file,
    )
    s = load(SimulatorSettings, **(ctx.obj or {}).get("log", {}), **{k: v for k, v in given.items() if v is not None})
    stop = StopFlag().install()
    # /healthz and /readyz answer the kubelet's probes (the chart's Pods have them), /metrics carries
    # streamtrain_ready like every program's. On Kubernetes the port is set (STREAMTRAIN_METRICS_PORT).
    server = MetricsServer(CollectorRegistry(), s.metrics_port).start() if s.metrics_port else None
    try:
        passwords = load_passwords(s.credentials_file) if s.credentials_file else None
        if csv_path:
            broker = f"{s.mqtt_host}:{s.mqtt_port}"
            cfg = CsvReplayConfig(
                csv_path,
                device_id,
                device_column,
                timestamp_column,
                label_column,
                speed,
                seq_column,
                seqstate.next_seqs(s.seq_state_file, broker),
            )
            report = PublishReport()
            try:
                asyncio.run(
                    replay_csv(
                        cfg,
                        s.mqtt_host,
                        s.mqtt_port,
                        max_inflight=s.max_inflight,
                        stop=stop,
                        passwords=passwords,
                        report=report,
                    )
                )
            finally:
                seqstate.remember(s.seq_state_file, broker, report.per_device_last_seq)
        else:
            ids = fleet_device_ids(passwords, s) if passwords else None
            if ids:
                s = s.model_copy(update={"devices": len(ids)})
            fleet = make_fleet(profile, s, anomaly_kinds, device_types, fault_fraction, episode_readings, ids)
            report = asyncio.run(
                run_fleet(
                    fleet,
                    s.mqtt_host,
                    s.mqtt_port,
                    rate=s.rate,
                    count=s.count,
                    duration=s.duration_s,
                    connections=s.connections,
                    max_inflight=s.max_inflight,
                    stop=stop,
                    passwords=passwords,
                )
            )
    except (ValueError, MqttError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exitcodes.CONFIG)
    finally:
        if server is not None:
            server.stop()
    if report.refused:
        shown = ", ".join(f"{d} ({why})" for d, why in list(report.refused.items())[:10])
        click.echo(
            f"error: the broker refused {len(report.refused)} device(s): {shown}"
            + (", ..." if len(report.refused) > 10 else ""),
            err=True,
        )
    click.echo(json.dumps(report.as_dict()))
    sys.exit(exitcodes.OK if report.unacked_at_exit == 0 and not report.refused else exitcodes.FAILED)


def load_passwords(path: Path) -> dict[str, str]:
    """The credentials file's {device_id: password}; ValueError (never showing a password) if unusable."""
    from streamtrain.credentials import loose_permissions, read_device_passwords

    passwords = read_device_passwords(path)
    if loose_permissions(path):
        log.warning(
            "credentials_file_permissions", file=str(path), mode=oct(path.stat().st_mode & 0o777), expected="0600"
        )
    return passwords


def fleet_device_ids(passwords: dict[str, str], s: SimulatorSettings) -> list[str]:
    """The simulated fleet's device ids: the credentials file's, in file order; the first --devices if given."""
    ids = list(passwords)
    if "devices" not in s.model_fields_set:
        return ids
    if s.devices > len(ids):
        raise ValueError(f"--devices {s.devices}: the credentials file has only {len(ids)} devices")
    return ids[: s.devices]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def make_fleet(
    profile: str,
    s: SimulatorSettings,
    anomaly_kinds: str | None,
    device_types: str,
    fault_fraction: float,
    episode_readings: str,
    device_ids: list[str] | None = None,
):
    """The fleet of a profile (named by ``device_ids`` if given, one per device); ValueError with a
    clear message on bad options."""
    fleet = _make_fleet(profile, s, anomaly_kinds, device_types, fault_fraction, episode_readings)
    if device_ids is not None:
        if len(device_ids) != len(fleet.device_ids):
            raise ValueError(f"{len(device_ids)} device ids for a fleet of {len(fleet.device_ids)}")
        fleet.device_ids = list(device_ids)
    return fleet


def _make_fleet(
    profile: str,
    s: SimulatorSettings,
    anomaly_kinds: str | None,
    device_types: str,
    fault_fraction: float,
    episode_readings: str,
):
    if profile == "uniform":
        kinds = _csv(anomaly_kinds) if anomaly_kinds is not None else ANOMALY_KINDS
        return Fleet(FleetConfig(devices=s.devices, seed=s.seed, anomaly_rate=s.anomaly_rate, anomaly_kinds=kinds))
    try:
        lo, hi = (int(v) for v in episode_readings.split(","))
    except ValueError:
        raise ValueError(f"--episode-readings {episode_readings!r}: expected min,max (e.g. 20,180)") from None
    cfg = HeteroConfig(
        devices=s.devices,
        seed=s.seed,
        types=_csv(device_types),
        fault_fraction=fault_fraction,
        episode_readings=(lo, hi),
    )
    if anomaly_kinds is not None:
        cfg.anomaly_kinds = _csv(anomaly_kinds)
    return HeterogeneousFleet(cfg)
