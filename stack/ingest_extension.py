"""The HiveMQ CE ingestion extension (bridge/hivemq-extension, Java): build it with Maven when its jar
is missing or older than its sources, and install it into a HiveMQ extensions folder with its settings.

Inside the broker it does what `streamtrain bridge` does from outside (same validation, reasons,
dead-letter headers and metric names) and holds each PUBACK until Kafka has the record.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from streamtrain import logs

log = logs.get("stack.ingest_extension")

MODULE = Path(__file__).resolve().parents[1] / "bridge" / "hivemq-extension"
JAR = MODULE / "target" / "streamtrain-ingest.jar"
#: HiveMQ requires the folder name to equal the id in hivemq-extension.xml.
EXTENSION_ID = "streamtrain-ingest"


class BuildError(RuntimeError):
    pass


def _stale() -> bool:
    if not JAR.exists():
        return True
    built = JAR.stat().st_mtime
    sources = [MODULE / "pom.xml", *(p for p in (MODULE / "src" / "main").rglob("*") if p.is_file())]
    return any(p.stat().st_mtime > built for p in sources)


def build(force: bool = False) -> Path:
    """The extension jar (dependencies inside); Maven runs offline first, online if the cache lacks something."""
    if not force and not _stale():
        return JAR
    mvn = shutil.which("mvn")
    if not mvn:
        raise BuildError(
            "Maven (mvn) is not on PATH; it builds the HiveMQ ingestion extension (bridge/hivemq-extension)"
        )
    base = [mvn, "-q", "-B", "-f", str(MODULE / "pom.xml"), "-DskipTests", "package"]
    for cmd in (base[:1] + ["-o"] + base[1:], base):
        log.info("building_ingest_extension", command=" ".join(cmd[1:]))
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode == 0 and JAR.exists():
            return JAR
    raise BuildError(f"mvn package failed for {MODULE}:\n{(res.stdout + res.stderr)[-3000:]}")


def install(extensions: Path, properties: dict[str, str]) -> Path:
    """Put the jar, its descriptor and ``properties`` (streamtrain-ingest.properties) into ``extensions``."""
    jar = build()
    folder = extensions / EXTENSION_ID
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy2(jar, folder / JAR.name)
    shutil.copy2(MODULE / "hivemq-extension.xml", folder / "hivemq-extension.xml")
    text = "".join(f"{k}={_escape(v)}\n" for k, v in properties.items())
    (folder / "streamtrain-ingest.properties").write_text(text)
    log.info(
        "ingest_extension_installed", folder=str(folder), **{k.replace(".", "_"): v for k, v in properties.items()}
    )
    return folder


def uninstall(extensions: Path) -> None:
    shutil.rmtree(extensions / EXTENSION_ID, ignore_errors=True)


def _escape(value: str) -> str:
    """A java.util.Properties value: backslashes, line breaks and a leading space escaped."""
    v = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "\\" + v if v.startswith(" ") else v
