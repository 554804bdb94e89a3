"""How devices publish, declared once: topic patterns and payload paths that turn a message into a reading.

A mapping names its topics with patterns whose levels are literal, ``+`` or ``{name}``
(``tele/{device_id}/SENSOR``); the MQTT subscription filters are derived from them. The device id
comes from the ``{device_id}`` level or a payload path, the timestamp from a path (epoch seconds,
milliseconds, or ISO 8601 with a time zone to assume when it names none) or else the arrival time,
and the channels from every number under a root path, nested objects flattened
(``ENERGY.Power`` becomes ``energy_power``), filtered by include/exclude patterns and renamed.

A pattern with a ``{channel}`` level (``{device_id}/sensor/{channel}/state``) carries one value per
topic: the payload is that channel's value (a JSON number or boolean, a JSON object flattened under the
channel's name, or text, which is not a number). A device's topics are merged into readings by time:
each message makes a reading of its device at its arrival, with the last value of every channel the
device has published within ``hold_s`` (``HeldValues``), as an as-of join of the device's streams.

``seq`` comes from a path, or, when the device sends none, is derived: the reading's timestamp in
milliseconds. A device's readings then keep one identity however often they are delivered (the
same payload gives the same ``(device_id, seq)``), and the bridge recognises a redelivered message by
its content (see ``fingerprint``). A device without a timestamp gets its arrival time, which a
redelivery cannot repeat: there the content fingerprint alone is the identity (docs/devices.md).

The preset ``streamtrain`` is today's shape, validated by ``telemetry.validate`` itself: it
behaves exactly as before mappings existed. Every refusal is a ``telemetry.Rejection`` with one of
``telemetry.REASONS``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
import sys
from collections import OrderedDict
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamtrain import telemetry
from streamtrain.telemetry import Reading, Rejection

_LEVEL = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_SNAKE = re.compile(r"[^a-z0-9]+")


def snake_case(name: str) -> str:
    """``ENERGY_ApparentPower`` -> ``energy_apparent_power``, ``co2-level`` -> ``co2_level``."""
    return _NOT_SNAKE.sub("_", _CAMEL.sub("_", name).lower()).strip("_")


class TopicPattern:
    """One topic pattern: levels literal, ``+`` (any) or ``{name}`` (any, kept under its name)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.levels: list[tuple[str, str | None]] = []  # (literal or "", name or None)
        for level in text.split("/"):
            named = _LEVEL.fullmatch(level)
            if named:
                self.levels.append(("", named.group(1)))
            elif level == "+":
                self.levels.append(("", None))
            elif "{" in level or "}" in level or "#" in level or "+" in level:
                raise ValueError(f"topic pattern {text!r}: level {level!r} must be literal, '+' or a whole '{{name}}'")
            else:
                self.levels.append((level, None))
        self.names = [name for _, name in self.levels if name]
        self.wild = [not literal for literal, _ in self.levels]

    @property
    def subscription(self) -> str:
        """The MQTT topic filter that carries this pattern's topics."""
        return "/".join("+" if wild else literal for (literal, _), wild in zip(self.levels, self.wild))

    def match(self, topic: str) -> dict[str, str] | None:
        parts = topic.split("/")
        if len(parts) != len(self.levels):
            return None
        named: dict[str, str] = {}
        for part, (literal, name), wild in zip(parts, self.levels, self.wild):
            if not wild and part != literal:
                return None
            if wild and not part:
                return None  # an empty level names nothing
            if name:
                named[name] = part
        return named


class IngestMapping(BaseModel):
    """Topics and payload paths of one kind of device (a YAML file, or a preset by name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("custom", description="Name of the mapping, logged by the bridge")
    format: Literal["streamtrain", "json", "sparkplug_b"] = Field(
        "json",
        description="streamtrain: today's flat record checked by the telemetry schema; json: any JSON object mapped "
        "below; sparkplug_b: Sparkplug B edge nodes (protobuf, births and aliases; docs/devices.md)",
    )
    topics: list[str] = Field(
        ["devices/{device_id}/telemetry"],
        min_length=1,
        description="Topic patterns: levels literal, '+' or '{name}'; the subscription filters are derived from them",
    )
    device_id_path: str | None = Field(
        None, description="Payload path of the device id (dotted); default: the topic level {device_id}"
    )
    ts_path: str | None = Field(None, description="Payload path of the timestamp; none: the arrival time")
    ts_format: Literal["s", "ms", "iso8601"] = Field("s", description="Epoch seconds, milliseconds, or ISO 8601")
    ts_timezone: str = Field("UTC", description="Time zone of an ISO 8601 timestamp that names none (IANA name)")
    seq_path: str | None = Field(
        None, description="Payload path of the per-device reading number; none: the timestamp in milliseconds"
    )
    channels_root: str | None = Field(None, description="Payload path of the object holding the channels; none: all")
    separator: str = Field("_", description="Joins the keys of nested objects into one channel name")
    include: list[str] = Field(["*"], description="Channel names (before renaming) kept: shell-style patterns")
    exclude: list[str] = Field([], description="Channel names (before renaming) left out: shell-style patterns")
    rename: dict[str, str] = Field({}, description="Channel name (flattened) -> name in the reading")
    names: Literal["snake_case", "keep"] = Field(
        "snake_case",
        description="Channel names not renamed: lower_snake_case as preprocessing specs name features "
        "(ENERGY_ApparentPower -> energy_apparent_power), or kept as sent",
    )
    booleans: Literal["number", "skip"] = Field("number", description="true/false as channels 1/0, or left out")
    non_numeric: Literal["skip", "refuse"] = Field(
        "skip", description="Strings, lists and nulls among the channels: left out, or the payload is refused"
    )
    hold_s: float = Field(
        900.0,
        gt=0,
        description="One value per topic ({channel} level): how long a channel's last value stays part of its "
        "device's readings after it was published",
    )

    @field_validator("topics")
    @classmethod
    def _patterns(cls, topics: list[str]) -> list[str]:
        for t in topics:
            TopicPattern(t)
        return topics

    @field_validator("ts_timezone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        return zone

    @model_validator(mode="after")
    def _device_named(self) -> "IngestMapping":
        if self.format == "streamtrain":
            if self.topics != ["devices/{device_id}/telemetry"]:
                raise ValueError("format streamtrain takes the topic devices/{device_id}/telemetry only")
            return self
        if self.format == "sparkplug_b":
            for t in self.topics:
                levels = t.split("/")
                if levels[0] != "spBv1.0" or len(levels) not in (4, 5):
                    raise ValueError(
                        f"format sparkplug_b: topic pattern {t!r} must be spBv1.0/<group>/<type>/<edge node>[/<device>]"
                    )
            for name in ("device_id_path", "ts_path", "seq_path", "channels_root"):
                if getattr(self, name) is not None:
                    raise ValueError(f"format sparkplug_b takes no {name}: the topic and the payload's metrics say it")
            return self
        if self.device_id_path is None:
            for t in self.topics:
                if "device_id" not in TopicPattern(t).names:
                    raise ValueError(f"topic pattern {t!r} has no {{device_id}} level and device_id_path is not set")
        if self.one_value_per_topic:
            for name in ("device_id_path", "ts_path", "seq_path", "channels_root"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"topics with a {{channel}} level carry one value each and take no {name}: the device comes "
                        "from the topic, the time is the arrival"
                    )
        return self

    # ------------------------------------------------------------------ derived
    @property
    def patterns(self) -> list[TopicPattern]:
        return _patterns(tuple(self.topics))

    def channel_name(self, flat: str) -> str | None:
        """The reading's name of the flattened payload key ``flat``, None when include/exclude leave it out."""
        return _channel_name(
            tuple(self.include), tuple(self.exclude), tuple(self.rename.items()), self.names == "snake_case", flat
        )

    @property
    def subscriptions(self) -> list[str]:
        if self.format == "sparkplug_b":
            # One filter per group level: the broker keeps one subscription's messages in order, and an edge node's
            # births, data (4 and 5 levels) and seqs must arrive in the order it sent them.
            return list(dict.fromkeys("/".join(p.subscription.split("/")[:2]) + "/#" for p in self.patterns))
        return list(dict.fromkeys(p.subscription for p in self.patterns))

    @property
    def one_value_per_topic(self) -> bool:
        """Some topic pattern has a ``{channel}`` level: one value per topic, merged into readings by time."""
        return any("channel" in p.names for p in self.patterns)

    @property
    def derives_seq(self) -> bool:
        """The device sends no seq: identity is the timestamp (and the content, see ``fingerprint``)."""
        return self.format != "streamtrain" and self.seq_path is None

    @property
    def device_timestamps(self) -> bool:
        """The reading's time comes from the device (the same message is always the same reading)."""
        return self.format == "sparkplug_b" or self.ts_path is not None

    def match_topic(self, topic: str) -> dict[str, str] | None:
        for pattern in self.patterns:
            named = pattern.match(topic)
            if named is not None:
                return named
        return None

    def device_from_topic(self, topic: str) -> str | None:
        named = self.match_topic(topic)
        device = named.get("device_id") if named else None
        return device if telemetry.valid_device_id(device) else None


@lru_cache(maxsize=256)
def _patterns(topics: tuple[str, ...]) -> list[TopicPattern]:
    return [TopicPattern(t) for t in topics]


@lru_cache(maxsize=65536)  # payload keys are few per kind of device; the cache is bounded all the same
def _channel_name(
    include: tuple[str, ...], exclude: tuple[str, ...], rename: tuple[tuple[str, str], ...], snake: bool, flat: str
) -> str | None:
    if not any(fnmatch.fnmatchcase(flat, p) for p in include) or any(fnmatch.fnmatchcase(flat, p) for p in exclude):
        return None
    return dict(rename).get(flat) or (snake_case(flat) if snake else flat)


def fingerprint(topic: str, payload: bytes) -> str:
    """What a redelivered message repeats exactly: its topic and payload."""
    h = hashlib.blake2b(topic.encode(), digest_size=12)
    h.update(b"\0")
    h.update(payload)
    return h.hexdigest()


#: How far above its timestamp's milliseconds a derived seq may be (ArrivalSeq's bumps within one ms).
TIMESTAMP_SEQ_SLACK = 1000


def is_timestamp_seq(ts: float, seq: int) -> bool:
    """``seq`` is the reading's timestamp in ms, as a mapping without seq derives it: it grows with time, so
    a device silent for an hour jumps by 3,600,000, and how far ahead it may be is the clock-skew limit's
    to say, not a limit on seq jumps."""
    return 0 <= seq - round(ts * 1000) <= TIMESTAMP_SEQ_SLACK


class ArrivalSeq:
    """Per-device seqs from arrival times in ms, strictly increasing even within one millisecond."""

    def __init__(self, max_devices: int = 200_000) -> None:
        self.last: OrderedDict[str, int] = OrderedDict()
        self.max_devices = max_devices

    def next(self, device: str, ts_ms: int) -> int:
        seq = max(ts_ms, self.last.pop(device, -1) + 1)
        self.last[device] = seq
        if len(self.last) > self.max_devices:
            self.last.popitem(last=False)
        return seq


class HeldValues:
    """One value per topic: the last value of each channel of each device and when it came, so that a message
    makes a reading with every channel its device has published within ``hold_s`` (least recently heard
    devices forgotten beyond ``max_devices``)."""

    def __init__(self, hold_s: float, max_devices: int = 200_000) -> None:
        self.hold_s = hold_s
        self.max_devices = max_devices
        self.devices: OrderedDict[str, dict[str, tuple[float, float]]] = OrderedDict()  # -> name: (value, ts)

    def merge(self, device: str, ts: float, channels: dict[str, float]) -> dict[str, float] | Rejection:
        """The reading's channels: ``channels`` over the device's held values not older than ``hold_s`` at ``ts``
        (each in the order its channel was first heard); nothing is kept when the reading is refused."""
        held = self.devices.get(device, {})
        merged = {k: v for k, v in held.items() if ts - v[1] <= self.hold_s}
        for name, value in channels.items():
            merged[name] = (value, ts)
        if len(merged) > telemetry.MAX_CHANNELS:
            return Rejection("too_many_fields", f"{len(merged)} channels held > limit {telemetry.MAX_CHANNELS}")
        self.devices.pop(device, None)
        self.devices[device] = merged
        if len(self.devices) > self.max_devices:
            self.devices.popitem(last=False)
        return {name: value for name, (value, _) in merged.items()}

    def restore(self, device: str, ts: float, channels: dict[str, float]) -> None:
        """A reading written before a restart, its device's records in order: each channel held since the first
        reading that had its value (never older than it was, so never held past ``hold_s``)."""
        held = self.devices.pop(device, {})
        self.devices[device] = {
            name: (value, held[name][1] if name in held and held[name][0] == value else ts)
            for name, value in channels.items()
        }
        if len(self.devices) > self.max_devices:
            self.devices.popitem(last=False)


# ---------------------------------------------------------------------------- presets
PRESETS: dict[str, IngestMapping] = {
    "streamtrain": IngestMapping(name="streamtrain", format="streamtrain"),
    "zigbee2mqtt": IngestMapping(
        name="zigbee2mqtt",
        # zigbee2mqtt/bridge/... (its own state) has more levels, so it never matches.
        topics=["zigbee2mqtt/{device_id}"],
        exclude=["last_seen", "elapsed", "update_*", "device_*"],
    ),
    "tasmota": IngestMapping(
        name="tasmota",
        topics=["tele/{device_id}/SENSOR"],
        ts_path="Time",
        ts_format="iso8601",
        exclude=["*TotalStartTime", "TempUnit", "PressureUnit", "SpeedUnit"],
    ),
    "cloud": IngestMapping(
        name="cloud",
        topics=["{fleet}/{device_id}/data"],
        device_id_path="deviceId",
        ts_path="timestamp",
        ts_format="ms",
        channels_root="telemetry",
    ),
    "esphome": IngestMapping(
        name="esphome",
        # ESPHome's MQTT component: <topic prefix>/sensor/<name>/state, one value each (binary sensors say ON/OFF).
        topics=["{device_id}/sensor/{channel}/state"],
    ),
    "sparkplug-b": IngestMapping(
        name="sparkplug-b",
        format="sparkplug_b",
        # NBIRTH/NDATA/NDEATH (and NCMD) have 4 levels, DBIRTH/DDATA/DDEATH (and DCMD) 5; STATE has 3, never matched.
        topics=["spBv1.0/+/+/+", "spBv1.0/+/+/+/+"],
        exclude=["bdSeq", "Node Control/*", "Device Control/*", "Properties/*"],
    ),
}


def load_mapping(spec: str, topics: list[str] | None = None) -> IngestMapping:
    """A preset by name, or a YAML file (a mapping, or ``preset: <name>`` plus fields that override it); with
    ``topics``, those patterns instead of its own."""
    mapping = _load_mapping(spec)
    if topics:
        mapping = IngestMapping.model_validate({**mapping.model_dump(), "topics": topics})
    return mapping


def _load_mapping(spec: str) -> IngestMapping:
    if spec in PRESETS:
        return PRESETS[spec]
    if spec.lstrip().startswith("{"):  # inline: how the operator hands a StreamingTraining's mapping over
        where, text, name = "(inline)", spec, "inline"
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(
                f"ingest mapping {spec!r} is neither a preset ({', '.join(PRESETS)}), a file nor an inline JSON object"
            )
        where, text, name = spec, path.read_text(), path.stem
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"ingest mapping {where}: not YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"ingest mapping {where}: a YAML mapping is expected")
    base = data.pop("preset", None)
    if base is not None:
        if base not in PRESETS:
            raise ValueError(f"ingest mapping {where}: unknown preset {base!r}")
        data = {**PRESETS[base].model_dump(), **data}
    data.setdefault("name", name)
    return IngestMapping.model_validate(data)


class IngestMappingSettings(BaseSettings):
    """How devices publish, one setting for every program that maps messages to readings (env
    STREAMTRAIN_INGEST_MAPPING / STREAMTRAIN_INGEST_TOPICS): the bridge, and the local stack's HiveMQ
    extension, which reads the same two variables (bridge/hivemq-extension IngestSettings)."""

    model_config = SettingsConfigDict(env_prefix="STREAMTRAIN_", extra="ignore")

    ingest_mapping: str = Field(
        "streamtrain",
        description=(
            "How devices publish: a preset (" + ", ".join(PRESETS) + "), a YAML mapping file (docs/devices.md) or "
            "the same as an inline JSON object; the MQTT subscriptions are derived from its topic patterns. The "
            "HiveMQ extension takes the presets, JSON mapping files (JSON is YAML) and inline JSON"
        ),
    )
    ingest_topics: str | None = Field(
        None,
        description=(
            "Topic patterns, comma-separated, instead of the mapping's (e.g. 'plant/{device_id}/SENSOR'); the MQTT "
            "subscriptions are derived from them"
        ),
    )

    @field_validator("ingest_mapping")
    @classmethod
    def _mapping_loads(cls, value: str) -> str:
        load_mapping(value)  # a bad file or preset is an invalid setting (exit CONFIG)
        return value

    def mapping(self) -> IngestMapping:
        topics = [t.strip() for t in self.ingest_topics.split(",") if t.strip()] if self.ingest_topics else None
        return load_mapping(self.ingest_mapping, topics)


# ---------------------------------------------------------------------------- applying
def _path(obj: dict, path: str) -> tuple[bool, object]:
    node: object = obj
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _timestamp(mapping: IngestMapping, value: object) -> float | Rejection:
    path = mapping.ts_path
    if mapping.ts_format == "iso8601":
        if not isinstance(value, str):
            return Rejection("wrong_type", f"{path} must be an ISO 8601 string")
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return Rejection("wrong_type", f"{path} {value[:40]!r} is not ISO 8601")
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(mapping.ts_timezone))  # ZoneInfo caches its instances
        return when.timestamp()
    if not _number(value):
        return Rejection("wrong_type", f"{path} must be a number (epoch {mapping.ts_format})")
    if not _finite(value):  # type: ignore[arg-type]
        return Rejection("non_finite", f"{path} is not finite")
    ts = float(value)  # type: ignore[arg-type]
    return ts / 1000.0 if mapping.ts_format == "ms" else ts


def _flatten(node: dict, prefix: tuple[str, ...], out: list[tuple[tuple[str, ...], object]], depth: int = 0) -> None:
    for key, value in node.items():
        path = (*prefix, key)
        if isinstance(value, dict) and depth < 8:
            _flatten(value, path, out, depth + 1)
        else:
            out.append((path, value))


def apply(
    mapping: IngestMapping,
    topic: str,
    payload: bytes,
    arrived: float,
    *,
    max_bytes: int = telemetry.MAX_PAYLOAD_BYTES,
    known_devices: frozenset[str] | None = None,
    arrival_seq: ArrivalSeq | None = None,
    held: HeldValues | None = None,
) -> Reading | Rejection:
    """One MQTT message as a reading, or the reason it is refused (never raises on bad input). On a topic with a
    ``{channel}`` level the reading holds, with ``held``, every channel its device published within ``hold_s``.

    Sparkplug B messages need their edge node's births: ``streamtrain.sparkplug.SparkplugDecoder`` maps them."""
    if mapping.format == "sparkplug_b":
        raise ValueError("a sparkplug_b mapping is applied by streamtrain.sparkplug.SparkplugDecoder")
    if mapping.format == "streamtrain":
        return telemetry.validate(payload, topic, max_bytes=max_bytes, known_devices=known_devices)
    if len(payload) > max_bytes:
        return Rejection("oversized", f"{len(payload)} bytes > limit {max_bytes}")
    named = mapping.match_topic(topic)
    if named is None:
        return Rejection(
            "bad_topic", f"topic {topic!r} matches no pattern of mapping {mapping.name} ({mapping.topics})"
        )
    channel = named.get("channel")
    if channel is not None:
        return _one_value(mapping, named, channel, payload, arrived, known_devices, arrival_seq, held)
    obj = telemetry.decode_object(payload)
    if isinstance(obj, Rejection):
        return obj

    topic_device = named.get("device_id")
    if topic_device is not None and not telemetry.valid_device_id(topic_device):
        return Rejection("bad_topic", "the topic's device level is not a device id (1-64 characters [A-Za-z0-9_.:-])")
    device = topic_device
    if mapping.device_id_path is not None:
        found, value = _path(obj, mapping.device_id_path)
        if not found:
            return Rejection("missing_field", f"required field {mapping.device_id_path!r} is missing")
        if not telemetry.valid_device_id(value):
            return Rejection(
                "wrong_type", f"{mapping.device_id_path} must be a string of 1-64 characters [A-Za-z0-9_.:-]"
            )
        if topic_device is not None and value != topic_device:
            return Rejection("topic_mismatch", f"device id {value!r} published on the topic of {topic_device!r}")
        device = value  # type: ignore[assignment]
    assert device is not None  # the model requires a {device_id} level or a path
    if known_devices is not None and device not in known_devices:
        return Rejection("unknown_device", f"device {device!r} is not registered")

    if mapping.ts_path is None:
        ts = arrived
    else:
        found, value = _path(obj, mapping.ts_path)
        if not found:
            return Rejection("missing_field", f"required field {mapping.ts_path!r} is missing")
        stamp = _timestamp(mapping, value)
        if isinstance(stamp, Rejection):
            return stamp
        ts = stamp
    if ts < 0:
        return Rejection("wrong_type", f"timestamp {ts} is before 1970")

    if mapping.seq_path is not None:
        found, value = _path(obj, mapping.seq_path)
        if not found:
            return Rejection("missing_field", f"required field {mapping.seq_path!r} is missing")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return Rejection("wrong_type", f"{mapping.seq_path} must be a non-negative integer")
        seq = value
    else:
        ts_ms = round(ts * 1000)
        seq = arrival_seq.next(device, ts_ms) if mapping.ts_path is None and arrival_seq is not None else ts_ms

    channels = _channels(mapping, obj)
    if isinstance(channels, Rejection):
        return channels
    return Reading(device, ts, seq, channels)


def _one_value(
    mapping: IngestMapping,
    named: dict[str, str],
    channel: str,
    payload: bytes,
    arrived: float,
    known_devices: frozenset[str] | None,
    arrival_seq: ArrivalSeq | None,
    held: HeldValues | None,
) -> Reading | Rejection:
    """A message on a topic with a ``{channel}`` level: its payload is that channel's value."""
    device = named["device_id"]  # the model requires the level
    if not telemetry.valid_device_id(device):
        return Rejection("bad_topic", "the topic's device level is not a device id (1-64 characters [A-Za-z0-9_.:-])")
    if known_devices is not None and device not in known_devices:
        return Rejection("unknown_device", f"device {device!r} is not registered")
    value = _decode_value(payload)
    if isinstance(value, Rejection):
        return value
    channels = _channels(mapping, {channel: value})
    if isinstance(channels, Rejection):
        return channels
    ts_ms = round(arrived * 1000)
    seq = arrival_seq.next(device, ts_ms) if arrival_seq is not None else ts_ms
    if held is not None:
        channels = held.merge(device, arrived, channels)
        if isinstance(channels, Rejection):
            return channels
    return Reading(device, arrived, seq, channels)


def _decode_value(payload: bytes) -> object | Rejection:
    """One value: JSON (a number, true/false, an object...), or else the text itself (``ON``, ``online``)."""
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return Rejection("malformed_json", "payload is neither JSON nor UTF-8 text")
    try:
        return json.loads(text, parse_constant=telemetry.reject_constant)
    except ValueError as exc:
        if "non-finite" in str(exc):
            return Rejection("non_finite", str(exc))
        return text
    except RecursionError:
        return Rejection("malformed_json", "JSON nested too deeply")


def _channels(mapping: IngestMapping, obj: dict) -> dict[str, float] | Rejection:
    root: object = obj
    prefix: tuple[str, ...] = ()
    if mapping.channels_root is not None:
        found, root = _path(obj, mapping.channels_root)
        if not found or not isinstance(root, dict):
            return Rejection("missing_field", f"required object {mapping.channels_root!r} is missing")
        prefix = tuple(mapping.channels_root.split("."))
    consumed = {
        tuple(p.split(".")) for p in (mapping.device_id_path, mapping.ts_path, mapping.seq_path) if p is not None
    }
    leaves: list[tuple[tuple[str, ...], object]] = []
    _flatten(root, prefix, leaves)  # type: ignore[arg-type]
    channels: dict[str, float] = {}
    for path, value in leaves:
        if path in consumed:
            continue
        flat = mapping.separator.join(path[len(prefix) :])
        name = mapping.channel_name(flat)
        if name is None:
            continue
        if isinstance(value, bool):
            if mapping.booleans == "skip":
                continue
            value = int(value)
        if not _number(value):
            if mapping.non_numeric == "skip":
                continue
            return Rejection("wrong_type", f"channel {flat!r} must be a number, got {type(value).__name__}")
        if not _finite(value):  # type: ignore[arg-type]
            return Rejection("non_finite", f"channel {flat!r} is not finite")
        if name in telemetry.RESERVED:
            return Rejection("wrong_type", f"channel {flat!r} would be named {name!r}, a reserved field: rename it")
        channels[name] = float(value)  # type: ignore[arg-type]
    if not channels:
        return Rejection("missing_field", "no numeric channel in the payload")
    if len(channels) > telemetry.MAX_CHANNELS:
        return Rejection("too_many_fields", f"{len(channels)} channels > limit {telemetry.MAX_CHANNELS}")
    return channels


# ---------------------------------------------------------------------------- for the HiveMQ extension
#: The presets as the HiveMQ ingestion extension reads them (a resource of its jar, generated from PRESETS).
PRESETS_RESOURCE = "bridge/hivemq-extension/src/main/resources/ingest-presets.json"


def presets_json() -> str:
    """Every preset, each field written out: ``python -m streamtrain.ingest_mapping > PRESETS_RESOURCE``."""
    doc = {
        "comment": "Generated from streamtrain.ingest_mapping.PRESETS by `make ingest-presets`; do not edit.",
        "defaults": IngestMapping().model_dump(mode="json"),  # of a mapping file's fields it does not set
        "presets": {name: m.model_dump(mode="json") for name, m in PRESETS.items()},
    }
    return json.dumps(doc, indent=1, ensure_ascii=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(presets_json())
