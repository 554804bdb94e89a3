"""Command-line conventions: --version, validated options (exit 2, never a traceback), options after the
subcommand, console lines at a terminal and JSON otherwise, and --help whatever the environment holds."""

from __future__ import annotations

import os
import pty
import subprocess

import pytest

import streamtrain
from streamtrain import exitcodes
from streamtrain.cli.main import hoist_global_options
from tests.programs import STREAMTRAIN


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTRAIN_") and k != "KUBERNETES_SERVICE_HOST"}
    return {**env, **extra}


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*STREAMTRAIN, *args], env=_env(**env), capture_output=True, text=True, timeout=120)


def test_version_prints_the_package_version():
    for flag in ("--version", "-V"):
        done = _run(flag)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"streamtrain, version {streamtrain.__version__}"


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--log-level", "verbose", "stack", "status"], {}, "--log-level"),
        (["stack", "status", "--log-format", "pretty"], {}, "--log-format"),
        (["stack", "status"], {"STREAMTRAIN_LOG_LEVEL": "verbose"}, "log_level"),
        (["stack", "status"], {"STREAMTRAIN_LOG_FORMAT": "pretty"}, "log_format"),
        (["stack", "status"], {"STREAMTRAIN_MQTT_PORT": "x"}, "mqtt_port"),
    ],
)
def test_a_bad_value_exits_config_naming_it_without_a_traceback(args, env, named):
    done = _run(*args, **env)
    assert done.returncode == exitcodes.CONFIG, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_help_works_whatever_a_program_variable_holds():
    done = _run("bridge", "--help", STREAMTRAIN_MQTT_PORT="not-a-port")
    assert done.returncode == 0, done.stderr
    assert "Usage: streamtrain bridge" in done.stdout


def test_global_options_may_follow_the_subcommand():
    assert hoist_global_options(["score", "--log-level", "DEBUG", "--group-id", "g"]) == [
        "--log-level",
        "DEBUG",
        "score",
        "--group-id",
        "g",
    ]
    assert hoist_global_options(["bridge", "--log-format=json", "--", "--log-level", "x"]) == [
        "--log-format=json",
        "bridge",
        "--",
        "--log-level",
        "x",
    ]
    # Parsed as the global option: a bad value is refused by it.
    done = _run("stack", "status", "--log-level=nonsense")
    assert done.returncode == exitcodes.CONFIG
    assert "Invalid value for '--log-level'" in done.stderr


def _stderr_of_a_settings_error(tty: bool, **env: str) -> str:
    """A program refusing a bad setting logs one line: captured from a terminal or from a pipe."""
    if not tty:
        return _run("bridge", STREAMTRAIN_MQTT_PORT="x", **env).stderr
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [*STREAMTRAIN, "bridge"],
            env=_env(STREAMTRAIN_MQTT_PORT="x", **env),
            stdout=subprocess.DEVNULL,
            stderr=secondary,
            timeout=120,
            check=False,
        )
        assert proc.returncode == exitcodes.CONFIG
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(primary)


def test_logs_are_console_lines_at_a_terminal_and_json_in_a_pipe_or_a_pod():
    at_terminal = _stderr_of_a_settings_error(tty=True).strip()
    assert "settings_invalid" in at_terminal
    assert not at_terminal.startswith("{"), at_terminal
    in_pipe = _stderr_of_a_settings_error(tty=False).strip()
    assert in_pipe.startswith("{") and '"event": "settings_invalid"' in in_pipe
    in_pod = _stderr_of_a_settings_error(tty=True, KUBERNETES_SERVICE_HOST="10.96.0.1").strip()
    assert in_pod.startswith("{"), in_pod
    forced = _stderr_of_a_settings_error(tty=False, STREAMTRAIN_LOG_FORMAT="console").strip()
    assert not forced.startswith("{")
