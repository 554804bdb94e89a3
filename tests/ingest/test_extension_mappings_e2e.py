"""The HiveMQ extension applying each JSON preset on the real brokers: a paho client publishes the preset's
example payloads to a HiveMQ CE with the extension (STREAMTRAIN_INGEST_MAPPING as the bridge reads it), and
the raw topic holds the readings ``ingest_mapping.apply`` makes of the same messages, byte for byte; refused
payloads are dead-lettered with the bridge's reason; topics no pattern matches are counted, not written."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid

import paho.mqtt.client as mqtt
import pytest

from streamtrain import ingest_mapping, telemetry
from streamtrain.kafka import headers_dict, read_topic
from streamtrain.stack.local import free_port
from tests.conftest import another_hivemq
from tests.ingest import device_payloads as dp

pytestmark = pytest.mark.e2e

JSON_PRESETS = [name for name, m in ingest_mapping.PRESETS.items() if m.format == "json"]


@pytest.fixture(scope="module", params=JSON_PRESETS)
def mapped_stack(request, local_stack, tmp_path_factory):
    """A HiveMQ with the extension and one preset, writing to test-unique topics of the session's Kafka."""
    home = tmp_path_factory.mktemp(f"mapped-{request.param}")
    settings = {"ingest": "extension", "ingest_mapping": request.param, "ingest_metrics_port": free_port()}
    with another_hivemq(local_stack, home, **settings) as stack:
        yield request.param, stack


def messages(preset: str, run: str) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(topic, payload) the preset takes (accepted or refused), and ones on topics it does not take."""
    if preset == "zigbee2mqtt":
        take = [
            (f"zigbee2mqtt/{run}-kitchen", dp.encode(dp.ZIGBEE)),
            (f"zigbee2mqtt/{run}-hall", dp.encode({**dp.ZIGBEE, "temperature": 19.25, "occupancy": True})),
            (f"zigbee2mqtt/{run}-bad", b'{"temperature": NaN}'),
            (f"zigbee2mqtt/{run}-empty", dp.encode({"state": "ON"})),
        ]
        other = [(f"zigbee2mqtt/bridge/{run}/state", b'{"state": "online"}'), (f"zigbee2mqtt/{run}/set", b"{}")]
    elif preset == "tasmota":
        take = [
            (f"tele/{run}-plug/SENSOR", dp.encode(dp.TASMOTA)),
            (f"tele/{run}-plug2/SENSOR", dp.encode({**dp.TASMOTA, "Time": "2026-12-06T10:15:00.250+01:00"})),
            (f"tele/{run}-bad/SENSOR", dp.encode({**dp.TASMOTA, "Time": "yesterday"})),
            (f"tele/{run}-late/SENSOR", dp.encode({k: v for k, v in dp.TASMOTA.items() if k != "Time"})),
        ]
        other = [(f"tele/{run}-plug/STATE", b'{"Uptime": "0T01:00:00"}'), (f"stat/{run}-plug/RESULT", b"{}")]
    elif preset == "esphome":  # one value per topic: the extension holds each node's last values as the bridge does
        node = f"{run}-kitchen"
        take = [
            *((f"{node}/{t.split('/', 1)[1]}", v.encode()) for t, v in dp.ESPHOME_DEVICE),
            (f"{node}/sensor/temperature/state", b"21.75"),
            (f"{node}/sensor/status/state", b"online"),
            (f"{run}-hall/sensor/temperature/state", b"NaN"),
        ]
        other = [(f"{node}/binary_sensor/door/state", b"ON"), (f"{node}/status", b"online")]
    else:
        device = f"{run}-dev"
        cloud = {**dp.CLOUD, "deviceId": device}
        take = [
            (f"fleet-a/{device}/data", dp.encode(cloud)),
            (f"fleet-b/{device}/data", dp.encode({**cloud, "timestamp": 1_765_015_201_123})),
            (f"fleet-a/{device}/data", dp.encode({**cloud, "deviceId": f"{run}-other"})),
            (f"fleet-a/{device}/data", b"[1, 2, 3]"),
        ]
        other = [(f"fleet-a/{device}/status", b"{}"), (f"fleet-a/{device}/data/extra", b"{}")]
    return take, other


def metric(stack, name: str) -> float:
    url = f"http://127.0.0.1:{stack.settings.ingest_metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith((name + " ", name + "{")))


def test_each_json_preset_makes_the_bridges_readings(mapped_stack):
    preset, stack = mapped_stack
    mapping = ingest_mapping.PRESETS[preset]
    run = uuid.uuid4().hex[:6]
    take, other = messages(preset, run)
    unmatched_before = metric(stack, "streamtrain_bridge_unmatched_topics_total")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"mapped-{run}", protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", stack.settings.mqtt_port)
    client.loop_start()
    try:
        sent_from = time.time()
        for topic, payload in [*take, *other]:
            # QoS 1: the PUBACK comes once Kafka has the record (ack.mode puback).
            client.publish(topic, payload, qos=1).wait_for_publish(30)
        sent_until = time.time()
    finally:
        client.disconnect()
        client.loop_stop()

    s = stack.settings
    # What the Python bridge makes of the same messages, in the order they were published (one ArrivalSeq, one
    # HeldValues); the arrival time is the extension's, read from its record when the mapping takes no time.
    probe = {(t, p): ingest_mapping.apply(mapping, t, p, sent_from) for t, p in take}
    good = [k for k, r in probe.items() if isinstance(r, telemetry.Reading)]
    bad = [k for k, r in probe.items() if isinstance(r, telemetry.Rejection)]
    assert len(good) >= 2 and len(bad) >= 2, probe

    raw = [m for m in read_topic(stack.bootstrap, s.topic_raw, timeout=60) if run in m.key().decode()]
    assert len(raw) == len(good)
    per_device: dict[bytes, list] = {}
    for m in raw:  # a device's records are in one partition, in the order they were published
        per_device.setdefault(m.key(), []).append(m)
    seqs, held = ingest_mapping.ArrivalSeq(), ingest_mapping.HeldValues(mapping.hold_s)
    for topic, payload in good:
        m = per_device[probe[topic, payload].device_id.encode()].pop(0)
        assert headers_dict(m)["mqtt.topic"] == topic
        arrived = json.loads(m.value())["ts"] if mapping.ts_path is None else sent_from
        if mapping.ts_path is None:
            assert sent_from - 1 <= arrived <= sent_until + 1  # the arrival time, taken by the broker
        reading = ingest_mapping.apply(mapping, topic, payload, arrived, arrival_seq=seqs, held=held)
        assert isinstance(reading, telemetry.Reading)
        assert m.value() == reading.to_json(), topic  # byte for byte what the bridge writes
        assert m.key() == reading.device_id.encode()
    if mapping.one_value_per_topic:  # the node's last reading holds all its channels
        assert set(json.loads(m.value())) == {"device_id", "ts", "seq", "temperature", "humidity", "wifi_signal"}

    dead = read_topic(stack.bootstrap, s.topic_deadletter, timeout=60)
    dead = [m for m in dead if run in headers_dict(m)["streamtrain.source"]]
    assert len(dead) == len(bad)  # the unmatched topics are not dead-lettered either
    for topic, payload in bad:
        [m] = [m for m in dead if headers_dict(m)["streamtrain.source"] == f"mqtt:{topic}" and m.value() == payload]
        assert headers_dict(m)["streamtrain.reason"] == probe[topic, payload].reason, topic
        device = mapping.device_from_topic(topic)
        assert m.key() == (device.encode() if device else None)

    assert metric(stack, "streamtrain_bridge_unmatched_topics_total") - unmatched_before == len(other)


def test_a_resources_whole_mapping_runs_in_the_extension(local_stack, tmp_path, monkeypatch):
    """spec.ingest.mapping as the operator renders it into the managed broker (inline JSON in
    STREAMTRAIN_INGEST_MAPPING, which the extension's environment takes over its properties file)."""
    from streamtrain.operator.ingest import ingest_env

    run = uuid.uuid4().hex[:6]
    spec = {
        "ingest": {
            "preset": "tasmota",
            "topics": [f"home-{run}/{{device_id}}/SENSOR"],
            "mapping": {"ts_timezone": "Europe/Berlin", "rename": {"ENERGY_Power": "watts"}},
        }
    }
    for e in ingest_env(spec):
        monkeypatch.setenv(e["name"], e["value"])
    assert os.environ["STREAMTRAIN_INGEST_MAPPING"].startswith("{")
    with another_hivemq(local_stack, tmp_path, ingest="extension") as stack:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"inline-{run}", protocol=mqtt.MQTTv311)
        client.connect("127.0.0.1", stack.settings.mqtt_port)
        client.loop_start()
        try:
            payload = dp.encode({**dp.TASMOTA, "Time": "2026-12-06T11:15:00"})  # 10:15 UTC
            client.publish(f"home-{run}/plug-9/SENSOR", payload, qos=1).wait_for_publish(30)
        finally:
            client.disconnect()
            client.loop_stop()
        [m] = read_topic(stack.bootstrap, stack.settings.topic_raw, until=lambda m: len(m) >= 1, timeout=60)
    want = ingest_mapping.apply(
        ingest_mapping.load_mapping(os.environ["STREAMTRAIN_INGEST_MAPPING"], spec["ingest"]["topics"]),
        f"home-{run}/plug-9/SENSOR",
        payload,
        0.0,
    )
    assert m.value() == want.to_json()  # byte for byte what the bridge makes of it
    assert json.loads(m.value())["watts"] == 42.0 and json.loads(m.value())["ts"] == dp.TASMOTA_TS
