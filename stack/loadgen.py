"""The Go MQTT load generator (tools/loadgen): built with the Go toolchain when missing or older than its
sources (the Go build cache makes that seconds), run with flags, its JSON summary line returned."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from streamtrain import logs

log = logs.get("stack.loadgen")

SOURCE = Path(__file__).resolve().parents[1] / "tools" / "loadgen"
BINARY = Path(__file__).resolve().parents[1] / ".streamtrain" / "bin" / "loadgen"


class LoadgenError(RuntimeError):
    pass


def build() -> Path:
    sources = [p for p in SOURCE.iterdir() if p.suffix in (".go", ".mod", ".sum")]
    if BINARY.exists() and all(p.stat().st_mtime <= BINARY.stat().st_mtime for p in sources):
        return BINARY
    go = shutil.which("go")
    if not go:
        raise LoadgenError("go is not on PATH; it builds the MQTT load generator (tools/loadgen)")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    log.info("building_loadgen", source=str(SOURCE), binary=str(BINARY))
    res = subprocess.run([go, "build", "-trimpath", "-o", str(BINARY), "."], cwd=SOURCE, capture_output=True, text=True)
    if res.returncode != 0:
        raise LoadgenError(f"go build of tools/loadgen failed:\n{res.stdout}{res.stderr}")
    return BINARY


def command(port: int, **flags) -> list[str]:
    """loadgen's command line: ``flags`` as --name value (underscores become dashes)."""
    args = [str(build()), "--port", str(port)]
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def summary(stdout: str) -> dict:
    """The JSON summary line loadgen prints last."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise LoadgenError(f"loadgen printed no summary:\n{stdout[-2000:]}")
    return json.loads(lines[-1])


def run(port: int, timeout: float = 600, **flags) -> dict:
    """Run loadgen to the end; its summary (exit status 1, some publishes unacknowledged, is reported in it)."""
    res = subprocess.run(command(port, **flags), capture_output=True, text=True, timeout=timeout)
    if res.returncode not in (0, 1):
        raise LoadgenError(f"loadgen failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return summary(res.stdout)
