"""`streamtrain stack up --monitoring` on the session's running stack: a real Prometheus with the
pipeline's three scrape targets (labelled like the chart's ServiceMonitor) and the alerting rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from streamtrain.stack.local import free_port
from streamtrain.stack.monitoring import LOCAL_PORTS, running_prometheus
from tests.unit.stack.test_monitoring import alerts

pytestmark = pytest.mark.e2e


def cli(local_stack, *args: str) -> subprocess.CompletedProcess:
    st = local_stack.settings
    env = {**os.environ, "STREAMTRAIN_JARS": str(st.jars)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streamtrain.cli.main",
            "--log-format",
            "console",
            "stack",
            *args,
            "--home",
            str(st.home),
            "--kafka-port",
            str(st.kafka_port),
            "--mqtt-port",
            str(st.mqtt_port),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_stack_up_monitoring_runs_prometheus_with_the_pipeline_targets_and_rules(local_stack):
    port = free_port()
    up = cli(local_stack, "up", "--monitoring", "--prometheus-port", str(port))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(up.stdout)
        assert status["prometheus"]["ready"] and status["prometheus"]["url"] == f"http://127.0.0.1:{port}"
        prom = running_prometheus(local_stack.home)
        assert prom is not None and prom.url == status["prometheus"]["url"]

        deadline = time.monotonic() + 30
        while not (targets := prom.api("targets")["activeTargets"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        got = {t["labels"]["app_kubernetes_io_component"]: t for t in targets}
        assert {c: t["scrapeUrl"] for c, t in got.items()} == {
            c: f"http://127.0.0.1:{p}/metrics" for c, p in LOCAL_PORTS.items()
        }
        for t in got.values():  # the labels the dashboard and the alerts group by
            assert t["labels"]["namespace"] == "local" and t["labels"]["app_kubernetes_io_instance"] == "local"
        rules = [r["name"] for g in prom.api("rules")["groups"] for r in g["rules"]]
        assert sorted(rules) == sorted(alerts()) and "StreamTrainProgramNotReady" in rules

        again = cli(local_stack, "status")
        assert json.loads(again.stdout)["prometheus"]["ready"] is True
    finally:
        prom = running_prometheus(local_stack.home)
        if prom is not None:
            prom.stop()
    assert running_prometheus(local_stack.home) is None
