"""``spec.ingest`` of the StreamingTraining CRD: how the devices publish, as the bridge reads it.

A preset of the bridge's ingestion mappings (``streamtrain.ingest_mapping.PRESETS``, the CRD's enum),
optionally topic patterns instead of the preset's, and optionally a whole mapping (``mapping``: the fields of a
mapping file, the CRD's schema made from ``IngestMapping``'s, changing the preset's when one is named);
rendered into the bridge as ``STREAMTRAIN_INGEST_MAPPING`` (a preset, or the mapping as inline JSON) and
``STREAMTRAIN_INGEST_TOPICS``, the variables ``streamtrain bridge`` reads and, with ``mqtt.ingest:
extension``, the HiveMQ extension reads with the same meaning (IngestSettings.java). Both take every preset
(the extension decodes ``sparkplug-b`` with Eclipse Tahu's classes, SparkplugDecoder.java); the broker's
device permissions (``mqtt.authentication: credentials``) know the ``streamtrain`` shape only: the API server
refuses the presets they cannot serve.
"""

from __future__ import annotations

import json

from streamtrain.ingest_mapping import PRESETS, IngestMapping, load_mapping
from streamtrain.operator.openapi import _obj, _str, _structural

#: Fields of a mapping file the resource does not take in ``ingest.mapping``: its name is the resource's, its
#: topics are ``ingest.topics``.
NOT_IN_RESOURCE = ("name", "topics")


def _no_defaults(node):
    """A schema without defaults: a field left out of ``ingest.mapping`` keeps the preset's value, so the API
    server must not fill it in."""
    if isinstance(node, dict):
        return {k: _no_defaults(v) for k, v in node.items() if k != "default"}
    return node


def mapping_schema() -> dict:
    """``ingest.mapping``: IngestMapping's fields as a structural schema (one definition: the model's)."""
    raw = IngestMapping.model_json_schema()
    props = {
        k: _no_defaults(_structural(v, raw.get("$defs", {})))
        for k, v in raw["properties"].items()
        if k not in NOT_IN_RESOURCE
    }
    return {  # no default (unlike _obj): a resource without a mapping has none
        "type": "object",
        "description": "A whole ingestion mapping: the fields of a mapping file (docs/devices.md, Writing a mapping); "
        "with a preset other than streamtrain they change that preset's, else they start from a mapping file's "
        "defaults. Rendered as STREAMTRAIN_INGEST_MAPPING, inline JSON",
        "properties": props,
    }


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
            "mapping": mapping_schema(),
        },
    )


#: Combinations the bridge or the broker cannot serve, refused by the API server (rules on spec).
INGEST_RULES = [
    {
        "rule": "(self.ingest.preset == 'streamtrain' && !has(self.ingest.mapping)) || self.mqtt.mode == 'external' "
        "|| (has(self.mqtt.authentication) && self.mqtt.authentication == 'none')",
        "fieldPath": ".ingest.preset",
        "message": "mqtt.authentication credentials lets a device publish to devices/<its user>/telemetry only: "
        "other presets and mappings need mqtt.authentication none (a managed broker's default is credentials) "
        "or an external broker",
    },
    {
        "rule": "!has(self.ingest.topics) || self.ingest.preset != 'streamtrain' || has(self.ingest.mapping)",
        "fieldPath": ".ingest.topics",
        "message": "preset streamtrain takes the topic devices/{device_id}/telemetry only (a mapping takes topics)",
    },
]


def ingest_env(spec: dict) -> list[dict]:
    """The bridge's variables, which the HiveMQ extension reads too; raises ValueError (pydantic's) when the topic patterns are not valid ones."""
    ingest = spec.get("ingest") or {}
    preset = ingest.get("preset", "streamtrain")
    topics = ingest.get("topics")
    value = preset
    if ingest.get("mapping"):
        base = {"preset": preset} if preset != "streamtrain" else {}
        value = json.dumps({**base, **ingest["mapping"]}, separators=(",", ":"), sort_keys=True)
    load_mapping(value, topics)  # the bridge would refuse to start: say so on the resource
    out = [{"name": "STREAMTRAIN_INGEST_MAPPING", "value": value}]
    if topics:
        out.append({"name": "STREAMTRAIN_INGEST_TOPICS", "value": ",".join(topics)})
    return out
