"""Ports for the services we start lie outside the kernel's ephemeral range (streamtrain.ports).

Inside it, a client reconnecting to a stopped broker can be given the broker's own port as its source
port and connect to itself, and the broker cannot listen there again (CI: kafka-2 "exited during
start-up" after a SIGKILL, tests/faults/test_replicas.py)."""

import socket
from pathlib import Path

import pytest
import structlog.testing

from streamtrain import ports


def _inside(port: int, ephemeral: tuple[int, int]) -> bool:
    return ephemeral[0] <= port <= ephemeral[1]


def test_ports_handed_out_are_free_distinct_and_outside_the_ephemeral_range():
    ephemeral = ports.ephemeral_range()
    given = [ports.free_port() for _ in range(200)]
    assert len(set(given)) == len(given)
    assert [p for p in given if _inside(p, ephemeral) or p < ports.LOWEST] == []
    assert all(ports.bindable(p) for p in given)


def test_a_run_of_ports_is_consecutive_free_and_outside_the_ephemeral_range():
    ephemeral = ports.ephemeral_range()
    base = ports.free_port_range(7)
    run = range(base, base + 7)
    assert not any(_inside(p, ephemeral) for p in run)
    assert all(ports.bindable(p) for p in run)
    # Handed out once, never again from this process, even before anything binds them.
    assert not set(run) & {ports.free_port() for _ in range(100)}


def test_the_safe_spans_are_below_and_above_the_ephemeral_range():
    assert ports.safe_spans((32768, 60999)) == [range(20000, 32768), range(61000, 65536)]
    assert ports.safe_spans((1024, 65535)) == []
    assert ports.ephemeral_range(Path("/nonexistent/ip_local_port_range")) == ports.DEFAULT_EPHEMERAL


def test_a_port_in_use_is_skipped(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        # Only two candidates: the taken port and the one after it.
        monkeypatch.setattr(ports, "safe_spans", lambda: [range(taken, taken + 2)])
        monkeypatch.setattr(ports, "_given", set())
        if not ports.bindable(taken + 1):
            pytest.skip(f"port {taken + 1} happens to be in use too")
        assert ports.free_port() == taken + 1
        with pytest.raises(ports.NoFreePort):
            ports.free_port()  # the other one was just handed out


def test_with_no_port_outside_the_range_it_still_finds_one_and_says_so(monkeypatch):
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    with structlog.testing.capture_logs() as logged:
        port = ports.free_port()
    assert 1024 <= port <= 65535 and ports.bindable(port)
    assert [e["event"] for e in logged] == ["ports_inside_ephemeral_range"]
