"""Issue 24, finding 8 at the bridge: a reading whose ts is far ahead of its arrival (a device that
writes milliseconds) is dead-lettered as clock_skew over real MQTT and Kafka, counted, and the
device's next good reading still reaches the raw topic. The preprocessor applies the same limit
(telemetry.IngestLimits) to whatever reaches the raw topic another way."""

from __future__ import annotations

import json
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from streamtrain.kafka import headers_dict, read_topic
from streamtrain.stack.local import free_port
from tests.ingest.test_bridge_e2e import bridge_factory, scrape  # noqa: F401

pytestmark = pytest.mark.e2e


def test_a_ts_far_ahead_is_dead_lettered_as_clock_skew_by_the_bridge(pipeline, bridge_factory):  # noqa: F811
    port = free_port()
    bridge = bridge_factory(metrics_port=port, max_clock_skew_s=600)
    device = f"c{uuid.uuid4().hex[:6]}"
    now = time.time()
    readings = [
        {"device_id": device, "ts": now * 1000, "seq": 0, "temperature": 70.0},  # milliseconds
        {"device_id": device, "ts": now + 3600, "seq": 1, "temperature": 70.0},  # an hour ahead
        {"device_id": device, "ts": now + 60, "seq": 2, "temperature": 70.0},  # within the limit
        {"device_id": device, "ts": now, "seq": 3, "temperature": 70.0},
    ]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", pipeline.mqtt_port)
    client.loop_start()
    try:
        for r in readings:
            client.publish(f"devices/{device}/telemetry", json.dumps(r), qos=1).wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()
    dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, until=lambda m: len(m) >= 2, timeout=60)
    raw = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 2, timeout=60)
    assert [headers_dict(m)["streamtrain.reason"] for m in dead] == ["clock_skew", "clock_skew"]
    assert [json.loads(m.value())["seq"] for m in dead] == [0, 1]
    assert "limit 600 s" in headers_dict(dead[0])["streamtrain.detail"]
    assert sorted(json.loads(m.value())["seq"] for m in raw) == [2, 3]
    assert scrape(port)['streamtrain_bridge_deadlettered_total{reason="clock_skew"}'] == 2
    assert bridge.proc.poll() is None
