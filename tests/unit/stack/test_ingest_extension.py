"""`stack up --ingest extension|bridge`: the HiveMQ extensions folder gets the built extension with this
stack's Kafka and topics, or loses it (no broker needed: the folder is what HiveMQ reads at start)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zipfile

from streamtrain.ingest_mapping import PRESETS, IngestMapping, load_mapping
from streamtrain.settings import StackSettings
from streamtrain.stack import ingest_extension as extension
from streamtrain.stack.local import LocalStack
from tests.conftest import REPO


def test_ingest_choice_installs_or_removes_the_extension(tmp_path):
    settings = StackSettings(
        home=tmp_path,
        jars=REPO / ".streamtrain" / "lib",
        kafka_port=19092,
        ingest="extension",
        ingest_metrics_port=19404,
        topic_raw="t.raw",
        topic_deadletter="t.dead",
    )
    stack = LocalStack(settings)
    ext = stack.install_ingest()
    folder = ext / extension.EXTENSION_ID
    assert ET.parse(folder / "hivemq-extension.xml").getroot().findtext("id") == folder.name
    with zipfile.ZipFile(folder / "streamtrain-ingest.jar") as jar:
        names = set(jar.namelist())
    # One jar: HiveMQ gives each jar of the folder its own class loader, so the dependencies are inside.
    assert {
        "io/streamtrain/ingest/IngestMain.class",
        "org/apache/kafka/clients/producer/KafkaProducer.class",
        "META-INF/services/com.hivemq.extension.sdk.api.ExtensionMain",
    } <= names
    assert not any(n.startswith("com/hivemq/extension/sdk/") for n in names)  # the broker's own SDK is used
    props = dict(line.split("=", 1) for line in (folder / "streamtrain-ingest.properties").read_text().splitlines())
    assert props == {
        "kafka.bootstrap": "127.0.0.1:19092",
        "topic.raw": "t.raw",
        "topic.deadletter": "t.dead",
        "metrics.port": "19404",
        "mapping": str(folder / extension.MAPPING_FILE),  # the default preset, resolved
    }
    assert json.loads((folder / extension.MAPPING_FILE).read_text()) == PRESETS["streamtrain"].model_dump(mode="json")
    assert stack.status()["hivemq"]["ingest"] == "extension"

    stack.settings = settings.model_copy(update={"ingest": "bridge"})
    stack.install_ingest()
    assert not folder.exists()
    assert stack.status()["hivemq"]["ingest"] == "bridge"


def test_the_stack_hands_the_extension_its_mapping_resolved(tmp_path):
    """STREAMTRAIN_INGEST_MAPPING / _TOPICS (the bridge's settings) reach the extension as one JSON mapping file."""
    settings = StackSettings(
        home=tmp_path,
        jars=REPO / ".streamtrain" / "lib",
        ingest="extension",
        ingest_mapping="tasmota",
        ingest_topics="home/{device_id}/SENSOR, lab/{device_id}/SENSOR",
    )
    stack = LocalStack(settings)
    folder = stack.install_ingest() / extension.EXTENSION_ID
    written = IngestMapping.model_validate(json.loads((folder / extension.MAPPING_FILE).read_text()))
    assert written == load_mapping("tasmota", ["home/{device_id}/SENSOR", "lab/{device_id}/SENSOR"])

    stack.settings = settings.model_copy(update={"ingest_mapping": "sparkplug-b", "ingest_topics": None})
    folder = stack.install_ingest() / extension.EXTENSION_ID  # the extension decodes Sparkplug B (SparkplugDecoder)
    written = IngestMapping.model_validate(json.loads((folder / extension.MAPPING_FILE).read_text()))
    assert written == load_mapping("sparkplug-b", None)
