"""Publishing loops: the simulated fleet and the CSV replay, both over MQTT QoS 1."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamtrain import logs, telemetry
from streamtrain.lifecycle import StopFlag
from streamtrain.mqtt import AsyncPublisher, MqttError
from streamtrain.simulator.fleet import Fleet

log = logs.get("simulator")


@dataclass
class PublishReport:
    published: int = 0
    acked: int = 0
    anomalies: int = 0
    devices: int = 0
    seconds: float = 0.0
    unacked_at_exit: int = 0
    per_device_last_seq: dict = field(default_factory=dict)
    #: With per-device credentials: devices the broker refused ({device_id: reason}); they publish nothing.
    refused: dict | None = None

    def as_dict(self) -> dict:
        d = {
            k: v for k, v in self.__dict__.items() if k != "per_device_last_seq" and not (k == "refused" and v is None)
        }
        d["rate_per_s"] = round(self.published / self.seconds, 1) if self.seconds else 0.0
        return d


def topic_for(device_id: str) -> str:
    return f"devices/{device_id}/telemetry"


async def _open(host: str, port: int, connections: int, max_inflight: int, prefix: str) -> list[AsyncPublisher]:
    pubs = [
        AsyncPublisher(
            host, port, client_id=f"{prefix}-{i}-{int(time.time() * 1000) % 10**8}", max_inflight=max_inflight
        )
        for i in range(connections)
    ]
    await asyncio.gather(*(p.connect() for p in pubs))
    return pubs


#: Connects (TCP + CONNACK, a PBKDF2 check on the broker) in flight at once when each device connects as itself.
CONNECT_CONCURRENCY = 64


def require_passwords(device_ids, passwords: dict[str, str]) -> None:
    """ValueError naming the devices the credentials file has no password for."""
    missing = [d for d in dict.fromkeys(device_ids) if d not in passwords]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"the credentials file has no password for {len(missing)} device(s): {shown}")


async def _open_devices(
    host: str, port: int, device_ids, passwords: dict[str, str], max_inflight: int, report: PublishReport
) -> dict[str, AsyncPublisher]:
    """One connection per device, authenticated as the device (client id = user = device id).

    A device the broker refuses (CONNACK failure: bad user name or password, not authorized) is
    logged and recorded in ``report.refused`` and gets no connection; any other failure (broker
    unreachable, no CONNACK in time) closes every connection and raises MqttError.
    """
    require_passwords(device_ids, passwords)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    pubs = {
        d: AsyncPublisher(host, port, client_id=d, username=d, password=passwords[d], max_inflight=max_inflight)
        for d in dict.fromkeys(device_ids)
    }

    async def one(pub: AsyncPublisher) -> None:
        async with gate:
            await pub.connect()

    started = time.monotonic()
    results = await asyncio.gather(*(one(p) for p in pubs.values()), return_exceptions=True)
    report.refused = {}
    failure = None
    for (device_id, pub), result in zip(list(pubs.items()), results):
        if result is None:
            continue
        del pubs[device_id]
        if isinstance(result, MqttError) and pub.refused_reason:
            report.refused[device_id] = pub.refused_reason
            log.error("simulator_device_refused", device=device_id, reason=pub.refused_reason)
        elif failure is None:
            failure = MqttError(f"device {device_id}: {result}") if isinstance(result, MqttError) else result
    if failure is not None:
        await asyncio.gather(*(p.close() for p in pubs.values()))
        raise failure
    log.info(
        "simulator_devices_connected",
        connected=len(pubs),
        refused=len(report.refused),
        seconds=round(time.monotonic() - started, 3),
    )
    if not pubs:
        raise MqttError(
            f"the broker refused every device ({len(report.refused)}), e.g. "
            f"{next(iter(report.refused))}: {next(iter(report.refused.values()))}"
        )
    return pubs


async def _close(pubs: list[AsyncPublisher], report: PublishReport, drain_timeout: float) -> None:
    await asyncio.gather(*(p.drain(drain_timeout) for p in pubs))
    report.published = sum(p.published for p in pubs)
    report.acked = sum(p.acked for p in pubs)
    report.unacked_at_exit = report.published - report.acked
    await asyncio.gather(*(p.close() for p in pubs))


async def run_fleet(
    fleet: Fleet,
    host: str,
    port: int,
    *,
    rate: float,
    count: int | None,
    duration: float | None,
    connections: int,
    max_inflight: int = 500,
    stop: StopFlag | None = None,
    progress_every: float = 5.0,
    drain_timeout: float = 60.0,
    passwords: dict[str, str] | None = None,
) -> PublishReport:
    """Publish ``count`` readings per device (or for ``duration`` seconds) at ``rate`` per device.

    Each device keeps its own phase within the period, so the fleet's load is spread evenly.
    With ``passwords`` ({device_id: password}) each device has its own connection, authenticated
    as itself, instead of sharing ``connections``; devices the broker refuses publish nothing.
    """
    n = fleet.cfg.devices
    report = PublishReport(devices=n)
    if passwords is None:
        connections = max(1, min(connections, n))
        pubs = targets = await _open(host, port, connections, max_inflight, "streamtrain-sim")
    else:
        by_device = await _open_devices(host, port, fleet.device_ids, passwords, max_inflight, report)
        pubs, targets, connections = list(by_device.values()), [by_device.get(d) for d in fleet.device_ids], n
    period = 1.0 / rate if rate > 0 else 0.0
    offsets = fleet.rng.uniform(0, period, n) if period else np.zeros(n)
    order = np.argsort(offsets)
    if report.refused:
        order = np.array([i for i in order if targets[i] is not None], dtype=int)
    started = time.monotonic()
    wall0 = time.time()
    last_progress = started
    k = 0
    try:
        while True:
            if stop is not None and stop.is_set():
                log.info("simulator_stopping", reason=stop.signal_name or "stop requested", seq=k)
                break
            if count is not None and k >= count:
                break
            if duration is not None and time.monotonic() - started >= duration:
                break
            tick = started + k * period
            ts = wall0 + k * period + offsets
            msgs = fleet.messages(ts)
            for pos, i in enumerate(order):
                if period:
                    delay = tick + offsets[i] - time.monotonic()
                    if delay > 0.002:
                        await asyncio.sleep(delay)
                device_id, msg = msgs[i]
                report.anomalies += msg["label"]
                await targets[i % connections].publish(
                    topic_for(device_id), json.dumps(msg, separators=(",", ":")).encode()
                )
                if pos % 256 == 255:
                    await asyncio.sleep(0)  # let other tasks run when publishing flat out
            k += 1
            now = time.monotonic()
            if now - last_progress >= progress_every:
                last_progress = now
                sent = sum(p.published for p in pubs)
                log.info(
                    "simulator_progress",
                    seq=k,
                    published=sent,
                    acked=sum(p.acked for p in pubs),
                    rate_per_s=round(sent / (now - started), 1),
                )
    finally:
        report.seconds = time.monotonic() - started
        await _close(pubs, report, drain_timeout)
        report.per_device_last_seq = {d: k - 1 for d in fleet.device_ids if d not in (report.refused or ())}
    log.info("simulator_done", **report.as_dict())
    return report


# ---------------------------------------------------------------- CSV replay
@dataclass
class CsvReplayConfig:
    path: Path
    device_id: str | None = None  # one device for the whole file...
    device_column: str | None = None  # ...or one per row from this column
    timestamp_column: str = "timestamp"
    label_column: str | None = None
    speed: float = 1.0  # 1 = real time, 10 = ten times faster, 0 = as fast as possible
    seq_column: str = "seq"  # the readings' seqs, when the file has this column...
    first_seqs: dict = field(default_factory=dict)  # ...else each device's seqs start here (default 0)


def replay_args(
    csv_path: Path, *, device_column: str = "device", label_column: str = "label", seq_state: Path | None = None
) -> list[str]:
    """`streamtrain` arguments replaying a labelled recording as fast as the brokers take it: the
    README's way for one's own recordings (benches and tests replay through this, not a copy)."""
    args = ["simulate", "--csv", str(csv_path), "--device-column", device_column]
    args += ["--label-column", label_column, "--speed", "0"]
    if seq_state is not None:
        args += ["--seq-state", str(seq_state)]
    return args


def _parse_ts(value: str | None) -> float:
    if value is None or not value.strip():
        raise ValueError("empty")
    try:
        ts = float(value)
    except ValueError:
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    if not math.isfinite(ts):
        raise ValueError("not a finite time")
    return ts


def _parse_seq(value: str | None, where: str) -> int:
    text = (value or "").strip()
    try:
        if text.isdigit() or text.startswith("-") and text[1:].isdigit():
            seq = int(text)
        else:  # "17.0", as spreadsheets and pandas write whole numbers
            number = float(text)
            if not number.is_integer():
                raise ValueError
            seq = int(number)
    except (ValueError, OverflowError):
        raise ValueError(f"{where}: seq {value!r} is not a whole number") from None
    if seq < 0:
        raise ValueError(f"{where}: seq {seq} is negative")
    return seq


def read_csv_rows(cfg: CsvReplayConfig) -> list[tuple[str, dict]]:
    """Rows of the CSV as telemetry dicts, in file order.

    Every row becomes a message the bridge accepts (checked with ``telemetry.validate``), or the
    whole file is refused with a ValueError naming the file and line: a replay never publishes
    half a file of which part would be dead-lettered.
    """
    if not (cfg.device_id or cfg.device_column):
        raise ValueError("give --device-id (one device for the whole file) or --device-column")
    try:
        with open(cfg.path, newline="", encoding="utf-8") as fh:
            return _rows(cfg, csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{cfg.path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ValueError(f"{cfg.path}: not a readable CSV file: {exc}") from None


def _rows(cfg: CsvReplayConfig, reader: csv.DictReader) -> list[tuple[str, dict]]:
    if reader.fieldnames is None:
        raise ValueError(f"{cfg.path}: empty file, no header row")
    cols = reader.fieldnames
    if cfg.timestamp_column not in cols:
        raise ValueError(f"{cfg.path}: no timestamp column {cfg.timestamp_column!r} (columns: {cols[:20]})")
    for c in (cfg.label_column, cfg.device_column):
        if c and c not in cols:
            raise ValueError(f"{cfg.path}: no column {c!r} (columns: {cols[:20]})")
    skip = {cfg.timestamp_column, cfg.label_column, cfg.device_column, cfg.seq_column}
    has_seq = cfg.seq_column in cols
    seqs: dict[str, int] = dict(cfg.first_seqs)
    rows = []
    for row in reader:
        where = f"{cfg.path}:{reader.line_num}"
        device_id = row[cfg.device_column] if cfg.device_column else cfg.device_id
        if not telemetry.valid_device_id(device_id):
            raise ValueError(f"{where}: device id {device_id!r} is not 1-64 characters [A-Za-z0-9_.:-]")
        try:
            msg: dict[str, Any] = {"device_id": device_id, "ts": _parse_ts(row[cfg.timestamp_column])}
        except (ValueError, TypeError, OverflowError, OSError) as exc:
            raise ValueError(f"{where}: bad timestamp {row[cfg.timestamp_column]!r}: {exc}") from None
        if has_seq:
            msg["seq"] = _parse_seq(row[cfg.seq_column], where)
        else:
            msg["seq"] = seqs.get(device_id, 0)
            seqs[device_id] = msg["seq"] + 1
        for col, value in row.items():
            if col in skip or col is None or not isinstance(value, str) or value == "" or col in telemetry.RESERVED:
                continue
            try:
                number = float(value)
            except ValueError:
                continue  # non-numeric columns are not sensor channels
            if math.isfinite(number):
                msg[col] = number
        if cfg.label_column:
            raw = (row[cfg.label_column] or "0").strip().lower()
            msg["label"] = 1 if raw in ("1", "true", "yes", "anomaly", "1.0") else 0
        checked = telemetry.validate(json.dumps(msg, separators=(",", ":")).encode(), topic_for(device_id))
        if isinstance(checked, telemetry.Rejection):
            raise ValueError(f"{where}: the bridge would reject this row ({checked.reason}: {checked.detail})")
        rows.append((device_id, msg))
    return rows


async def replay_csv(
    cfg: CsvReplayConfig,
    host: str,
    port: int,
    *,
    max_inflight: int = 500,
    stop: StopFlag | None = None,
    drain_timeout: float = 60.0,
    passwords: dict[str, str] | None = None,
    report: PublishReport | None = None,
) -> PublishReport:
    """Publish the CSV's rows in file order; timing follows the timestamp column / speed.

    ``report`` (filled as the replay goes, also when it fails half-way) says what was published.

    With ``passwords`` ({device_id: password}, one for every device of the file) each device has its
    own connection, authenticated as itself; the rows of devices the broker refuses are skipped.
    """
    rows = read_csv_rows(cfg)
    report = report if report is not None else PublishReport()
    report.devices = len({d for d, _ in rows})
    if passwords is None:
        pubs = await _open(host, port, 1, max_inflight, "streamtrain-replay")
        by_device = None
    else:
        by_device = await _open_devices(host, port, [d for d, _ in rows], passwords, max_inflight, report)
        pubs = list(by_device.values())
    started = time.monotonic()
    first_ts = rows[0][1]["ts"] if rows else 0.0
    try:
        for device_id, msg in rows:
            if stop is not None and stop.is_set():
                break
            if cfg.speed > 0:
                delay = started + (msg["ts"] - first_ts) / cfg.speed - time.monotonic()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            if by_device is None:
                pub = pubs[0]
            elif (pub := by_device.get(device_id)) is None:
                continue  # refused by the broker
            report.anomalies += msg.get("label", 0)
            await pub.publish(topic_for(device_id), json.dumps(msg, separators=(",", ":")).encode())
            report.per_device_last_seq[device_id] = max(msg["seq"], report.per_device_last_seq.get(device_id, -1))
    finally:
        report.seconds = time.monotonic() - started
        await _close(pubs, report, drain_timeout)
    log.info("replay_done", file=str(cfg.path), **report.as_dict())
    return report
