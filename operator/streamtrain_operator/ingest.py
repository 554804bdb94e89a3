"""``spec.ingest`` of the StreamingTraining CRD: how the devices publish, as the bridge reads it.

A preset of the bridge's ingestion mappings (``streamtrain.ingest_mapping.PRESETS``, the CRD's enum) and,
optionally, topic patterns instead of the preset's; rendered into the bridge as ``STREAMTRAIN_INGEST_MAPPING``
and ``STREAMTRAIN_INGEST_TOPICS``, the variables ``streamtrain bridge`` reads and, with ``mqtt.ingest:
extension``, the HiveMQ extension reads with the same meaning (IngestSettings.java). Both take every preset
(the extension decodes ``sparkplug-b`` with Eclipse Tahu's classes, SparkplugDecoder.java); the broker's
device permissions (``mqtt.authentication: credentials``) know the ``streamtrain`` shape only: the API server
refuses the presets they cannot serve.
"""

from __future__ import annotations

from streamtrain.ingest_mapping import PRESETS, IngestMapping, load_mapping
from streamtrain.operator.openapi import _obj, _str


def ingest_schema() -> dict:
    return _obj(
        "How the devices publish (docs/devices.md): a preset of the bridge's ingestion mappings, its topic "
        "patterns replaceable",
        {
            "preset": _str(
                "Ingestion mapping of the bridge (STREAMTRAIN_INGEST_MAPPING): " + ", ".join(PRESETS),
                "streamtrain",
                enum=list(PRESETS),
            ),
            "topics": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "minLength": 1, "pattern": "^[^,]+$"},
                "description": f"{IngestMapping.model_fields['topics'].description}; instead of the preset's "
                "(STREAMTRAIN_INGEST_TOPICS)",
            },
        },
    )


#: Combinations the bridge or the broker cannot serve, refused by the API server (rules on spec).
INGEST_RULES = [
    {
        "rule": "self.ingest.preset == 'streamtrain' || self.mqtt.authentication != 'credentials'",
        "fieldPath": ".ingest.preset",
        "message": "mqtt.authentication credentials lets a device publish to devices/<its user>/telemetry only: "
        "other presets need mqtt.authentication none or an external broker",
    },
    {
        "rule": "!has(self.ingest.topics) || self.ingest.preset != 'streamtrain'",
        "fieldPath": ".ingest.topics",
        "message": "preset streamtrain takes the topic devices/{device_id}/telemetry only",
    },
]


def ingest_env(spec: dict) -> list[dict]:
    """The bridge's variables, which the HiveMQ extension reads too; raises ValueError (pydantic's) when the topic patterns are not valid ones."""
    ingest = spec.get("ingest") or {}
    preset = ingest.get("preset", "streamtrain")
    topics = ingest.get("topics")
    load_mapping(preset, topics)  # the bridge would refuse to start: say so on the resource
    out = [{"name": "STREAMTRAIN_INGEST_MAPPING", "value": preset}]
    if topics:
        out.append({"name": "STREAMTRAIN_INGEST_TOPICS", "value": ",".join(topics)})
    return out
