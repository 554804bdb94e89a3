"""The HiveMQ ingestion extension on the real brokers: the Go load generator -> HiveMQ CE with the
extension -> Kafka, with no bridge. A PUBACK means the record is in Kafka: everything acknowledged is
there once, in each device's order; bad payloads are dead-lettered exactly as the Python bridge does it
(the shared vectors); and a kill -9 of the broker loses nothing that was acknowledged."""

from __future__ import annotations

import collections
import json
import subprocess
import time
import urllib.request
import uuid

import paho.mqtt.client as mqtt
import pytest

from streamtrain import telemetry
from streamtrain.kafka import headers_dict, read_topic
from streamtrain.stack import loadgen
from streamtrain.stack.local import free_port
from tests.conftest import another_hivemq
from tests.unit.repo.test_telemetry_vectors import VECTORS, _payload

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ingest_stack(local_stack, tmp_path_factory):
    """A second HiveMQ with the extension, writing to test-unique topics of the session's Kafka."""
    home = tmp_path_factory.mktemp("ingest")
    with another_hivemq(local_stack, home, ingest="extension", ingest_metrics_port=free_port()) as stack:
        yield stack


def acked_pairs(path) -> collections.Counter:
    lines = path.read_text().splitlines()
    return collections.Counter((d, int(s)) for d, s in (line.split("\t") for line in lines))


def raw_pairs(stack, messages) -> list[tuple[str, int]]:
    return [(json.loads(m.value())["device_id"], json.loads(m.value())["seq"]) for m in messages]


def metric(stack, name: str) -> float:
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{stack.settings.ingest_metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


def test_every_acknowledged_reading_is_in_kafka_once_in_device_order(ingest_stack, tmp_path):
    before = metric(ingest_stack, "streamtrain_bridge_forwarded_total")
    acked_file = tmp_path / "acked.tsv"
    prefix = f"d{uuid.uuid4().hex[:6]}"
    summary = loadgen.run(
        ingest_stack.settings.mqtt_port,
        connections=4,
        inflight=64,
        devices=200,
        count=20000,
        device_prefix=prefix,
        acked_out=acked_file,
    )
    assert summary["acked"] == summary["sent"] == 20000, summary
    acked = acked_pairs(acked_file)
    assert len(acked) == 20000 and max(acked.values()) == 1
    # Acknowledged means in Kafka already: reading to the end offsets of now finds all of it.
    msgs = [
        m
        for m in read_topic(ingest_stack.bootstrap, ingest_stack.settings.topic_raw, timeout=60)
        if m.key().decode().startswith(prefix)
    ]
    pairs = raw_pairs(ingest_stack, msgs)
    assert collections.Counter(pairs) == acked  # every acknowledged (device, seq), exactly once
    assert all(m.key().decode() == d for m, (d, _) in zip(msgs, pairs))
    last: dict[str, int] = {}
    for device, seq in pairs:  # arrival order within each partition = each device's publish order
        assert seq == last.get(device, -1) + 1, (device, seq, last.get(device))
        last[device] = seq
    for m in msgs[:50]:  # the record the Python bridge writes for the same reading
        topic = headers_dict(m)["mqtt.topic"]
        assert telemetry.validate(m.value(), topic).to_json() == m.value()
    assert metric(ingest_stack, "streamtrain_bridge_forwarded_total") - before == 20000


def test_bad_payloads_are_dead_lettered_as_the_bridge_does(ingest_stack):
    cases = [
        c
        for c in VECTORS["cases"]
        if "max_bytes" not in c
        and "known_devices" not in c
        and c["topic"].startswith("devices/")
        and c["topic"].endswith("/telemetry")
        and c["topic"].count("/") == 2
        # HiveMQ disconnects a client that publishes to a topic with a control character (MQTT 5 1.5.4: a
        # topic SHOULD NOT hold one); the validators' verdict on such topics is the vectors' unit tests'.
        and not any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in c["topic"])
    ]
    assert sum("reason" in c for c in cases) > 40
    run = uuid.uuid4().hex[:6]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"vectors-{run}", protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", ingest_stack.settings.mqtt_port)
    client.loop_start()
    try:
        for c in cases:
            client.publish(c["topic"], _payload(c), qos=1).wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()
    s = ingest_stack.settings
    good = [c for c in cases if "record" in c]
    bad = [c for c in cases if "reason" in c]
    raw = [
        m
        for m in read_topic(ingest_stack.bootstrap, s.topic_raw, timeout=60)
        if m.value().decode() in {c["record"] for c in good}
    ]
    assert sorted(m.value().decode() for m in raw) == sorted(c["record"] for c in good)
    dead = read_topic(ingest_stack.bootstrap, s.topic_deadletter, until=lambda ms: len(ms) >= len(bad), timeout=60)
    assert len(dead) == len(bad)
    by_payload = collections.defaultdict(list)
    for m in dead:
        by_payload[(headers_dict(m)["streamtrain.source"], m.value())].append(m)
    for c in bad:
        m = by_payload[(f"mqtt:{c['topic']}", _payload(c))].pop()
        h = headers_dict(m)
        expected = telemetry.validate(_payload(c), c["topic"])  # the Python bridge's verdict
        assert h["streamtrain.reason"] == c["reason"] == expected.reason, c["name"]
        if c["reason"] != "malformed_json" or c.get("detail") == "JSON nested too deeply":
            assert h["streamtrain.detail"] == expected.detail, c["name"]
        device = telemetry.device_from_topic(c["topic"])
        assert m.key() == (device.encode() if device else None), c["name"]
    assert metric(ingest_stack, "streamtrain_bridge_deadlettered_total") >= len(bad)


@pytest.mark.faults
def test_kill_9_of_the_broker_loses_nothing_acknowledged(ingest_stack, tmp_path):
    acked_file = tmp_path / "acked.tsv"
    prefix = f"k{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(
        loadgen.command(
            ingest_stack.settings.mqtt_port,
            connections=4,
            inflight=64,
            devices=100,
            duration="12s",
            rate=3000,
            device_prefix=prefix,
            drain="20s",
            acked_out=acked_file,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    ingest_stack.restart_service(ingest_stack.hivemq, kill=True)  # SIGKILL mid-stream, then start again
    out, err = proc.communicate(timeout=120)
    summary = loadgen.summary(out)
    assert summary["failed"] > 0 or "mqtt_connection_lost" in err, (summary, err[-2000:])
    acked = acked_pairs(acked_file)
    assert len(acked) == summary["acked"] > 5000
    in_kafka = collections.Counter(
        raw_pairs(
            ingest_stack,
            [
                m
                for m in read_topic(ingest_stack.bootstrap, ingest_stack.settings.topic_raw, timeout=60)
                if m.key().decode().startswith(prefix)
            ],
        )
    )
    lost = [p for p in acked if p not in in_kafka]
    assert not lost, f"{len(lost)} acknowledged readings are not in Kafka, e.g. {lost[:5]}"
