"""Building our Java modules (the Kafka Streams scorer, the HiveMQ ingestion extension) with Maven:
only when the jar is missing or older than its sources, offline first (the local repository
usually has everything), online when it lacks something."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from streamtrain import logs

log = logs.get("maven")


class BuildError(RuntimeError):
    pass


def stale(jar: Path, module: Path, sources: Path) -> bool:
    """Whether ``jar`` is missing or older than the module's pom or any file under ``sources``."""
    if not jar.exists():
        return True
    built = jar.stat().st_mtime
    inputs = [module / "pom.xml", *(p for p in sources.rglob("*") if p.is_file())]
    return any(p.stat().st_mtime > built for p in inputs)


def package(module: Path, jar: Path, what: str, event: str, *options: str) -> Path:
    """``mvn package`` of ``module`` (``what`` names it in errors, ``event`` in the log) until ``jar`` exists."""
    mvn = shutil.which("mvn")
    if not mvn:
        raise BuildError(f"Maven (mvn) is not on PATH; it builds {what} ({module.name})")
    base = [mvn, "-q", "-B", "-f", str(module / "pom.xml"), *options, "package"]
    for cmd in (base[:1] + ["-o"] + base[1:], base):
        log.info(event, command=" ".join(cmd[1:]))
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode == 0 and jar.exists():
            return jar
    raise BuildError(f"mvn package failed for {module}:\n{(res.stdout + res.stderr)[-3000:]}")
