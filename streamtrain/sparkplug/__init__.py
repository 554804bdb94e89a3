"""Sparkplug B at the front door: edge nodes' protobuf payloads as readings, with the birth state they need.

A Sparkplug B edge node publishes on ``spBv1.0/<group>/<type>/<edge node>[/<device>]``: an NBIRTH (its own
metrics, each with a name, a datatype and maybe an alias, and ``bdSeq``), a DBIRTH per device, then NDATA and
DDATA whose metrics may carry only the alias, and NDEATH / DDEATH when it or a device goes away. Every message of
an edge node but NDEATH carries ``seq``, 0-255, one more than the last (wrapping after 255).

``SparkplugDecoder`` keeps, per edge node, the last births it saw and the last seq, and turns each message into an
``Outcome``: the readings of a DATA message (one per device and millisecond timestamp, ``seq`` that timestamp in
ms, as for every device that sends no seq of its own), or the reason it is refused, plus the events to log and
whether to ask the edge node for its births again (an NCMD ``Node Control/Rebirth``, as the specification tells a
host application that misses a birth or sees a seq gap). The payloads are decoded by protobuf with classes
generated from ``sparkplug_b.proto`` beside this module (``make sparkplug-proto``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from streamtrain import telemetry
from streamtrain.ingest_mapping import IngestMapping
from streamtrain.sparkplug import sparkplug_b_pb2 as pb
from streamtrain.telemetry import Reading, Rejection

NAMESPACE = "spBv1.0"
#: Message types with a device level in their topic, and those without.
DEVICE_TYPES = ("DBIRTH", "DDATA", "DDEATH", "DCMD")
NODE_TYPES = ("NBIRTH", "NDATA", "NDEATH", "NCMD")
MESSAGE_TYPES = (*NODE_TYPES, *DEVICE_TYPES)
#: Dead-letter reasons of Sparkplug B beside telemetry.REASONS.
REASONS = ("malformed_protobuf", "unknown_alias")
#: The metric a host application sets in an NCMD to ask an edge node for its births again.
REBIRTH_METRIC = "Node Control/Rebirth"
BD_SEQ_METRIC = "bdSeq"
SEQ_MODULO = 256
#: A ms timestamp past this (the year 2248) is no time a device keeps; below it, its seconds as a float give the
#: same ms back, so the seq derived from it is the reading's timestamp (ingest_mapping.is_timestamp_seq).
MAX_TIMESTAMP_MS = 2**43

D = pb.DataType
_SIGNED_BITS = {D.Int8: 8, D.Int16: 16, D.Int32: 32, D.Int64: 64}
_INTEGERS = {D.Int8, D.Int16, D.Int32, D.Int64, D.UInt8, D.UInt16, D.UInt32, D.UInt64}
_FLOATS = {D.Float, D.Double}


@dataclass(frozen=True)
class Topic:
    group: str
    message_type: str
    edge_node: str
    device: str | None

    @property
    def node(self) -> tuple[str, str]:
        return self.group, self.edge_node

    @property
    def device_id(self) -> str:
        """The reading's device id: ``group:edge node[:device]`` (':' is allowed in device ids, '/' is not)."""
        parts = (self.group, self.edge_node) if self.device is None else (self.group, self.edge_node, self.device)
        return ":".join(parts)

    @property
    def name(self) -> str:
        return "/".join(p for p in (self.group, self.edge_node, self.device) if p is not None)


def parse_topic(topic: str) -> Topic | Rejection:
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or not all(parts):
        return Rejection("bad_topic", f"topic {topic!r} is not {NAMESPACE}/<group>/<type>/<edge node>[/<device>]")
    kind = parts[2]
    if kind not in MESSAGE_TYPES:
        return Rejection("bad_topic", f"topic {topic!r}: {kind!r} is not a Sparkplug B message type")
    if (len(parts) == 5) != (kind in DEVICE_TYPES):
        return Rejection(
            "bad_topic", f"topic {topic!r}: {kind} takes {'a' if kind in DEVICE_TYPES else 'no'} device level"
        )
    return Topic(parts[1], kind, parts[3], parts[4] if len(parts) == 5 else None)


def rebirth_request(group: str, edge_node: str, now_ms: int) -> tuple[str, bytes]:
    """The NCMD topic and payload asking an edge node to publish its NBIRTH and DBIRTHs again."""
    payload = pb.Payload(timestamp=now_ms)
    payload.metrics.add(name=REBIRTH_METRIC, datatype=D.Boolean, boolean_value=True)
    return f"{NAMESPACE}/{group}/NCMD/{edge_node}", payload.SerializeToString()


@dataclass
class _Birth:
    """What a birth certificate defines: aliases -> names, names -> datatypes."""

    names: dict[int, str] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, payload: pb.Payload) -> "_Birth":
        birth = cls()
        for m in payload.metrics:
            if not m.HasField("name"):
                continue
            if m.HasField("alias"):
                birth.names[m.alias] = m.name
            if m.HasField("datatype"):
                birth.types[m.name] = m.datatype
        return birth


@dataclass
class _EdgeNode:
    bd_seq: int | None = None
    seq: int | None = None
    birth: _Birth | None = None  # None until its NBIRTH is seen
    devices: dict[str, _Birth] = field(default_factory=dict)
    rebirth_requested: float = -math.inf


@dataclass
class Outcome:
    """What one MQTT message is: readings, or a refusal; the events to log; a rebirth to request."""

    topic: Topic | None = None
    readings: list[Reading] = field(default_factory=list)
    rejection: Rejection | None = None
    #: (event, fields) for the log: births, deaths, seq gaps, data before a birth, commands ignored.
    events: list[tuple[str, dict]] = field(default_factory=list)
    #: (NCMD topic, payload) to publish when the edge node should send its births again.
    rebirth: tuple[str, bytes] | None = None
    seq_gap: bool = False

    @property
    def message_type(self) -> str:
        if self.topic is not None:
            return self.topic.message_type
        return "STATE" if self.rejection is None else "invalid"

    @property
    def device_id(self) -> str | None:
        if self.topic is None:
            return None
        device = self.topic.device_id
        return device if telemetry.valid_device_id(device) else None


class SparkplugDecoder:
    """Births, seqs and rebirth requests per edge node; one ``apply`` per MQTT message, in arrival order."""

    def __init__(self, mapping: IngestMapping, *, rebirth_interval_s: float = 30.0, max_nodes: int = 100_000) -> None:
        self.mapping = mapping
        self.rebirth_interval_s = rebirth_interval_s
        self.max_nodes = max_nodes
        self.nodes: OrderedDict[tuple[str, str], _EdgeNode] = OrderedDict()

    def apply(
        self,
        topic: str,
        payload: bytes,
        arrived: float,
        *,
        max_bytes: int = telemetry.MAX_PAYLOAD_BYTES,
        known_devices: frozenset[str] | None = None,
    ) -> Outcome:
        """Never raises on bad input: every refusal is an ``Outcome.rejection`` with a reason."""
        if topic.startswith(f"{NAMESPACE}/STATE/"):  # a host application's own state (retained), no device's
            return Outcome(events=[("sparkplug_host_state_ignored", {"topic": topic})])
        if self.mapping.match_topic(topic) is None:
            return Outcome(
                rejection=Rejection(
                    "bad_topic",
                    f"topic {topic!r} matches no pattern of mapping {self.mapping.name} ({self.mapping.topics})",
                )
            )
        parsed = parse_topic(topic)
        if isinstance(parsed, Rejection):
            return Outcome(rejection=parsed)
        out = Outcome(topic=parsed)
        if len(payload) > max_bytes:
            out.rejection = Rejection("oversized", f"{len(payload)} bytes > limit {max_bytes}")
            return out
        if parsed.message_type in ("NCMD", "DCMD"):
            out.events.append(("sparkplug_command_ignored", {"topic": topic}))  # to the edge node, not from it
            return out
        if not telemetry.valid_device_id(parsed.device_id):
            out.rejection = Rejection(
                "bad_topic",
                f"device id {parsed.device_id[:80]!r} (group:edge node[:device]) is not 1-64 characters [A-Za-z0-9_.:-]",
            )
            return out
        try:
            message = pb.Payload.FromString(payload)
        except DecodeError as exc:
            out.rejection = Rejection("malformed_protobuf", f"not a Sparkplug B payload: {exc}"[:200])
            return out
        node = self.nodes.get(parsed.node)
        if node is not None:
            self.nodes.move_to_end(parsed.node)
        kind = parsed.message_type
        if kind == "NBIRTH":
            self._nbirth(out, message, arrived)
        elif kind == "NDEATH":
            self._ndeath(out, node, message)
        else:
            self._check_seq(out, node, message, arrived)
            node = self.nodes.get(parsed.node)  # asking for a rebirth may have started its state
            if kind == "DBIRTH":
                if node is None:
                    node = self._node(parsed.node)
                node.devices[parsed.device] = _Birth.of(message)
                out.events.append(("sparkplug_birth", {"device": parsed.device_id, "metrics": len(message.metrics)}))
            elif kind == "DDEATH":
                if node is not None:
                    node.devices.pop(parsed.device, None)
                out.events.append(("sparkplug_death", {"device": parsed.device_id}))
            else:
                self._data(out, node, message, arrived, known_devices)
        return out

    # ------------------------------------------------------------------ state
    def _node(self, key: tuple[str, str]) -> _EdgeNode:
        node = self.nodes[key] = _EdgeNode()
        if len(self.nodes) > self.max_nodes:
            self.nodes.popitem(last=False)
        return node

    def _request_rebirth(self, out: Outcome, node: _EdgeNode | None, arrived: float, why: str) -> None:
        assert out.topic is not None
        if node is None:
            node = self._node(out.topic.node)
        if not self.rebirth_interval_s or arrived - node.rebirth_requested < self.rebirth_interval_s:
            return
        node.rebirth_requested = arrived
        out.rebirth = rebirth_request(out.topic.group, out.topic.edge_node, int(arrived * 1000))
        out.events.append(("sparkplug_rebirth_requested", {"node": ":".join(out.topic.node), "why": why}))

    def _nbirth(self, out: Outcome, message: pb.Payload, arrived: float) -> None:
        assert out.topic is not None
        last = self.nodes.get(out.topic.node)
        node = self._node(out.topic.node)  # a new session: the device births of the last one are gone
        if last is not None:
            node.rebirth_requested = last.rebirth_requested  # a birth answering a request opens no new interval
        node.birth = _Birth.of(message)
        node.seq = message.seq if message.HasField("seq") else None
        for m in message.metrics:
            if m.name == BD_SEQ_METRIC and m.WhichOneof("value") in ("int_value", "long_value"):
                node.bd_seq = getattr(m, m.WhichOneof("value"))
        out.events.append(
            ("sparkplug_birth", {"node": out.topic.device_id, "bd_seq": node.bd_seq, "metrics": len(message.metrics)})
        )

    def _ndeath(self, out: Outcome, node: _EdgeNode | None, message: pb.Payload) -> None:
        assert out.topic is not None
        bd_seq = None
        for m in message.metrics:
            if m.name == BD_SEQ_METRIC and m.WhichOneof("value") in ("int_value", "long_value"):
                bd_seq = getattr(m, m.WhichOneof("value"))
        # An NDEATH is the broker's will of a session: one whose bdSeq is not the current birth's is an old one's.
        current = node is not None and (node.bd_seq is None or bd_seq is None or bd_seq == node.bd_seq)
        if current:
            del self.nodes[out.topic.node]
        out.events.append(("sparkplug_death", {"node": out.topic.device_id, "bd_seq": bd_seq, "current": current}))

    def _check_seq(self, out: Outcome, node: _EdgeNode | None, message: pb.Payload, arrived: float) -> None:
        assert out.topic is not None
        seq = message.seq if message.HasField("seq") else None
        if node is None or node.birth is None:
            out.events.append(
                ("sparkplug_no_birth", {"node": ":".join(out.topic.node), "type": out.topic.message_type})
            )
            self._request_rebirth(out, node, arrived, "no NBIRTH seen")
            if node is not None:
                node.seq = seq
            return
        if node.seq is not None:
            expected = (node.seq + 1) % SEQ_MODULO
            if seq != expected:
                out.seq_gap = True
                out.events.append(
                    (
                        "sparkplug_seq_gap",
                        {
                            "node": ":".join(out.topic.node),
                            "expected": expected,
                            "got": seq,
                            "type": out.topic.message_type,
                        },
                    )
                )
                self._request_rebirth(out, node, arrived, f"seq {seq} after {node.seq}")
        node.seq = seq

    # ------------------------------------------------------------------ data
    def _data(
        self,
        out: Outcome,
        node: _EdgeNode | None,
        message: pb.Payload,
        arrived: float,
        known_devices: frozenset[str] | None,
    ) -> None:
        assert out.topic is not None
        topic = out.topic
        device = topic.device_id
        if known_devices is not None and device not in known_devices:
            out.rejection = Rejection("unknown_device", f"device {device!r} is not registered")
            return
        birth = None if node is None else (node.birth if topic.device is None else node.devices.get(topic.device))
        by_ts: dict[int, dict[str, float]] = {}
        for m in message.metrics:
            if m.HasField("name"):
                name = m.name
            elif m.HasField("alias") and birth is not None and m.alias in birth.names:
                name = birth.names[m.alias]
            else:
                what = f"alias {m.alias}" if m.HasField("alias") else "a metric with neither name nor alias"
                out.rejection = Rejection(
                    "unknown_alias",
                    f"{what}: no {'NBIRTH' if topic.device is None else 'DBIRTH'} of {topic.name} seen defines it",
                )
                self._request_rebirth(out, node, arrived, "unknown alias")
                return
            if m.HasField("timestamp"):
                ts_ms = m.timestamp
            elif message.HasField("timestamp"):
                ts_ms = message.timestamp
            else:
                out.rejection = Rejection("missing_field", f"metric {name!r}: no timestamp, nor one for the payload")
                return
            if ts_ms > MAX_TIMESTAMP_MS:
                out.rejection = Rejection("wrong_type", f"metric {name!r}: timestamp {ts_ms} ms is past the year 2248")
                return
            if m.is_null or m.WhichOneof("value") is None:
                continue
            datatype = m.datatype if m.HasField("datatype") else (birth.types.get(name) if birth else None)
            if datatype is None:
                out.rejection = Rejection(
                    "wrong_type", f"metric {name!r} has no datatype, and no birth certificate seen gives one"
                )
                self._request_rebirth(out, node, arrived, "metric without datatype")
                return
            value = _number(m, datatype, self.mapping)
            if isinstance(value, Rejection):
                out.rejection = value
                return
            if value is None:
                continue
            channel = self.mapping.channel_name(name)
            if channel is None:
                continue
            if not math.isfinite(value):
                out.rejection = Rejection("non_finite", f"metric {name!r} is not finite")
                return
            if channel in telemetry.RESERVED:
                out.rejection = Rejection(
                    "wrong_type", f"metric {name!r} would be named {channel!r}, a reserved field: rename it"
                )
                return
            by_ts.setdefault(ts_ms, {})[channel] = value
        if not by_ts:
            out.rejection = Rejection("missing_field", "no numeric metric in the payload")
            return
        for ts_ms, channels in sorted(by_ts.items()):
            if len(channels) > telemetry.MAX_CHANNELS:
                out.readings.clear()
                out.rejection = Rejection(
                    "too_many_fields", f"{len(channels)} channels > limit {telemetry.MAX_CHANNELS}"
                )
                return
            out.readings.append(Reading(device, ts_ms / 1000.0, ts_ms, channels))


def _number(m: pb.Payload.Metric, datatype: int, mapping: IngestMapping) -> float | None | Rejection:
    """The metric's value as a channel; None when it is left out (not a number and non_numeric is skip)."""
    field_name = m.WhichOneof("value")
    if datatype in _INTEGERS:
        if field_name not in ("int_value", "long_value"):
            return Rejection("wrong_type", f"metric {m.name or m.alias!r}: {D.Name(datatype)} sent as {field_name}")
        raw = getattr(m, field_name)
        bits = _SIGNED_BITS.get(datatype)  # type: ignore[call-overload]
        if bits is not None:
            # Two's complement: Tahu sign-extends into the 32/64-bit field, others use the type's own width.
            width = 32 if field_name == "int_value" else 64
            if raw >= 1 << (width - 1):
                raw -= 1 << width
            elif raw >= 1 << (bits - 1) and raw < 1 << bits:
                raw -= 1 << bits
        return float(raw)
    if datatype in _FLOATS:
        if field_name not in ("float_value", "double_value"):
            return Rejection("wrong_type", f"metric {m.name or m.alias!r}: {D.Name(datatype)} sent as {field_name}")
        return float(getattr(m, field_name))
    if datatype == D.Boolean and field_name == "boolean_value":
        return None if mapping.booleans == "skip" else float(m.boolean_value)
    if mapping.non_numeric == "skip":
        return None
    kind = D.Name(datatype) if datatype in D.values() else f"datatype {datatype}"
    return Rejection("wrong_type", f"metric {m.name or m.alias!r} is {kind}, not a number")
