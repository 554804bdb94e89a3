"""Run StreamTrain programs as real subprocesses in tests, with their logs kept for failures."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from streamtrain.settings import CommonSettings
from streamtrain.settings import settings_env as streamtrain_settings_env

STREAMTRAIN = [sys.executable, "-m", "streamtrain.cli.main"]


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started: ``sig`` to its
    process group, SIGKILL to the group if it is still there after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def settings_env(s: CommonSettings, **extra) -> dict:
    return {**streamtrain_settings_env(s, **extra), "STREAMTRAIN_LOG_FORMAT": "json"}


class Program:
    """One `streamtrain <command>` subprocess."""

    def __init__(self, args: list[str], env: dict, log_path: Path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen | None = None
        self.killed = False  # set by kill(): its exit code is then no failure

    def start(self) -> "Program":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(STREAMTRAIN + self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args[0]} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{self.args[0]}: {text!r} not logged within {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"{self.args[0]} ignored SIGTERM for {timeout}s:\n{self.log()[-3000:]}")
        return self.proc.returncode


def drop_mqtt_session(port: int, client_id: str) -> None:
    """End a persistent MQTT session so it stops queueing messages for later tests."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port, clean_start=True)
    c.loop_start()
    deadline = time.monotonic() + 5
    while not c.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()


def simulated_readings(s: CommonSettings, tmp_path: Path, env: dict, devices: int, count: int) -> set[tuple[str, int]]:
    """Run the real simulator (``devices`` × ``count`` readings, as fast as it can, environment ``env``) to its
    end against a running bridge, and the (device, seq) of what reached the raw topic: every reading, once,
    and no dead letter."""
    import json  # noqa: PLC0415

    from streamtrain.kafka import read_topic  # noqa: PLC0415

    sim = Program(
        ["simulate", "--devices", str(devices), "--count", str(count), "--rate", "0"], env, tmp_path / "simulate.log"
    ).start()
    assert sim.proc.wait(timeout=180) == 0, sim.log()[-3000:]
    total = devices * count
    raw = read_topic(s.kafka_bootstrap, s.topic_raw, until=lambda m: len(m) >= total, timeout=120)
    readings = {(r["device_id"], r["seq"]) for r in (json.loads(m.value()) for m in raw)}
    assert len(raw) == total and len(readings) == total
    assert not read_topic(s.kafka_bootstrap, s.topic_deadletter, timeout=3)
    return readings
