"""Broker jars from Maven Central: resolved once by Maven into ``<lib root>/<name>-<version>``."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

from streamtrain import logs
from streamtrain.stack.processes import StackError

log = logs.get("stack")

JAVA_DIR = Path(str(resources.files("streamtrain.stack") / "java"))


def resolve(pom: str, version_prop: str, version: str, target: Path) -> Path:
    """Copy the runtime dependencies of ``JAVA_DIR/pom`` at ``version`` into ``target`` (once:
    a ``.complete`` marker says it is done; a half-copied folder is never used)."""
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven (mvn) is not on PATH; it is needed once to fetch the broker jars from Maven Central")
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("resolving_jars", pom=pom, version=version, target=str(target))
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(JAVA_DIR / pom),
        f"-D{version_prop}={version}",
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
        f"-DoutputDirectory={tmp}",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise StackError(f"Maven could not resolve {pom} ({version}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    marker.write_text(version)
    return target


def kafka_lib(lib_root: Path, version: str) -> Path:
    return resolve("kafka-pom.xml", "kafka.version", version, lib_root / f"kafka-{version}")


def hivemq_lib(lib_root: Path, version: str) -> Path:
    return resolve("hivemq-pom.xml", "hivemq.version", version, lib_root / f"hivemq-{version}")
