"""Sparkplug B through the HiveMQ extension on the real brokers: pysparkplug (an independent Sparkplug library)
encodes an edge node's births and data, a paho client publishes them to a HiveMQ CE with the extension
(STREAMTRAIN_INGEST_MAPPING sparkplug-b), and the raw topic holds, byte for byte, what the Python bridge's
``SparkplugDecoder`` makes of the same messages; refused ones are dead-lettered with its reasons; a seq gap and
data before a birth make the extension ask the edge node for its births, over MQTT."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import paho.mqtt.client as mqtt
import pysparkplug as psp
import pytest

from streamtrain import ingest_mapping
from streamtrain.kafka import headers_dict, read_topic
from streamtrain.sparkplug import SparkplugDecoder
from streamtrain.stack.local import LocalStack, free_port
from tests.conftest import another_hivemq
from tests.ingest.test_device_formats_e2e import publish_all
from tests.ingest.test_sparkplug_e2e import births, ddata, listen

pytestmark = pytest.mark.e2e

DT = psp.DataType


class AckModeStack(LocalStack):
    """The local stack with the extension's ack.mode set (the stack writes puback, the default, otherwise)."""

    ack_mode = "puback"

    def ingest_properties(self) -> dict[str, str]:
        return {**super().ingest_properties(), "ack.mode": self.ack_mode}


@pytest.fixture(scope="module", params=["puback", "async"])
def sparkplug_stack(request, local_stack, tmp_path_factory):
    """A HiveMQ with the extension and the sparkplug-b preset, writing to test-unique topics of the session's Kafka;
    the PUBACK of a message waits for all its records in the outbound interceptor (puback) or in the async output."""
    home = tmp_path_factory.mktemp(f"sparkplug-ext-{request.param}")
    stack_class = type("AckModeStack", (AckModeStack,), {"ack_mode": request.param})
    settings = {"ingest": "extension", "ingest_mapping": "sparkplug-b", "ingest_metrics_port": free_port()}
    with another_hivemq(local_stack, home, stack_class, **settings) as stack:
        yield stack


def scrape(stack) -> dict[str, float]:
    url = f"http://127.0.0.1:{stack.settings.ingest_metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def level(seq: int, ms: int, value: int) -> bytes:
    """An NDATA of a node whose birth names alias 1 "Level" (UInt16)."""
    return psp.NData(timestamp=ms, seq=seq, metrics=[psp.Metric(ms, None, DT.UINT16, value, alias=1)]).encode()


def test_the_extension_decodes_sparkplug_b_as_the_bridge_does(sparkplug_stack):
    stack, s = sparkplug_stack, sparkplug_stack.settings
    group = f"g{uuid.uuid4().hex[:6]}"
    node, motor, other = (
        f"spBv1.0/{group}/{{}}/edge-1",
        f"spBv1.0/{group}/{{}}/edge-1/motor-1",
        f"spBv1.0/{group}/{{}}/edge-2",
    )
    commands, ncmd = listen(s.mqtt_port, f"spBv1.0/{group}/NCMD/+")
    now_ms = int(time.time() * 1000) - 60_000
    nbirth, dbirth = births(now_ms)
    stamps = [now_ms + 1000 * i for i in range(4)]
    several = psp.DData(  # three timestamps in one message: three records, one PUBACK after all of them
        timestamp=now_ms + 5000,
        seq=6,
        metrics=[
            psp.Metric(timestamp=now_ms + 4000, name=None, datatype=DT.DOUBLE, value=1500.0, alias=10),
            psp.Metric(timestamp=now_ms + 4500, name=None, datatype=DT.DOUBLE, value=1510.0, alias=10),
            psp.Metric(timestamp=now_ms + 5000, name=None, datatype=DT.FLOAT, value=70.5, alias=11),
        ],
    ).encode()
    node_data = psp.NData(
        timestamp=now_ms + 500,
        seq=5,
        metrics=[psp.Metric(timestamp=None, name=None, datatype=DT.FLOAT, value=23.75, alias=1)],
    ).encode()
    other_birth = psp.NBirth(
        timestamp=now_ms,
        seq=0,
        metrics=[
            psp.Metric(timestamp=now_ms, name="bdSeq", datatype=DT.INT64, value=1),
            psp.Metric(timestamp=now_ms, name="Level", datatype=DT.UINT16, value=0, alias=1),
        ],
    ).encode()

    messages = [
        (motor.format("DDATA"), ddata(40, now_ms - 1000, 0)),  # before any birth: unknown alias, a rebirth asked
        (motor.format("DDATA"), b'{"temperature": 21.5}'),  # not protobuf
        (node.format("NBIRTH"), nbirth),
        (motor.format("DBIRTH"), dbirth),
        *[(motor.format("DDATA"), ddata(2 + i, ms, i)) for i, ms in enumerate(stamps[:3])],
        (node.format("NDATA"), node_data),
        (motor.format("DDATA"), several),
        (motor.format("DDATA"), ddata(9, stamps[3], 3)),  # a seq gap within the interval: no second request
        (motor.format("DDEATH"), psp.DDeath(timestamp=stamps[3] + 1, seq=10).encode()),
        (other.format("NBIRTH"), other_birth),
        (other.format("NDATA"), level(1, now_ms + 100, 7)),
        (other.format("NDATA"), level(4, now_ms + 200, 9)),  # a seq gap: edge-2 is asked for its births
    ]
    try:
        sent_from = time.time()
        publish_all(s.mqtt_port, messages)  # QoS 1: each PUBACK comes once Kafka has all of the message's records
        sent_until = time.time()
        requests = [ncmd.get(timeout=30), ncmd.get(timeout=30)]
    finally:
        commands.disconnect()
        commands.loop_stop()

    # The rebirth requests the edge nodes received: edge-1's (no birth seen) and edge-2's (its seq gap).
    assert sorted(r.topic for r in requests) == sorted([node.format("NCMD"), other.format("NCMD")])
    for r in requests:
        decoded = psp.NCmd.decode(r.payload)
        [command] = decoded.metrics
        assert (command.name, command.value) == ("Node Control/Rebirth", True)
        assert sent_from * 1000 - 1000 <= decoded.timestamp <= sent_until * 1000 + 1000  # the broker's time
    assert ncmd.empty(), "one request per edge node and interval"

    # What the Python bridge's decoder makes of the same messages, in the same order (the arrival time only
    # paces rebirth requests, all within one interval here, and stamps their payload).
    decoder = SparkplugDecoder(ingest_mapping.PRESETS["sparkplug-b"], rebirth_interval_s=30.0)
    outcomes = [(t, p, decoder.apply(t, p, sent_from)) for t, p in messages]
    readings = [(t, r) for t, _, o in outcomes if o.rejection is None for r in o.readings]
    refused = [(t, p, o) for t, p, o in outcomes if o.rejection is not None]
    assert len(readings) == 10 and len(refused) == 2
    assert sorted(o.rebirth[0] for _, _, o in outcomes if o.rebirth) == sorted(r.topic for r in requests)

    raw = read_topic(stack.bootstrap, s.topic_raw, until=lambda m: len(m) >= len(readings), timeout=60)
    assert len(raw) == len(readings)
    per_device: dict[bytes, list] = {}
    for m in raw:  # a device's records are in one partition, in the order they were written
        per_device.setdefault(m.key(), []).append(m)
    for topic, reading in readings:
        m = per_device[reading.device_id.encode()].pop(0)
        assert m.value() == reading.to_json(), topic  # byte for byte what the bridge writes
        assert headers_dict(m)["mqtt.topic"] == topic

    dead = read_topic(stack.bootstrap, s.topic_deadletter, until=lambda m: len(m) >= len(refused), timeout=60)
    assert len(dead) == len(refused)
    for (topic, payload, outcome), m in zip(refused, dead, strict=True):
        h = headers_dict(m)
        assert (h["streamtrain.reason"], h["streamtrain.source"], m.value()) == (
            outcome.rejection.reason,
            f"mqtt:{topic}",
            payload,
        )
        assert m.key() == outcome.device_id.encode()
        if outcome.rejection.reason != "malformed_protobuf":  # its detail ends with each protobuf library's message
            assert h["streamtrain.detail"] == outcome.rejection.detail
    assert {headers_dict(m)["streamtrain.reason"] for m in dead} == {"unknown_alias", "malformed_protobuf"}

    want = {
        'streamtrain_bridge_sparkplug_messages_total{type="NBIRTH"}': 2.0,
        'streamtrain_bridge_sparkplug_messages_total{type="DBIRTH"}': 1.0,
        'streamtrain_bridge_sparkplug_messages_total{type="DDATA"}': 7.0,
        'streamtrain_bridge_sparkplug_messages_total{type="NDATA"}': 3.0,
        'streamtrain_bridge_sparkplug_messages_total{type="DDEATH"}': 1.0,
        "streamtrain_bridge_sparkplug_seq_gaps_total": 2.0,
        "streamtrain_bridge_sparkplug_rebirth_requests_total": 2.0,
        'streamtrain_bridge_deadlettered_total{reason="unknown_alias"}': 1.0,
        'streamtrain_bridge_deadlettered_total{reason="malformed_protobuf"}': 1.0,
        "streamtrain_bridge_forwarded_total": float(len(readings)),
    }
    log = stack.hivemq.log_file.read_text()
    started = [json.loads(line) for line in log.splitlines() if '"ingest_started"' in line]
    assert [(e["mapping"], e["ack_mode"]) for e in started][-1:] == [("sparkplug-b", stack.ack_mode)]
    for event in ("sparkplug_birth", "sparkplug_death", "sparkplug_no_birth", "sparkplug_rebirth_requested"):
        assert f'"event":"{event}"' in log, event
    assert '"why":"seq 4 after 1"' in log  # edge-2's gap, in its rebirth request (gaps themselves are sampled)

    deadline = time.monotonic() + 10
    while (got := {k: scrape(stack).get(k) for k in want}) != want:
        assert time.monotonic() < deadline, {k: (v, want[k]) for k, v in got.items() if v != want[k]}
        time.sleep(0.1)


def test_an_edge_nodes_will_is_its_death_to_the_extension(sparkplug_stack):
    """HiveMQ calls no publish interceptor for a will: the extension notes the NDEATH will all the same."""
    stack, s = sparkplug_stack, sparkplug_stack.settings
    group = f"w{uuid.uuid4().hex[:6]}"
    node = f"spBv1.0/{group}/{{}}/edge-3"
    now_ms = int(time.time() * 1000)
    before = scrape(stack)
    edge = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-3-{group}", protocol=mqtt.MQTTv311)
    will = psp.NDeath(timestamp=None, bd_seq_metric=psp.Metric(None, "bdSeq", DT.INT64, 5)).encode()
    edge.will_set(node.format("NDEATH"), will, qos=1)
    edge.connect("127.0.0.1", s.mqtt_port, keepalive=30)
    edge.loop_start()
    birth = psp.NBirth(
        timestamp=now_ms,
        seq=0,
        metrics=[
            psp.Metric(now_ms, "bdSeq", DT.INT64, 5),
            psp.Metric(now_ms, "Level", DT.UINT16, 0, alias=1),
        ],
    ).encode()
    try:
        for topic, payload in [(node.format("NBIRTH"), birth), (node.format("NDATA"), level(1, now_ms + 1, 3))]:
            edge.publish(topic, payload, qos=1).wait_for_publish(30)
    finally:
        edge.loop_stop()
        edge.socket().close()  # the connection lost, no DISCONNECT: the broker publishes the will

    def changed(key: str) -> float:
        return scrape(stack).get(key, 0.0) - before.get(key, 0.0)

    deadline = time.monotonic() + 30
    while changed('streamtrain_bridge_sparkplug_messages_total{type="NDEATH"}') < 1:
        assert time.monotonic() < deadline, "the will's NDEATH was not noted"
        time.sleep(0.1)
    deaths = [json.loads(line) for line in stack.hivemq.log_file.read_text().splitlines() if group in line]
    assert [(e["event"], e.get("current")) for e in deaths if e["event"] == "sparkplug_death"] == [
        ("sparkplug_death", "True")
    ]
    # The edge node is gone: its data by alias, without a new birth, is refused as the bridge refuses it.
    late = level(2, now_ms + 2, 4)
    publish_all(s.mqtt_port, [(node.format("NDATA"), late)])
    dead = read_topic(
        stack.bootstrap, s.topic_deadletter, until=lambda m: any(x.value() == late for x in m), timeout=60
    )
    [m] = [m for m in dead if m.value() == late]
    assert headers_dict(m)["streamtrain.reason"] == "unknown_alias"
    raw = read_topic(stack.bootstrap, s.topic_raw, timeout=10)
    assert [json.loads(m.value())["level"] for m in raw if m.key() == f"{group}:edge-3".encode()] == [3.0]
