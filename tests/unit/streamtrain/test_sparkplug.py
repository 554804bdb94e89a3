"""Sparkplug B decoding on payloads built by an independent Sparkplug library (pysparkplug's encoder)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pysparkplug as psp
import pytest
from google.protobuf.descriptor import Descriptor
from hypothesis import given, settings
from hypothesis import strategies as st
from pysparkplug import _protobuf as psp_pb

from streamtrain import ingest_mapping as mappings
from streamtrain import telemetry
from streamtrain.sparkplug import SparkplugDecoder, parse_topic, rebirth_request
from streamtrain.sparkplug import sparkplug_b_pb2 as pb
from streamtrain.telemetry import Rejection
from tests.ingest.sparkplug_payloads import DT, T0, dbirth, metric, nbirth

REPO = Path(__file__).resolve().parents[3]
PROTO = "streamtrain/sparkplug/sparkplug_b.proto"


def ddata(seq, ms=T0 + 1000, rpm=1450.5, temp=61.25, count=-3, **extra):
    """Metrics by alias only, as edge nodes send DATA once the birth has named them (no name, no datatype)."""
    metrics = [
        psp.Metric(timestamp=ms, name=None, datatype=DT.DOUBLE, value=rpm, alias=10),
        psp.Metric(timestamp=ms, name=None, datatype=DT.FLOAT, value=temp, alias=11),
        psp.Metric(timestamp=ms, name=None, datatype=DT.INT32, value=count, alias=12),
        *extra.get("more", []),
    ]
    return psp.DData(timestamp=ms, seq=seq, metrics=metrics).encode()


NODE = "spBv1.0/plant-a/{}/edge-1"
DEVICE = "spBv1.0/plant-a/{}/edge-1/motor-3"


def decoder(**changes) -> SparkplugDecoder:
    mapping = mappings.PRESETS["sparkplug-b"]
    if changes:
        mapping = mappings.IngestMapping.model_validate({**mapping.model_dump(), **changes})
    return SparkplugDecoder(mapping, rebirth_interval_s=30.0)


def born(**changes) -> SparkplugDecoder:
    d = decoder(**changes)
    assert d.apply(NODE.format("NBIRTH"), nbirth(), 1.0).rejection is None
    assert d.apply(DEVICE.format("DBIRTH"), dbirth(), 1.0).rejection is None
    return d


# ---------------------------------------------------------------- the schema
def _fields(desc: Descriptor, seen: set[str] | None = None) -> dict:
    """Every field of a message and its nested ones: number, type, label (the wire format), by path."""
    seen = set() if seen is None else seen
    out: dict = {}
    if desc.name in seen:
        return out
    seen.add(desc.name)
    for f in desc.fields:
        out[f"{desc.name}.{f.name}"] = (f.number, f.type, f.label)
    for nested in desc.nested_types:
        out.update({f"{desc.name}.{k}": v for k, v in _fields(nested, seen).items()})
    return out


def test_our_schema_has_the_wire_format_of_an_independent_sparkplug_library():
    ours, theirs = _fields(pb.Payload.DESCRIPTOR), _fields(psp_pb.Payload.DESCRIPTOR)
    assert ours == theirs
    assert len(ours) > 60
    assert {v.name: v.number for v in pb.DataType.DESCRIPTOR.values} == {
        v.name: v.number for v in psp_pb.DataType.DESCRIPTOR.values
    }


def test_generated_module_is_what_protoc_makes_of_the_proto(tmp_path):
    """Regenerate with the pinned protoc (make sparkplug-proto) when this fails."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            PROTO,
        ],
        check=True,
        cwd=REPO,
    )
    for suffix in ("_pb2.py", "_pb2.pyi"):
        generated = (tmp_path / PROTO.replace(".proto", suffix)).read_text()
        assert generated == (REPO / PROTO.replace(".proto", suffix)).read_text(), f"run make sparkplug-proto ({suffix})"


# ---------------------------------------------------------------- readings
def test_ddata_with_aliases_after_births_is_one_reading_of_the_device():
    d = born()
    out = d.apply(DEVICE.format("DDATA"), ddata(seq=2), 2.0)
    assert out.rejection is None and not out.seq_gap and out.rebirth is None
    [reading] = out.readings
    assert reading.device_id == "plant-a:edge-1:motor-3"
    assert reading.ts == (T0 + 1000) / 1000 and reading.seq == T0 + 1000
    assert reading.channels == {"motor_speed_rpm": 1450.5, "motor_temperature": 61.25, "inputs_count": -3.0}


def test_metrics_with_their_own_timestamps_make_one_reading_per_timestamp():
    d = born()
    payload = psp.DData(
        timestamp=T0 + 5000,
        seq=2,
        metrics=[
            psp.Metric(timestamp=T0 + 3000, name=None, datatype=DT.DOUBLE, value=1.0, alias=10),
            psp.Metric(timestamp=T0 + 4000, name=None, datatype=DT.DOUBLE, value=2.0, alias=10),
            psp.Metric(timestamp=T0 + 4000, name="Motor/Temperature", datatype=DT.FLOAT, value=3.0),
        ],
    ).encode()
    out = d.apply(DEVICE.format("DDATA"), payload, 2.0)
    assert [(r.seq, r.channels) for r in out.readings] == [
        (T0 + 3000, {"motor_speed_rpm": 1.0}),
        (T0 + 4000, {"motor_speed_rpm": 2.0, "motor_temperature": 3.0}),
    ]


def test_ndata_is_a_reading_of_the_edge_node_itself():
    d = born()
    payload = psp.NData(
        timestamp=T0 + 1, seq=2, metrics=[psp.Metric(timestamp=None, name=None, datatype=DT.FLOAT, value=23.5, alias=1)]
    ).encode()
    [reading] = d.apply(NODE.format("NDATA"), payload, 2.0).readings
    assert (reading.device_id, reading.ts, reading.channels) == (
        "plant-a:edge-1",
        (T0 + 1) / 1000,
        {"supply_voltage": 23.5},
    )


@pytest.mark.parametrize(
    ("datatype", "value", "field", "raw"),
    [
        (DT.INT8, -5, "int_value", 251),  # the type's own width (pysparkplug)
        (DT.INT8, -5, "int_value", 2**32 - 5),  # sign-extended into the field (Tahu)
        (DT.INT16, -300, "int_value", 2**32 - 300),
        (DT.INT32, -70000, "int_value", 2**32 - 70000),
        (DT.INT64, -(2**40), "long_value", 2**64 - 2**40),
        (DT.UINT32, 4_000_000_000, "int_value", 4_000_000_000),
        (DT.UINT64, 2**40, "long_value", 2**40),
        (DT.INT16, 300, "int_value", 300),
    ],
)
def test_integers_keep_their_sign(datatype, value, field, raw):
    d = decoder()
    payload = pb.Payload(timestamp=T0, seq=0)
    m = payload.metrics.add(name="x", datatype=int(datatype))
    setattr(m, field, raw)
    [reading] = d.apply(NODE.format("NDATA"), payload.SerializeToString(), 1.0).readings
    assert reading.channels == {"x": float(value)}


def test_strings_are_left_out_and_a_payload_of_nothing_else_is_refused():
    d = born()
    text = psp.Metric(timestamp=T0 + 1000, name=None, datatype=DT.STRING, value="B-9", alias=14)
    out = d.apply(DEVICE.format("DDATA"), ddata(seq=2, more=[text]), 2.0)
    assert out.rejection is None and "properties_serial" not in out.readings[0].channels
    only = psp.DData(timestamp=T0 + 2000, seq=3, metrics=[text]).encode()
    assert d.apply(DEVICE.format("DDATA"), only, 2.0).rejection.reason == "missing_field"

    strict = born(non_numeric="refuse", exclude=[])
    out = strict.apply(DEVICE.format("DDATA"), ddata(seq=2, more=[text]), 2.0)
    assert out.rejection == Rejection("wrong_type", "metric 14 is String, not a number")


def test_a_dataset_metric_is_not_a_number():
    d = decoder(non_numeric="refuse")
    payload = pb.Payload(timestamp=T0, seq=0)
    m = payload.metrics.add(name="table", datatype=pb.DataSet)
    m.dataset_value.num_of_columns = 1
    out = d.apply(NODE.format("NDATA"), payload.SerializeToString(), 1.0)
    assert out.rejection.reason == "wrong_type" and "DataSet" in out.rejection.detail


def test_booleans_are_numbers_unless_the_mapping_skips_them():
    payload = pb.Payload(timestamp=T0, seq=0)
    payload.metrics.add(name="Running", datatype=pb.Boolean, boolean_value=True)
    payload.metrics.add(name="Speed", datatype=pb.Double, double_value=1.5)
    [r] = decoder().apply(NODE.format("NDATA"), payload.SerializeToString(), 1.0).readings
    assert r.channels == {"running": 1.0, "speed": 1.5}
    [r] = decoder(booleans="skip").apply(NODE.format("NDATA"), payload.SerializeToString(), 1.0).readings
    assert r.channels == {"speed": 1.5}


# ---------------------------------------------------------------- births, seqs, deaths
def test_data_before_its_birth_is_refused_and_a_rebirth_requested_once_per_interval():
    d = decoder()
    out = d.apply(DEVICE.format("DDATA"), ddata(seq=5), 100.0)
    assert out.rejection.reason == "unknown_alias" and "alias 10" in out.rejection.detail
    assert ("sparkplug_no_birth", {"node": "plant-a:edge-1", "type": "DDATA"}) in out.events
    topic, payload = out.rebirth
    assert topic == "spBv1.0/plant-a/NCMD/edge-1"
    [command] = psp.NCmd.decode(payload).metrics
    assert (command.name, command.datatype, command.value) == ("Node Control/Rebirth", DT.BOOLEAN, True)
    assert d.apply(DEVICE.format("DDATA"), ddata(seq=6), 110.0).rebirth is None
    assert d.apply(DEVICE.format("DDATA"), ddata(seq=7), 131.0).rebirth is not None


def test_names_without_datatype_need_a_birth_but_names_with_one_do_not():
    d = decoder()
    typed = pb.Payload(timestamp=T0, seq=3)
    typed.metrics.add(name="Flow", datatype=pb.Float, float_value=2.5)
    assert d.apply(NODE.format("NDATA"), typed.SerializeToString(), 1.0).readings[0].channels == {"flow": 2.5}
    untyped = pb.Payload(timestamp=T0, seq=4)
    untyped.metrics.add(name="Flow", int_value=3)
    assert d.apply(NODE.format("NDATA"), untyped.SerializeToString(), 1.0).rejection.reason == "wrong_type"


def test_a_seq_gap_is_reported_and_asks_for_a_rebirth_but_the_data_is_kept():
    d = born()
    out = d.apply(DEVICE.format("DDATA"), ddata(seq=4), 2.0)
    assert out.seq_gap and out.readings and out.rebirth is not None
    assert ("sparkplug_seq_gap", {"node": "plant-a:edge-1", "expected": 2, "got": 4, "type": "DDATA"}) in out.events
    assert not d.apply(DEVICE.format("DDATA"), ddata(seq=5, ms=T0 + 2000), 3.0).seq_gap


def test_seq_wraps_after_255():
    d = decoder()
    d.apply(NODE.format("NBIRTH"), nbirth(seq=254), 1.0)
    d.apply(DEVICE.format("DBIRTH"), dbirth(seq=255), 1.0)
    for i, seq in enumerate((0, 1)):
        out = d.apply(DEVICE.format("DDATA"), ddata(seq=seq, ms=T0 + i), 1.0)
        assert not out.seq_gap and out.readings, out.events


def test_ndeath_of_the_current_session_forgets_the_births_and_an_old_one_does_not():
    d = born()
    old = psp.NDeath(timestamp=None, bd_seq_metric=metric("bdSeq", DT.INT64, 6)).encode()
    out = d.apply(NODE.format("NDEATH"), old, 2.0)
    assert out.events == [("sparkplug_death", {"node": "plant-a:edge-1", "bd_seq": 6, "current": False})]
    assert d.apply(DEVICE.format("DDATA"), ddata(seq=2), 2.0).readings
    current = psp.NDeath(timestamp=None, bd_seq_metric=metric("bdSeq", DT.INT64, 7)).encode()
    assert d.apply(NODE.format("NDEATH"), current, 3.0).events[0][1]["current"] is True
    assert d.apply(DEVICE.format("DDATA"), ddata(seq=3), 4.0).rejection.reason == "unknown_alias"


def test_ddeath_forgets_the_device_birth_only():
    d = born()
    out = d.apply(DEVICE.format("DDEATH"), psp.DDeath(timestamp=T0, seq=2).encode(), 2.0)
    assert out.events == [("sparkplug_death", {"device": "plant-a:edge-1:motor-3"})] and not out.readings
    assert d.apply(DEVICE.format("DDATA"), ddata(seq=3), 2.0).rejection.reason == "unknown_alias"
    node_data = psp.NData(
        timestamp=T0, seq=4, metrics=[psp.Metric(timestamp=None, name=None, datatype=DT.FLOAT, value=1.0, alias=1)]
    ).encode()
    assert d.apply(NODE.format("NDATA"), node_data, 2.0).readings


def test_a_new_nbirth_drops_the_device_births_of_the_last_session():
    d = born()
    d.apply(NODE.format("NBIRTH"), nbirth(seq=0, bd_seq=8), 2.0)
    assert d.apply(DEVICE.format("DDATA"), ddata(seq=1), 2.0).rejection.reason == "unknown_alias"


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (DEVICE.format("DDATA"), b'{"temperature": 21.5}', "malformed_protobuf"),
        (DEVICE.format("DDATA"), b"\xff\xff\xff", "malformed_protobuf"),
        ("spBv1.0/plant a/DDATA/edge-1/motor-3", b"", "bad_topic"),  # a space: not a device id
        ("spBv1.0/plant-a/DDATA/edge-1", b"", "bad_topic"),  # DDATA without a device
        ("spBv1.0/plant-a/XDATA/edge-1", b"", "bad_topic"),
        (DEVICE.format("DDATA"), b"\x00" * 2_000_000, "oversized"),
    ],
)
def test_refusals_have_their_reason(topic, payload, reason):
    out = born().apply(topic, payload, 1.0)
    assert out.rejection.reason == reason and out.rejection.detail and not out.readings


def test_a_non_finite_value_and_an_unknown_device_are_refused():
    d = born()
    assert d.apply(DEVICE.format("DDATA"), ddata(seq=2, rpm=float("nan")), 1.0).rejection.reason == "non_finite"
    out = d.apply(DEVICE.format("DDATA"), ddata(seq=3), 1.0, known_devices=frozenset({"plant-a:edge-1:other"}))
    assert out.rejection.reason == "unknown_device"


def test_host_application_state_is_noted_not_read_nor_refused():
    out = born().apply("spBv1.0/STATE/host-1", b'{"online":true,"timestamp":1}', 1.0)
    assert out.rejection is None and not out.readings and out.message_type == "STATE"
    assert out.events == [("sparkplug_host_state_ignored", {"topic": "spBv1.0/STATE/host-1"})]


def test_commands_to_edge_nodes_are_noted_not_read():
    topic, payload = rebirth_request("plant-a", "edge-1", T0)
    out = born().apply(topic, payload, 1.0)
    assert out.rejection is None and not out.readings and out.events[0][0] == "sparkplug_command_ignored"


def test_topics_parse_into_group_type_node_and_device():
    t = parse_topic("spBv1.0/g/DDATA/e/d")
    assert (t.group, t.message_type, t.edge_node, t.device, t.device_id) == ("g", "DDATA", "e", "d", "g:e:d")


# ---------------------------------------------------------------- the mapping and the bridge's settings
def test_sparkplug_mappings_take_spb_topics_and_no_payload_paths(tmp_path):
    with pytest.raises(ValueError, match="spBv1.0"):
        mappings.IngestMapping(format="sparkplug_b", topics=["devices/+/x/y"])
    with pytest.raises(ValueError, match="ts_path"):
        mappings.IngestMapping(format="sparkplug_b", topics=["spBv1.0/+/+/+"], ts_path="t")
    file = tmp_path / "plant.yaml"
    file.write_text("preset: sparkplug-b\ntopics: ['spBv1.0/plant-a/+/+/+']\n")
    mapping = mappings.load_mapping(str(file))
    assert mapping.subscriptions == ["spBv1.0/plant-a/#"] and mapping.derives_seq and mapping.device_timestamps
    with pytest.raises(ValueError, match="SparkplugDecoder"):
        mappings.apply(mapping, "spBv1.0/plant-a/DDATA/e/d", b"", 1.0)


def test_the_bridge_takes_one_connection_for_sparkplug():
    from pydantic import ValidationError

    from streamtrain.bridge.app import BridgeSettings

    with pytest.raises(ValidationError, match="connections = 1"):
        BridgeSettings(ingest_mapping="sparkplug-b", connections=2)
    # One filter: the broker keeps the order of one subscription's messages (births, then data, seqs in turn).
    assert BridgeSettings(ingest_mapping="sparkplug-b").filters() == ["spBv1.0/+/#"]


# ---------------------------------------------------------------- hostile input
_TOPICS = [NODE.format(t) for t in ("NBIRTH", "NDATA", "NDEATH")] + [DEVICE.format(t) for t in ("DBIRTH", "DDATA")]


def _metric(draw) -> pb.Payload.Metric:
    m = pb.Payload.Metric()
    if draw(st.booleans()):
        m.name = draw(st.sampled_from(["a", "Motor/Speed RPM", "bdSeq", "ts", "seq", "x" * 70, ""]))
    if draw(st.booleans()):
        m.alias = draw(st.integers(0, 20))
    if draw(st.booleans()):
        m.datatype = draw(st.integers(0, 40))
    if draw(st.booleans()):
        m.timestamp = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2**43)))
    m.is_null = draw(st.booleans())
    kind = draw(st.sampled_from(["none", "int", "long", "float", "double", "bool", "string", "bytes", "dataset"]))
    if kind == "int":
        m.int_value = draw(st.integers(0, 2**32 - 1))
    elif kind == "long":
        m.long_value = draw(st.integers(0, 2**64 - 1))
    elif kind == "float":
        m.float_value = draw(st.floats(width=32))
    elif kind == "double":
        m.double_value = draw(st.floats())
    elif kind == "bool":
        m.boolean_value = draw(st.booleans())
    elif kind == "string":
        m.string_value = draw(st.text(max_size=5))
    elif kind == "bytes":
        m.bytes_value = draw(st.binary(max_size=5))
    elif kind == "dataset":
        m.dataset_value.num_of_columns = 1
    return m


@st.composite
def _payloads(draw) -> bytes:
    p = pb.Payload()
    if draw(st.booleans()):
        p.timestamp = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2**43)))
    if draw(st.booleans()):
        p.seq = draw(st.integers(0, 300))
    for _ in range(draw(st.integers(0, 6))):
        p.metrics.append(_metric(draw))
    return p.SerializeToString()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_TOPICS), st.one_of(_payloads(), st.binary(max_size=64))), max_size=8))
def test_any_sequence_of_messages_makes_outcomes_never_exceptions(messages):
    d = decoder()
    for topic, payload in messages:
        out = d.apply(topic, payload, 1.0)
        assert (out.rejection is None) or (out.rejection.detail and not out.readings)
        for r in out.readings:
            assert r.channels and all(math.isfinite(v) for v in r.channels.values())
            assert mappings.is_timestamp_seq(r.ts, r.seq) and set(r.channels).isdisjoint(telemetry.RESERVED)
