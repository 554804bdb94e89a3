"""HiveMQ's own drops, counted where Prometheus can see them: the session's real broker (StreamTrain's
launcher) serves ``streamtrain_broker_messages_dropped_total`` on its metrics port, a broker with the ingestion
extension on the extension's port (the managed broker's metrics port with ``mqtt.ingest: extension``), and the
alert StreamTrainBrokerDroppedMessages (tests/monitoring/alerts.test.yaml) fires on any increase.

A drop is made the way HiveMQ really drops: an MQTT 5 subscriber (a bridge) announces a maximum packet
size, and the broker discards every message above it for that subscriber after acknowledging it to the
device, so it reaches neither Kafka nor a dead letter."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streamtrain.stack.local import free_port
from tests.conftest import another_hivemq
from tests.ingest.test_bridge_e2e import scrape

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["launcher", "extension"])
def broker(request, local_stack, tmp_path):
    """(MQTT port, metrics port): the session's broker, or one with the ingestion extension."""
    if request.param == "launcher":
        yield local_stack.settings.mqtt_port, local_stack.settings.broker_metrics_port
        return
    with another_hivemq(local_stack, tmp_path, ingest="extension", ingest_metrics_port=free_port()) as stack:
        yield stack.settings.mqtt_port, stack.settings.ingest_metrics_port


def test_messages_the_broker_discards_are_counted(broker):
    mqtt_port, port = broker
    topic = f"drops/{uuid.uuid4().hex[:8]}/telemetry"
    before = scrape(port)
    assert "streamtrain_broker_messages_dropped_total" in before and before["streamtrain_broker_connections"] >= 0

    got: list[bytes] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"small-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.on_subscribe = lambda c, u, mid, codes, props: subscribed.set()
    small = Properties(PacketTypes.CONNECT)
    small.MaximumPacketSize = 128
    sub.connect("127.0.0.1", mqtt_port, properties=small)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mqtt_port)
    pub.loop_start()
    try:
        sub.subscribe(topic, qos=1)
        assert subscribed.wait(30)
        sent = [b'{"t": 1}', b"x" * 1000, b"y" * 1000, b"z" * 1000, b'{"t": 2}']
        for payload in sent:
            pub.publish(topic, payload, qos=1).wait_for_publish(30)  # PUBACK: the broker accepted each
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert got == [b'{"t": 1}', b'{"t": 2}'], got  # the three large ones never reached the subscriber

        def dropped() -> float:
            return (
                scrape(port)["streamtrain_broker_messages_dropped_total"]
                - before["streamtrain_broker_messages_dropped_total"]
            )

        while dropped() < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        after = scrape(port)
        assert dropped() >= 3, after
        assert (
            after["streamtrain_broker_publishes_received_total"] - before["streamtrain_broker_publishes_received_total"]
            >= 5
        )
    finally:
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
