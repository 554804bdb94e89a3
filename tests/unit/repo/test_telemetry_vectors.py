"""The shared telemetry vectors (tests/ingest/vectors/telemetry.json) against the Python bridge's validator.

The HiveMQ extension's TelemetryValidatorTest (bridge/hivemq-extension) reads the same file, so the
two implementations accept the same records byte for byte and reject the same input for the same reason.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from streamtrain import telemetry

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "ingest" / "vectors" / "telemetry.json").read_text())


def _payload(case: dict) -> bytes:
    return bytes.fromhex(case["payload_hex"]) if "payload_hex" in case else case["payload"].encode()


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_case(case):
    known = frozenset(case["known_devices"]) if "known_devices" in case else None
    result = telemetry.validate(
        _payload(case), case["topic"], max_bytes=case.get("max_bytes", telemetry.MAX_PAYLOAD_BYTES), known_devices=known
    )
    if "record" in case:
        assert isinstance(result, telemetry.Reading), result
        assert result.to_json().decode() == case["record"]
    else:
        assert isinstance(result, telemetry.Rejection), result.to_json()
        assert result.reason == case["reason"]
        if "detail" in case:
            assert result.detail == case["detail"]


def test_every_reason_is_covered():
    assert {c["reason"] for c in VECTORS["cases"] if "reason" in c} == set(telemetry.REASONS)
    assert sum("record" in c for c in VECTORS["cases"]) >= 10


def test_floats_are_pythons_repr():
    floats = VECTORS["floats"]
    assert len(floats) > 1000
    for bits, text in floats:
        value = struct.unpack(">d", bytes.fromhex(bits))[0]
        assert repr(value) == text
        assert json.dumps(value) == text  # what Reading.to_json writes
