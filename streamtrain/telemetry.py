"""The telemetry message: one flat JSON object per reading.

    {"device_id": "dev-00042", "ts": 1764052800.25, "seq": 17,
     "temperature": 71.3, "current": 1.92, "vibration": 0.31, "pressure": 3.02,
     "device_type": "pump", "label": 0, "anomaly": null}

``device_id``, ``ts`` (epoch seconds) and ``seq`` (per-device, from 0) are required; every
other field is a finite number (a sensor channel) except the reserved ones below. ``label``
and ``anomaly`` carry ground truth and are never used as features.

``validate`` turns raw MQTT input into a ``Reading`` or a ``Rejection`` with a reason code;
it never raises on bad input. It accepts exactly the objects streamtrain/schemas/telemetry.schema.json
accepts (tests/unit/streamtrain/test_telemetry.py checks that on generated input) and takes its device id
pattern, reserved fields and limits from that file; it is hand-written because it runs on every
message of the bridge and names the reason of each rejection. ``check_identity`` is its check of
``device_id``, ``ts`` and ``seq``, which the preprocessor asks too.

``IngestLimits`` holds what a valid reading must also respect to be ingested (how far ahead of its
arrival its ``ts`` may be), mixed into the settings of the bridge and the preprocessor.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamtrain import schemas

_SCHEMA = schemas.load("telemetry")
DEVICE_ID = re.compile(_SCHEMA["properties"]["device_id"]["pattern"])
TOPIC = re.compile(r"devices/([^/]+)/telemetry")  # fullmatch: no "\n" after the level
MAX_PAYLOAD_BYTES: int = _SCHEMA["x-streamtrain"]["max_payload_bytes"]
#: Fields that are not sensor channels.
RESERVED = set(_SCHEMA["properties"])
#: Fields of one reading, reserved ones included.
MAX_FIELDS: int = _SCHEMA["maxProperties"]
MAX_CHANNELS = MAX_FIELDS - len(RESERVED)
#: Ground-truth fields: passed through the pipeline, never features.
GROUND_TRUTH = ("label", "anomaly")

REASONS = (
    "oversized",
    "malformed_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "non_finite",
    "bad_topic",
    "topic_mismatch",
    "unknown_device",
    "too_many_fields",
)
#: Reasons of IngestLimits: a valid record refused all the same.
LIMIT_REASONS = ("clock_skew",)


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


@dataclass
class Reading:
    device_id: str
    ts: float
    seq: int
    channels: dict[str, float]
    label: int | None = None
    anomaly: str | None = None
    device_type: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"device_id": self.device_id, "ts": self.ts, "seq": self.seq, **self.channels}
        if self.device_type is not None:
            d["device_type"] = self.device_type
        if self.label is not None:
            d["label"] = self.label
        if self.anomaly is not None:
            d["anomaly"] = self.anomaly
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


class IngestLimits(BaseSettings):
    """Limits on valid readings, one field each for every program that ingests them (mixed into the
    settings of the bridge and of the preprocessor, whose raw topic the bridge does not guard alone)."""

    model_config = SettingsConfigDict(env_prefix="STREAMTRAIN_", extra="ignore")

    max_clock_skew_s: float = Field(
        900.0,
        ge=0,
        description=(
            "A reading whose ts is more than this many seconds ahead of its arrival is dead-lettered as clock_skew "
            "(a ts in milliseconds would open a window in the far future and leave every later reading of its "
            "device out of the windows); 0 = no limit"
        ),
    )

    def clock_skew(self, ts: float, arrived: float) -> Rejection | None:
        """A ``clock_skew`` rejection when ``ts`` is beyond the limit ahead of ``arrived`` (epoch seconds)."""
        limit = self.max_clock_skew_s
        if limit and ts - arrived > limit:
            return Rejection(
                "clock_skew", f"ts {ts} is {ts - arrived:.0f} s ahead of its arrival {arrived:.3f} (limit {limit:g} s)"
            )
        return None


def reject_constant(token: str):
    # json.loads would turn NaN / Infinity into floats; keep them as a typed rejection instead.
    raise ValueError(f"non-finite number {token}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: int | float) -> bool:
    """Finite as a double: JSON allows integers far beyond the double range, a reading does not."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def device_from_topic(topic: str) -> str | None:
    m = TOPIC.fullmatch(topic)
    return m.group(1) if m else None


def valid_device_id(device_id: object) -> bool:
    """A device id is the whole string: re.match's ``$`` would also accept ``dev-1\\n``, a second identity."""
    return isinstance(device_id, str) and DEVICE_ID.fullmatch(device_id) is not None


def check_identity(obj: dict) -> tuple[str, float, int] | Rejection:
    """The identity of a reading (``device_id``, ``ts``, ``seq``) present and well typed, as the schema
    says; ``seq`` written as 3.0 is the integer 3. ``validate`` and the preprocessor (whose raw topic
    anything with write access can fill, bypassing the bridge) both ask this."""
    for name in ("device_id", "ts", "seq"):
        if name not in obj:
            return Rejection("missing_field", f"required field {name!r} is missing")
    device_id, ts, seq = obj["device_id"], obj["ts"], obj["seq"]
    if not valid_device_id(device_id):
        return Rejection("wrong_type", "device_id must be a string of 1-64 characters [A-Za-z0-9_.:-]")
    if not _is_number(ts):
        return Rejection("wrong_type", "ts must be a number (epoch seconds)")
    if not _finite(ts):
        return Rejection("non_finite", "ts is not finite")
    if isinstance(seq, float) and seq.is_integer():
        seq = int(seq)  # 3.0 is the integer 3 in JSON (and in the schema)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return Rejection("wrong_type", "seq must be a non-negative integer")
    return device_id, float(ts), seq


def decode_object(payload: bytes) -> dict | Rejection:
    """A payload as a JSON object, or why it is not one (every device format's first step)."""
    try:
        obj = json.loads(payload, parse_constant=reject_constant)
    except ValueError as exc:
        if "non-finite" in str(exc):
            return Rejection("non_finite", str(exc))
        return Rejection("malformed_json", str(exc)[:200])
    except RecursionError:
        # A few KB of "[[[[" exhaust the decoder's stack; it must not take the bridge down (and
        # come back with the unacknowledged message after every restart).
        return Rejection("malformed_json", "JSON nested too deeply")
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"payload is a JSON {type(obj).__name__}, not an object")
    return obj


def validate(
    payload: bytes,
    topic: str | None = None,
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    known_devices: frozenset[str] | None = None,
) -> Reading | Rejection:
    """Check one MQTT payload (and its topic, when given) against the telemetry schema."""
    if len(payload) > max_bytes:
        return Rejection("oversized", f"{len(payload)} bytes > limit {max_bytes}")
    topic_device = None
    if topic is not None:
        topic_device = device_from_topic(topic)
        if topic_device is None:
            return Rejection("bad_topic", f"topic {topic!r} is not devices/<id>/telemetry")
    obj = decode_object(payload)
    if isinstance(obj, Rejection):
        return obj
    identity = check_identity(obj)
    if isinstance(identity, Rejection):
        return identity
    device_id, ts, seq = identity
    if topic_device is not None and topic_device != device_id:
        return Rejection("topic_mismatch", f"device_id {device_id!r} published on the topic of {topic_device!r}")
    if known_devices is not None and device_id not in known_devices:
        return Rejection("unknown_device", f"device {device_id!r} is not registered")
    if len(obj) > MAX_FIELDS:
        return Rejection("too_many_fields", f"{len(obj)} fields > limit {MAX_FIELDS}")
    channels: dict[str, float] = {}
    for key, value in obj.items():
        if key in RESERVED:
            continue
        if not _is_number(value):
            return Rejection("wrong_type", f"channel {key!r} must be a number, got {type(value).__name__}")
        if not _finite(value):
            return Rejection("non_finite", f"channel {key!r} is not finite")
        channels[key] = float(value)
    label = obj.get("label")
    if label is not None:
        if isinstance(label, bool):
            label = int(label)
        if label not in (0, 1):
            return Rejection("wrong_type", "label must be 0, 1, true, false or null")
    anomaly = obj.get("anomaly")
    if anomaly is not None and not isinstance(anomaly, str):
        return Rejection("wrong_type", "anomaly must be a string or null")
    device_type = obj.get("device_type")
    if device_type is not None and not isinstance(device_type, str):
        return Rejection("wrong_type", "device_type must be a string or null")
    return Reading(device_id, ts, seq, channels, label, anomaly, device_type)
