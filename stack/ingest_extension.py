"""The HiveMQ CE ingestion extension (bridge/hivemq-extension, Java): build it with Maven when its jar
is missing or older than its sources, and install it into a HiveMQ extensions folder with its settings.

Inside the broker it does what `streamtrain bridge` does from outside (same validation, reasons,
dead-letter headers and metric names) and holds each PUBACK until Kafka has the record.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from streamtrain import logs
from streamtrain.ingest_mapping import IngestMapping
from streamtrain.maven import BuildError as BuildError  # raised by build(); callers catch it from here
from streamtrain.maven import package, stale

log = logs.get("stack.ingest_extension")

MODULE = Path(__file__).resolve().parents[1] / "bridge" / "hivemq-extension"
JAR = MODULE / "target" / "streamtrain-ingest.jar"
#: HiveMQ requires the folder name to equal the id in hivemq-extension.xml.
EXTENSION_ID = "streamtrain-ingest"
#: The ingestion mapping the extension applies, written out whole beside its settings.
MAPPING_FILE = "ingest-mapping.json"


def build(force: bool = False) -> Path:
    """The extension jar (dependencies inside); Maven runs offline first, online if the cache lacks something."""
    if not force and not stale(JAR, MODULE, MODULE / "src" / "main"):
        return JAR
    return package(MODULE, JAR, "the HiveMQ ingestion extension", "building_ingest_extension", "-DskipTests")


def install(extensions: Path, properties: dict[str, str], mapping: IngestMapping | None = None) -> Path:
    """Put the jar, its descriptor and ``properties`` (streamtrain-ingest.properties) into ``extensions``; with
    ``mapping``, that mapping resolved (preset, file, topics) as the JSON file the extension's ``mapping`` names."""
    jar = build()
    folder = extensions / EXTENSION_ID
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy2(jar, folder / JAR.name)
    shutil.copy2(MODULE / "hivemq-extension.xml", folder / "hivemq-extension.xml")
    if mapping is not None:
        path = folder / MAPPING_FILE
        path.write_text(json.dumps(mapping.model_dump(mode="json"), indent=1) + "\n")
        properties = {**properties, "mapping": str(path)}
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
