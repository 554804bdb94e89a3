"""The shared mapping vectors (tests/ingest/vectors/mappings.json) against the Python bridge's mappings.

build_mapping_vectors.py wrote them from ``ingest_mapping.apply``; the HiveMQ extension's IngestMappingTest
(bridge/hivemq-extension) reads the same file, so both make the same reading byte for byte from the same
message and refuse the same message for the same reason.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from streamtrain import ingest_mapping, telemetry

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "ingest" / "vectors" / "mappings.json").read_text())


def payload(case: dict) -> bytes:
    return bytes.fromhex(case["payload_hex"]) if "payload_hex" in case else case["payload"].encode()


def apply(case: dict) -> telemetry.Reading | telemetry.Rejection:
    known = frozenset(case["known_devices"]) if "known_devices" in case else None
    return ingest_mapping.apply(
        ingest_mapping.IngestMapping.model_validate(case["mapping"]),
        case["topic"],
        payload(case),
        case["arrived"],
        max_bytes=case.get("max_bytes", telemetry.MAX_PAYLOAD_BYTES),
        known_devices=known,
        arrival_seq=ingest_mapping.ArrivalSeq(),
    )


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_case(case):
    result = apply(case)
    if "record" in case:
        assert isinstance(result, telemetry.Reading), result
        assert result.to_json().decode() == case["record"]
    else:
        assert isinstance(result, telemetry.Rejection), result.to_json()
        assert (result.reason, result.detail) == (case["reason"], case["detail"])
    mapping = ingest_mapping.IngestMapping.model_validate(case["mapping"])
    assert any(mqtt.topic_matches_sub(f, case["topic"]) for f in mapping.subscriptions) == case["subscribed"]


@pytest.mark.parametrize("seq", VECTORS["sequences"], ids=[s["name"] for s in VECTORS["sequences"]])
def test_arrival_sequence(seq):
    mapping = ingest_mapping.IngestMapping.model_validate(seq["mapping"])
    arrivals, held = ingest_mapping.ArrivalSeq(), ingest_mapping.HeldValues(mapping.hold_s)
    records = [
        ingest_mapping.apply(mapping, m["topic"], m["payload"].encode(), m["arrived"], arrival_seq=arrivals, held=held)
        for m in seq["messages"]
    ]
    got = [r.to_json().decode() if isinstance(r, telemetry.Reading) else f"refused: {r.reason}" for r in records]
    assert got == seq["records"]


def test_vectors_cover_every_preset_reason_and_shape():
    cases = VECTORS["cases"]
    json_presets = {n for n, m in ingest_mapping.PRESETS.items() if m.format == "json"}
    example_names = {c["name"] for c in cases if "record" in c}
    assert {f"{p} example" for p in json_presets} <= example_names
    reasons = {c["reason"] for c in cases if "reason" in c}
    assert reasons == set(telemetry.REASONS)
    assert sum("record" in c for c in cases) >= 40
    assert any(not c["subscribed"] for c in cases) and any(
        c["subscribed"] and c.get("reason") == "bad_topic" for c in cases
    )
    last: dict[str, int] = {}
    for r in (json.loads(r) for s in VECTORS["sequences"] for r in s["records"] if r.startswith("{")):
        # strictly increasing per device
        assert r["seq"] > last.get(r["device_id"], -1)
        last[r["device_id"]] = r["seq"]


def test_vectors_are_what_the_builder_writes_now():
    built = runpy.run_path(
        str(Path(__file__).resolve().parents[2] / "ingest" / "vectors" / "build_mapping_vectors.py")
    )  # writes nothing
    assert built["CASES"] == VECTORS["cases"], "stale: run build_mapping_vectors.py"
    assert built["SEQUENCES"] == VECTORS["sequences"]
