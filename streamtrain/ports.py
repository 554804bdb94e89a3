"""Free loopback ports for the services this project starts, chosen outside the kernel's ephemeral range.

The kernel gives every outgoing connection a source port from ``net.ipv4.ip_local_port_range``. A
service listening on a port of that range can find it taken when it restarts: by any connection that
happened to get it as its source port, and above all by a client that keeps reconnecting to the
stopped service itself, since a connect from 127.0.0.1:P to 127.0.0.1:P succeeds, with itself (a TCP
self-connect). Kafka then fails with "Unable to start acceptor". Ports outside the range are never
handed out as source ports, so a service can always have its port back.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

from streamtrain import logs

log = logs.get("ports")

#: Where Linux keeps the ephemeral range ("low high").
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Linux's default range, for a system that does not say.
DEFAULT_EPHEMERAL = (32768, 60999)
#: Lowest port handed out: clear of the well-known ports and of Kubernetes' 10xxx ones (kubelet 10250).
LOWEST = 20000

_lock = threading.Lock()
_given: set[int] = set()
_random = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "big"))


class NoFreePort(RuntimeError):
    """Raised when no free port (or run of ports) was found."""


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def safe_spans(ephemeral: tuple[int, int] | None = None) -> list[range]:
    """The port spans at or above LOWEST that the kernel never uses as source ports."""
    low, high = ephemeral or ephemeral_range()
    spans = [range(LOWEST, low), range(max(LOWEST, high + 1), 65536)]
    return [r for r in spans if len(r) > 0]


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port_range(count: int = 1, attempts: int = 200) -> int:
    """The first of ``count`` consecutive loopback ports, free now, outside the ephemeral range.

    Ports handed out by this process are not handed out again, so several calls made before any of the
    services binds get different ports."""
    spans = [r for r in safe_spans() if len(r) >= count]
    if not spans:
        log.warning("ports_inside_ephemeral_range", lowest=LOWEST, ephemeral=ephemeral_range(), count=count)
        spans = [range(1024, 65536)]
    weights = [len(r) - count + 1 for r in spans]
    with _lock:
        for _ in range(attempts):
            span = _random.choices(spans, weights=weights)[0]
            base = _random.randrange(span.start, span.stop - count + 1)
            wanted = range(base, base + count)
            if any(p in _given for p in wanted) or not all(bindable(p) for p in wanted):
                continue
            _given.update(wanted)
            return base
    raise NoFreePort(f"found no {count} consecutive free ports on 127.0.0.1 in {attempts} tries")


def free_port() -> int:
    """A loopback port that is free now and outside the ephemeral range."""
    return free_port_range(1)
