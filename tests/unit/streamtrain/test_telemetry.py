"""Unit tests of the telemetry schema: each kind of bad input gets its reason; nothing raises.

Hostile input, telemetry payloads (what the bridge validates): whatever arrives, the answer is a value or a typed, explained refusal, never
anything else raised (strategies in tests/unit/hostile.py)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamtrain import telemetry
from streamtrain.telemetry import Reading, Rejection, validate
from tests.unit.hostile import (
    FAST,
    almost_readings,
    deep,
    device_ids,
    dumps,
)

GOOD = {
    "device_id": "dev-1",
    "ts": 1764052800.5,
    "seq": 3,
    "temperature": 70.1,
    "current": 2,
    "label": 0,
}


def test_good_reading_keeps_channels_and_ground_truth_apart():
    r = validate(json.dumps(GOOD).encode(), "devices/dev-1/telemetry")
    assert isinstance(r, Reading)
    assert r.channels == {"temperature": 70.1, "current": 2.0}
    assert r.label == 0 and r.seq == 3
    assert json.loads(r.to_json())["label"] == 0


@pytest.mark.parametrize(
    "payload,topic,reason",
    [
        (
            b"x" * (telemetry.MAX_PAYLOAD_BYTES + 1),
            "devices/dev-1/telemetry",
            "oversized",
        ),
        (b"{not json", "devices/dev-1/telemetry", "malformed_json"),
        (b"[1,2]", "devices/dev-1/telemetry", "not_an_object"),
        (
            json.dumps({"device_id": "dev-1", "ts": 1.0}).encode(),
            "devices/dev-1/telemetry",
            "missing_field",
        ),
        (
            json.dumps({**GOOD, "temperature": "hot"}).encode(),
            "devices/dev-1/telemetry",
            "wrong_type",
        ),
        (
            json.dumps({**GOOD, "seq": -1}).encode(),
            "devices/dev-1/telemetry",
            "wrong_type",
        ),
        (
            json.dumps({**GOOD, "seq": True}).encode(),
            "devices/dev-1/telemetry",
            "wrong_type",
        ),
        (
            b'{"device_id":"dev-1","ts":1.0,"seq":1,"temperature":NaN}',
            "devices/dev-1/telemetry",
            "non_finite",
        ),
        (
            b'{"device_id":"dev-1","ts":1.0,"seq":1,"temperature":Infinity}',
            "devices/dev-1/telemetry",
            "non_finite",
        ),
        (
            json.dumps({**GOOD, "temperature": 1e400}).encode(),
            "devices/dev-1/telemetry",
            "non_finite",
        ),
        (json.dumps(GOOD).encode(), "devices/dev-2/telemetry", "topic_mismatch"),
        (json.dumps(GOOD).encode(), "sensors/dev-1", "bad_topic"),
        (
            json.dumps({**GOOD, "label": 7}).encode(),
            "devices/dev-1/telemetry",
            "wrong_type",
        ),
    ],
)
def test_bad_input_is_rejected_with_its_reason(payload, topic, reason):
    r = validate(payload, topic)
    assert isinstance(r, Rejection), r
    assert r.reason == reason
    assert r.reason in telemetry.REASONS


def test_unknown_device_is_rejected_when_a_registry_is_given():
    r = validate(
        json.dumps(GOOD).encode(),
        "devices/dev-1/telemetry",
        known_devices=frozenset({"dev-9"}),
    )
    assert isinstance(r, Rejection) and r.reason == "unknown_device"


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | st.dictionaries(
        st.text(max_size=10),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
        max_size=8,
    ).map(lambda d: json.dumps(d).encode())
)
def test_validate_never_raises(payload):
    r = validate(payload, "devices/dev-1/telemetry")
    assert isinstance(r, (Reading, Rejection))
    if isinstance(r, Rejection):
        assert r.reason in telemetry.REASONS and r.detail


_FIELD_NAMES = st.sampled_from(sorted(telemetry.RESERVED)) | st.text(max_size=6)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from([0, 1, 2.0, 1e308, 10**400, -(10**400)]),
    st.text(max_size=4),
    st.sampled_from(["dev-1", "x" * 65, "bad id", "pump"]),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def _readings(draw):
    """Objects near the schema's edges: the required fields mostly right, each sometimes wrong."""
    obj = {
        "device_id": draw(st.sampled_from(["dev-1", "a:b.c_d-9"]) | _VALUES),
        "ts": draw(st.floats(0, 2e9) | _VALUES),
        "seq": draw(st.integers(0, 10**6) | _VALUES),
    }
    for name in ("device_id", "ts", "seq"):
        if draw(st.integers(0, 15)) == 0:
            del obj[name]
    obj.update(draw(st.dictionaries(_FIELD_NAMES, _VALUES, max_size=6)))
    if draw(st.integers(0, 20)) == 0:
        obj.update({f"ch{i}": 1.0 for i in range(draw(st.integers(60, 70)))})
    return obj


@settings(max_examples=500, deadline=None)
@given(_readings())
def test_validate_accepts_exactly_what_the_telemetry_schema_accepts(obj):
    """streamtrain/schemas/telemetry.schema.json is the contract; the bridge's fast check must agree with it,
    and what the bridge writes to the raw topic (Reading.to_json) must be a valid telemetry record too."""
    from streamtrain import schemas

    r = validate(json.dumps(obj).encode(), None)
    problems = schemas.errors("telemetry", obj)
    assert isinstance(r, Reading) == (not problems), (r, problems)
    if isinstance(r, Reading):
        assert schemas.errors("telemetry", json.loads(r.to_json())) == []


@pytest.mark.parametrize("device_id", ["dev-1\n", "dev-1\r", "\ndev-1", "dev-1\n\n"])
def test_device_id_is_the_whole_string_never_a_second_identity(device_id):
    """Issue 24, finding 10: '$' also matches before a final newline, so "dev-1\\n" passed as another device."""
    payload = json.dumps({**GOOD, "device_id": device_id}).encode()
    for topic in (None, f"devices/{device_id}/telemetry"):
        r = validate(payload, topic, known_devices=frozenset({"dev-1", device_id}))
        assert isinstance(r, Rejection) and r.reason == "wrong_type", r
    assert telemetry.device_from_topic("devices/dev-1/telemetry\n") is None


def check_telemetry(payload: bytes, topic: str | None):
    result = telemetry.validate(payload, topic)
    if isinstance(result, telemetry.Rejection):
        assert result.reason in telemetry.REASONS and result.detail
        return result
    assert isinstance(result, telemetry.Reading)
    assert all(math.isfinite(v) for v in result.channels.values())
    assert not set(result.channels) & telemetry.RESERVED
    again = telemetry.validate(result.to_json(), topic)  # what the bridge forwards is valid again
    assert again == result
    return result


@FAST
@given(st.binary(max_size=2000))
@example(deep(8000))
@example(b'{"device_id":"a","ts":1,"seq":0,"x":' + deep(5000) + b"}")
@example(b"\xff\xfe{}")
def test_any_bytes_are_a_reading_or_a_reasoned_rejection(payload):
    check_telemetry(payload, "devices/dev-1/telemetry")


@FAST
@given(
    almost_readings,
    st.one_of(
        st.none(),
        st.text(max_size=40),
        device_ids.map(lambda d: f"devices/{d}/telemetry"),
    ),
)
def test_structured_nearly_valid_readings_never_raise(obj, topic):
    check_telemetry(dumps(obj), topic)


def test_deeply_nested_json_is_malformed_not_a_crash():
    r = telemetry.validate(deep(8000), "devices/dev-1/telemetry")
    assert isinstance(r, telemetry.Rejection) and r.reason == "malformed_json" and "nested" in r.detail
