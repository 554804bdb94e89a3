"""Detached broker processes: a pid file and a log per service, start, readiness wait, stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamtrain import logs

log = logs.get("stack")


class StackError(RuntimeError):
    """Raised with a message that says what failed and where its log is."""


@dataclass
class Service:
    name: str
    port: int
    home: Path

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return None if _exited(pid) else pid


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def java() -> str:
    path = shutil.which("java")
    if not path:
        raise StackError("java is not on PATH; Java 17 runs both brokers")
    return path


def spawn(svc: Service, cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> int:
    """Start ``cmd`` detached (own session) with its output in the service's log and its pid in its pid file."""
    svc.log_file.parent.mkdir(parents=True, exist_ok=True)
    svc.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(svc.log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd or svc.home,
        )
    svc.pid_file.write_text(str(proc.pid))
    log.info("process_started", service=svc.name, pid=proc.pid, port=svc.port, log=str(svc.log_file))
    return proc.pid


def wait_ready(svc: Service, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready`` until it holds; raise with the log's tail if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            log.info("service_ready", service=svc.name, port=svc.port)
            return
        if svc.pid() is None:
            tail = svc.log_file.read_text(errors="replace")[-3000:] if svc.log_file.exists() else ""
            raise StackError(f"{svc.name} exited during start-up; last lines of {svc.log_file}:\n{tail}")
        time.sleep(0.5)
    raise StackError(f"{svc.name} not ready on port {svc.port} after {timeout:.0f}s; see {svc.log_file}")


def _exited(pid: int) -> bool:
    """Whether every thread of ``pid`` has exited (a zombie left by a parent that never reaped it has).

    The group leader of a killed JVM turns zombie while its other threads are still exiting; they hold
    its sockets until the last one is gone, so a leader in state Z alone does not mean the port is free.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X") and tasks in ([], [str(pid)])


def stop(svc: Service, timeout: float = 45.0, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL with ``kill``) to the service's process group; SIGKILL after ``timeout``."""
    pid = svc.pid()
    if pid is None:
        svc.pid_file.unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while svc.pid() is not None and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if svc.pid() is not None:
        log.warning("process_kill", service=svc.name, pid=pid, reason=f"still running {timeout:.0f}s after SIGTERM")
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
        _reap(pid)
    svc.pid_file.unlink(missing_ok=True)
    log.info("process_stopped", service=svc.name, pid=pid)


def stop_all(services: list[Service], timeout: float = 45.0) -> None:
    """SIGTERM to every service at once, then wait for each (SIGKILL after ``timeout``)."""
    for svc in services:
        if (pid := svc.pid()) is not None:
            os.killpg(pid, signal.SIGTERM)
    for svc in services:
        stop(svc, timeout)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
