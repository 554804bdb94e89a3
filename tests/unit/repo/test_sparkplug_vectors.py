"""The shared Sparkplug B vectors (tests/ingest/vectors/sparkplug.json) against the Python decoder.

build_sparkplug_vectors.py wrote them from ``SparkplugDecoder.apply``; the HiveMQ extension's SparkplugDecoderTest
(bridge/hivemq-extension) replays the same file, so both paths make the same raw records byte for byte of the same
messages, refuse the same messages for the same reasons and ask for the same rebirths.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from streamtrain import ingest_mapping, sparkplug, telemetry
from streamtrain.sparkplug import SparkplugDecoder

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "ingest" / "vectors" / "sparkplug.json").read_text())
STEPS = [m for s in VECTORS["sequences"] for m in s["messages"]]


@pytest.mark.parametrize("seq", VECTORS["sequences"], ids=[s["name"] for s in VECTORS["sequences"]])
def test_sequence(seq):
    decoder = SparkplugDecoder(
        ingest_mapping.IngestMapping.model_validate(seq["mapping"]), rebirth_interval_s=seq["rebirth_interval_s"]
    )
    for i, m in enumerate(seq["messages"]):
        out = decoder.apply(
            m["topic"],
            bytes.fromhex(m["payload_hex"]),
            m["arrived"],
            max_bytes=m.get("max_bytes", telemetry.MAX_PAYLOAD_BYTES),
        )
        where = f"message {i}: {m['topic']}"
        assert out.message_type == m["message_type"], where
        if "reason" in m:
            assert out.rejection is not None, where
            assert (out.rejection.reason, out.rejection.detail) == (m["reason"], m["detail"]), where
            assert out.device_id == m["key"], where
        else:
            assert out.rejection is None, (where, out.rejection)
            assert [{"key": r.device_id, "value": r.to_json().decode()} for r in out.readings] == m["records"], where
        assert [e for e, _ in out.events] == m["events"], where
        assert out.seq_gap == m["seq_gap"], where
        rebirth = None if out.rebirth is None else (out.rebirth[0], out.rebirth[1].hex())
        assert rebirth == ((m["rebirth_topic"], m["rebirth_payload_hex"]) if "rebirth_topic" in m else None), where


def test_vectors_cover_every_rule():
    reasons = {m["reason"] for m in STEPS if "reason" in m}
    assert {"bad_topic", "oversized", "malformed_protobuf", "unknown_alias", "non_finite", "wrong_type"} <= reasons
    assert {"missing_field", "too_many_fields"} <= reasons
    assert set(sparkplug.REASONS) <= reasons
    assert sum(len(m.get("records", ())) for m in STEPS) >= 20
    assert any(len(m.get("records", ())) > 1 for m in STEPS)  # several timestamps in one DDATA
    events = {e for m in STEPS for e in m["events"]}
    assert {"sparkplug_seq_gap", "sparkplug_rebirth_requested", "sparkplug_no_birth", "sparkplug_death"} <= events
    assert {m["message_type"] for m in STEPS} >= set(sparkplug.MESSAGE_TYPES) - {"DCMD"}


def test_vectors_are_what_the_builder_writes_now():
    built = runpy.run_path(
        str(Path(__file__).resolve().parents[2] / "ingest" / "vectors" / "build_sparkplug_vectors.py")
    )  # writes nothing
    assert built["doc"] == VECTORS, "stale: run build_sparkplug_vectors.py"
