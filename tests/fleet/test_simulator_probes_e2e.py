"""The simulator answers a Pod's probes: /healthz, /readyz and /metrics on STREAMTRAIN_METRICS_PORT
while it publishes. Found on a real node (tests/k8s/test_real_node.py): without them the kubelet's
liveness probe killed the simulator every 30 s and data stopped flowing between restarts."""

from __future__ import annotations

import urllib.request

import pytest

from streamtrain.stack.local import free_port
from tests.programs import Program, settings_env
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except OSError:
        return 0, ""


def test_simulator_serves_health_and_metrics_while_publishing(pipeline, tmp_path):
    port = free_port()
    sim = Program(
        ["simulate", "--devices", "2", "--rate", "5"],
        settings_env(pipeline, metrics_port=port),
        tmp_path / "simulate.log",
    ).start()
    try:
        sim.wait_log("simulator_progress", timeout=60)  # publishing, and still answering:
        assert eventually(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, "/healthz")
        assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n")
        assert "streamtrain_ready 1.0" in get(f"http://127.0.0.1:{port}/metrics")[1]
    finally:
        assert sim.stop() == 0, sim.log()[-2000:]
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 0, "the server stops with the program"
