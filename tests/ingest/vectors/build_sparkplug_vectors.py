"""Writes tests/ingest/vectors/sparkplug.json: sequences of Sparkplug B messages, each applied in order to one
fresh ``streamtrain.sparkplug.SparkplugDecoder``, with what the decoder makes of every message (its raw records,
or the reason it is refused, its events, a rebirth request). Asserted by tests/unit/repo/test_sparkplug_vectors.py
and by the HiveMQ extension's SparkplugDecoderTest (Java), so both decode every payload to the same bytes.
Payloads are encoded by pysparkplug, an independent Sparkplug library, where it can encode them; the wire forms
it does not write (8-bit two's complement, a uint64 past 2**63, no timestamp at all, broken protobuf) come from
our generated classes. Run:
.venv/bin/python -m tests.ingest.vectors.build_sparkplug_vectors tests/ingest/vectors/sparkplug.json"""

from __future__ import annotations

import json
import sys

import pysparkplug as psp

from streamtrain import ingest_mapping as mappings
from streamtrain import telemetry
from streamtrain.sparkplug import SparkplugDecoder
from streamtrain.sparkplug import sparkplug_b_pb2 as pb
from tests.ingest.sparkplug_payloads import DT, T0, by_alias, dbirth, metric, nbirth

ARRIVED = 1_765_015_200.25  # s: the broker's clock
REBIRTH_INTERVAL_S = 30.0
NODE = "spBv1.0/plant-a/{}/edge-1"
DEVICE = "spBv1.0/plant-a/{}/edge-1/motor-3"
SEQUENCES: list[dict] = []


def ddata(seq: int, ms: int = T0 + 1000, rpm=1450.5, temp=61.25, count=-3, more=()) -> bytes:
    """Metrics by alias only, as edge nodes send DATA once the birth has named them (no name, no datatype)."""
    return psp.DData(
        timestamp=ms,
        seq=seq,
        metrics=[
            by_alias(10, DT.DOUBLE, rpm, ms),
            by_alias(11, DT.FLOAT, temp, ms),
            by_alias(12, DT.INT32, count, ms),
            *more,
        ],
    ).encode()


def ndata(seq: int, value=23.75, ms: int | None = T0 + 1000) -> bytes:
    metrics = [psp.Metric(timestamp=None, name=None, datatype=DT.FLOAT, value=value, alias=1)]
    return psp.NData(timestamp=ms, seq=seq, metrics=metrics).encode()


def raw_payload(seq: int | None, timestamp: int | None, *metrics: dict) -> bytes:
    """A payload our generated classes write: for wire forms pysparkplug does not produce."""
    p = pb.Payload()
    if timestamp is not None:
        p.timestamp = timestamp
    if seq is not None:
        p.seq = seq
    for m in metrics:
        p.metrics.add(**m)
    return p.SerializeToString()


def sequence(name: str, messages: list[tuple], **changes) -> None:
    """messages: (topic, payload, arrived) or (topic, payload, arrived, max_bytes); one decoder for all."""
    mapping = mappings.PRESETS["sparkplug-b"]
    if changes:
        mapping = mappings.IngestMapping.model_validate({**mapping.model_dump(), **changes})
    decoder = SparkplugDecoder(mapping, rebirth_interval_s=REBIRTH_INTERVAL_S)
    steps = []
    for topic, payload, arrived, *limit in messages:
        max_bytes = limit[0] if limit else telemetry.MAX_PAYLOAD_BYTES
        out = decoder.apply(topic, payload, arrived, max_bytes=max_bytes)
        step: dict = {"topic": topic, "payload_hex": payload.hex(), "arrived": arrived}
        if limit:
            step["max_bytes"] = max_bytes
        step["message_type"] = out.message_type
        if out.rejection is not None:
            step["reason"], step["detail"] = out.rejection.reason, out.rejection.detail
            step["key"] = out.device_id
        else:
            step["records"] = [{"key": r.device_id, "value": r.to_json().decode()} for r in out.readings]
        step["events"] = [event for event, _ in out.events]
        step["seq_gap"] = out.seq_gap
        if out.rebirth is not None:
            step["rebirth_topic"], step["rebirth_payload_hex"] = out.rebirth[0], out.rebirth[1].hex()
        steps.append(step)
    SEQUENCES.append(
        {
            "name": name,
            "mapping": mapping.model_dump(mode="json"),
            "rebirth_interval_s": REBIRTH_INTERVAL_S,
            "messages": steps,
        }
    )


A = ARRIVED
N, D = NODE.format, DEVICE.format

# ---- births with aliases; data by alias and by name; several timestamps in one DDATA; a device's death
sequence(
    "births, data by alias and by name",
    [
        (N("NBIRTH"), nbirth(seq=0), A),
        (D("DBIRTH"), dbirth(seq=1), A + 0.01),
        (D("DDATA"), ddata(2), A + 1),
        (N("NDATA"), ndata(3, ms=T0 + 1500), A + 1.5),  # the metric's time is the payload's
        (
            D("DDATA"),
            psp.DData(
                timestamp=T0 + 2000,
                seq=4,
                metrics=[
                    metric("Motor/Speed RPM", DT.DOUBLE, 1500.0, timestamp=T0 + 2000),
                    metric("Running", DT.BOOLEAN, True, timestamp=T0 + 2000),
                ],
            ).encode(include_dtypes=True),
            A + 2,
        ),
        (
            D("DDATA"),
            psp.DData(
                timestamp=T0 + 3500,
                seq=5,
                metrics=[
                    by_alias(10, DT.DOUBLE, 1510.0, T0 + 3000),
                    by_alias(11, DT.FLOAT, 62.5, T0 + 3000),
                    by_alias(10, DT.DOUBLE, 1520.0, T0 + 3500),
                    by_alias(10, DT.DOUBLE, 1505.0, T0 + 2500),
                    by_alias(14, DT.STRING, "A-18", T0 + 3500),  # a string: left out (non_numeric skip)
                ],
            ).encode(),
            A + 3.5,
        ),
        (D("DDEATH"), psp.DDeath(timestamp=T0 + 4000, seq=6).encode(), A + 4),
        (D("DDATA"), ddata(7, ms=T0 + 5000), A + 5),  # its birth is gone: unknown alias, a rebirth asked for
        (N("NDATA"), ndata(8, value=24.5, ms=T0 + 6000), A + 6),
    ],
)

# ---- every datatype class: signed and unsigned ints (pysparkplug's encoding and others'), float, double, boolean
TYPES = [
    ("i8", DT.INT8, -5, 20),
    ("i16", DT.INT16, -300, 21),
    ("i32", DT.INT32, -70000, 22),
    ("i64", DT.INT64, -(2**40), 23),
    ("u8", DT.UINT8, 250, 24),
    ("u16", DT.UINT16, 65000, 25),
    ("u32", DT.UINT32, 4_000_000_000, 26),
    ("u64", DT.UINT64, 2**63 + 2**12, 27),
    ("f32", DT.FLOAT, 0.1, 28),
    ("f64", DT.DOUBLE, 1e-300, 29),
    ("on", DT.BOOLEAN, True, 30),
    ("label", DT.STRING, "left out", 31),
]
D_TYPES = psp.DBirth(timestamp=T0, seq=1, metrics=[metric(n, dt, v, alias=a) for n, dt, v, a in TYPES]).encode()
PB_TYPE = pb.DataType
sequence(
    "every datatype",
    [
        (N("NBIRTH"), nbirth(seq=0), A),
        (D("DBIRTH"), D_TYPES, A),
        (
            D("DDATA"),
            psp.DData(timestamp=T0 + 1000, seq=2, metrics=[by_alias(a, dt, v) for _, dt, v, a in TYPES]).encode(),
            A + 1,
        ),
        (
            D("DDATA"),
            raw_payload(  # two's complement in the type's own width, in the other field, and unsigned extremes
                3,
                T0 + 2000,
                {"alias": 20, "int_value": 0xFB},
                {"alias": 21, "long_value": 2**64 - 2},
                {"alias": 22, "long_value": 2**32 - 7},
                {"alias": 23, "int_value": 2**32 - 1},
                {"alias": 24, "int_value": 255},
                {"alias": 27, "long_value": 2**64 - 1},
                {"alias": 26, "long_value": 2**53 + 1},
                {"alias": 28, "double_value": 2.5},
                {"alias": 29, "float_value": 0.1},
                {"alias": 30, "boolean_value": False},
                {"alias": 31, "is_null": True},
            ),
            A + 2,
        ),
        (D("DDATA"), raw_payload(4, T0 + 3000, {"alias": 20, "double_value": 1.0}), A + 3),  # Int8 sent as a double
        (D("DDATA"), raw_payload(5, T0 + 4000, {"alias": 28, "int_value": 1}), A + 4),  # Float sent as an int
        (
            D("DDATA"),
            raw_payload(6, T0 + 5000, {"name": "blob", "datatype": PB_TYPE.Bytes, "bytes_value": b"\x01"}),
            A + 5,
        ),
        (
            D("DDATA"),
            raw_payload(7, T0 + 6000, {"name": "odd", "datatype": 99, "int_value": 1}, {"alias": 24, "int_value": 1}),
            A + 6,
        ),
    ],
)
sequence(
    "booleans skipped, non-numeric refused",
    [
        (N("NBIRTH"), nbirth(seq=0), A),
        (D("DBIRTH"), D_TYPES, A),
        (
            D("DDATA"),
            raw_payload(2, T0 + 1000, {"alias": 30, "boolean_value": True}, {"alias": 24, "int_value": 3}),
            A + 1,
        ),
        (D("DDATA"), raw_payload(3, T0 + 2000, {"alias": 31, "string_value": "x"}), A + 2),
    ],
    booleans="skip",
    non_numeric="refuse",
)

# ---- seq: wrap after 255, gaps (each asks for the births again, at most once per interval), a birth answering
sequence(
    "seq gap and wrap",
    [
        (N("NBIRTH"), nbirth(seq=254), A),
        (N("NDATA"), ndata(255), A + 1),
        (N("NDATA"), ndata(0, ms=T0 + 2000), A + 2),  # 255 -> 0: no gap
        (N("NDATA"), ndata(2, ms=T0 + 3000), A + 3),  # gap: a rebirth request
        (N("NDATA"), ndata(7, ms=T0 + 4000), A + 4),  # gap within the interval: no request
        (N("NDATA"), raw_payload(None, T0 + 4500, {"alias": 1, "float_value": 1.5}), A + 4.5),  # no seq at all
        (N("NBIRTH"), nbirth(seq=0, bd_seq=8), A + 5),  # the answer: no new interval
        (N("NDATA"), ndata(3, ms=T0 + 6000), A + 6),  # gap, still within the first interval
        (N("NDATA"), ndata(9, ms=T0 + 40000), A + 40),  # gap after the interval: a request
        (N("NDATA"), ndata(10, ms=T0 + 41000), A + 41),
    ],
)

# ---- deaths: an NDEATH of an older session (stale bdSeq) leaves the node; the current one forgets it
sequence(
    "NDEATH with current and stale bdSeq",
    [
        (N("NBIRTH"), nbirth(seq=0, bd_seq=3), A),
        (N("NDEATH"), psp.NDeath(timestamp=T0 + 500, bd_seq_metric=metric("bdSeq", DT.INT64, 2)).encode(), A + 0.5),
        (N("NDATA"), ndata(1), A + 1),
        (N("NDEATH"), psp.NDeath(timestamp=T0 + 1500, bd_seq_metric=metric("bdSeq", DT.INT64, 3)).encode(), A + 1.5),
        (N("NDATA"), ndata(2, ms=T0 + 2000), A + 2),  # no birth any more: the datatype is unknown, a rebirth asked
        (N("NDEATH"), psp.NDeath(timestamp=T0 + 2500, bd_seq_metric=metric("bdSeq", DT.INT64, 9)).encode(), A + 2.5),
    ],
)

# ---- data before any birth
sequence(
    "DDATA before any birth",
    [
        (D("DDATA"), ddata(5), A),  # aliases only: unknown, a rebirth request
        (
            D("DDATA"),
            psp.DData(
                timestamp=T0 + 2000, seq=6, metrics=[metric("Motor/Speed RPM", DT.DOUBLE, 1.0, timestamp=T0 + 2000)]
            ).encode(include_dtypes=True),
            A + 1,
        ),  # named and typed: a reading all the same; no second request within the interval
        (D("DBIRTH"), dbirth(seq=7), A + 2),
        (D("DDATA"), ddata(8, ms=T0 + 3000), A + 3),  # still no NBIRTH: the device's birth gives the aliases
    ],
)

# ---- topics
sequence(
    "bad topic levels",
    [
        ("spBv1.0/plant-a/DDATA/edge-1", ddata(0), A),  # a device type without a device level
        ("spBv1.0/plant-a/NDATA/edge-1/motor-3", ndata(0), A),  # a node type with one
        ("spBv1.0/plant-a/XDATA/edge-1", ndata(0), A),
        ("spBv1.0//NDATA/edge-1", ndata(0), A),  # an empty level: no pattern matches
        ("spBv1.0/plant-a/NDATA/edge 1!", ndata(0), A),  # not a device id
        ("spBv1.0/plant-a/DDATA/edge-1/" + "m" * 70, ddata(0), A),  # a device id too long
        ("spBv1.0/STATE/host-1/x", b"ONLINE", A),  # a host application's state: ignored
        (N("NCMD"), psp.NCmd(timestamp=T0, metrics=[metric("Node Control/Rebirth", DT.BOOLEAN, True)]).encode(), A),
        ("spBv2.0/plant-a/NDATA/edge-1", ndata(0), A),
    ],
)

# ---- payloads refused
sequence(
    "malformed, oversized, NaN and other refused payloads",
    [
        (N("NBIRTH"), nbirth(seq=0, more=[metric("seq", DT.DOUBLE, 0.0, alias=2)]), A),
        (N("NDATA"), b"\xff\xff\xff", A + 0.1),  # malformed protobuf
        (N("NDATA"), ndata(1)[:-3], A + 0.2),  # cut short
        (N("NDATA"), b"\x08", A + 0.3),  # a field without its value
        (N("NDATA"), ndata(1), A + 0.4, 16),  # oversized
        (N("NDATA"), raw_payload(1, T0 + 1000, {"alias": 1, "float_value": float("nan")}), A + 1),
        (
            N("NDATA"),
            raw_payload(2, T0 + 2000, {"name": "x", "datatype": PB_TYPE.Double, "double_value": float("-inf")}),
            A + 2,
        ),
        (N("NDATA"), raw_payload(3, None, {"alias": 1, "float_value": 1.0}), A + 3),  # no timestamp at all
        (N("NDATA"), raw_payload(4, 2**43 + 1, {"alias": 1, "float_value": 1.0}), A + 4),  # past the year 2248
        (N("NDATA"), raw_payload(5, T0 + 5000, {"alias": 2, "double_value": 1.0}), A + 5),  # a reserved name
        (N("NDATA"), raw_payload(6, T0 + 6000, {"alias": 99, "float_value": 1.0}), A + 6),  # an unknown alias
        (N("NDATA"), raw_payload(7, T0 + 7000, {"float_value": 1.0}), A + 7),  # neither name nor alias
        (N("NDATA"), raw_payload(8, T0 + 8000, {"name": "x", "float_value": 1.0}), A + 8),  # no datatype anywhere
        (N("NDATA"), raw_payload(9, T0 + 9000), A + 9),  # no metric
        (
            N("NDATA"),
            raw_payload(
                10, T0 + 10000, *({"name": f"c{i}", "datatype": PB_TYPE.Int32, "int_value": i} for i in range(70))
            ),
            A + 10,
        ),
        (N("NDATA"), b"", A + 11),  # an empty payload: a payload without metrics
    ],
)

doc = {
    "about": "Sparkplug B messages applied in order to one SparkplugDecoder per sequence; written by "
    "tests/ingest/vectors/build_sparkplug_vectors.py from the Python decoder, replayed by "
    "tests/unit/repo/test_sparkplug_vectors.py and the extension's SparkplugDecoderTest",
    "sequences": SEQUENCES,
}


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=True)
        f.write("\n")
    steps = [s for q in SEQUENCES for s in q["messages"]]
    print(len(SEQUENCES), "sequences", len(steps), "messages", sum(len(s.get("records", ())) for s in steps), "records")
