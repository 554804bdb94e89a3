"""The newest seq a CSV replay published per device, kept between runs.

The pipeline de-duplicates by (device, seq): a second replay of the same device that numbered its
readings from 0 again would reuse identities (the preprocessor dead-letters such readings as
``seq_reused``). Without a ``seq`` column in the file, a replay therefore continues after the
newest seq published for the device to the same broker in an earlier run, remembered in a small
JSON file ({"host:port": {"device": newest_seq}}).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from streamtrain import logs

log = logs.get("simulator")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable seq state ({exc}); fix or delete it, or pass --seq-state") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: seq state is not a JSON object; fix or delete it, or pass --seq-state")
    return data


def next_seqs(path: Path, broker: str) -> dict[str, int]:
    """{device: first seq of this run} for the devices already replayed to ``broker``."""
    devices = _read(path).get(broker, {})
    return {d: int(s) + 1 for d, s in devices.items() if isinstance(s, int) and s >= 0}


def remember(path: Path, broker: str, last_seqs: dict[str, int]) -> None:
    """Record the newest seq published per device (never lowering one), atomically."""
    if not last_seqs:
        return
    data = _read(path)
    devices = data.setdefault(broker, {})
    for device, seq in last_seqs.items():
        devices[device] = max(int(seq), int(devices.get(device, -1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
    log.info("replay_seqs_remembered", file=str(path), broker=broker, devices=len(last_seqs))
