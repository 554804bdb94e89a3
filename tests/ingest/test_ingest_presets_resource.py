"""The HiveMQ extension's presets resource is generated from ``PRESETS``: stale means `make ingest-presets`."""

from __future__ import annotations

import json

from streamtrain import ingest_mapping
from tests.conftest import REPO


def test_presets_resource_is_fresh():
    written = (REPO / ingest_mapping.PRESETS_RESOURCE).read_text()
    assert written == ingest_mapping.presets_json(), "stale: run `make ingest-presets`"


def test_presets_resource_holds_every_preset_in_full():
    presets = json.loads(ingest_mapping.presets_json())["presets"]
    assert list(presets) == list(ingest_mapping.PRESETS)
    for name, fields in presets.items():
        assert ingest_mapping.IngestMapping.model_validate(fields) == ingest_mapping.PRESETS[name]
        assert set(fields) == set(ingest_mapping.IngestMapping.model_fields)
