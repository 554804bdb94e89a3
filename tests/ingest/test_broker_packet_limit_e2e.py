"""The local stack's real HiveMQ CE runs the maximum packet size every StreamTrain broker runs
(``streamtrain.mqtt.BROKER_MAX_PACKET_BYTES``, from the telemetry payload limit): a PUBLISH of exactly that
size is acknowledged and delivered, one byte more and the broker refuses it (MQTT 5 DISCONNECT, reason
0x95 "packet too large") and routes nothing of it."""

from __future__ import annotations

import uuid

import paho.mqtt.client as mqtt
import pytest

from streamtrain.mqtt import BROKER_MAX_PACKET_BYTES, MQTT_HEADER_ALLOWANCE
from streamtrain.telemetry import MAX_PAYLOAD_BYTES
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

PACKET_TOO_LARGE = 0x95


def _varint_len(n: int) -> int:
    size = 1
    while n > 127:
        n //= 128
        size += 1
    return size


def publish_packet_bytes(topic: str, payload_len: int) -> int:
    """Size on the wire of a QoS 1 MQTT 5 PUBLISH without properties, fixed header included."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + payload_len  # topic, packet id, properties length, payload
    return 1 + _varint_len(remaining) + remaining


def payload_for(topic: str, packet_bytes: int) -> bytes:
    n = packet_bytes - publish_packet_bytes(topic, 0)
    while publish_packet_bytes(topic, n) > packet_bytes:
        n -= 1
    assert publish_packet_bytes(topic, n) == packet_bytes
    return b"x" * n


class Client:
    """One MQTT 5 connection on paho's network thread, recording what the broker says to it."""

    def __init__(self, port: int, tag: str):
        self.connack: list = []
        self.disconnects: list = []
        self.received: list[tuple[str, int]] = []
        self.subacks: list = []
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{tag}-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        self.c.on_connect = lambda c, u, flags, reason, props: self.connack.append((reason, props))
        self.c.on_disconnect = lambda c, u, flags, reason, props: self.disconnects.append(reason)
        self.c.on_subscribe = lambda c, u, mid, reasons, props: self.subacks.append(reasons)
        self.c.on_message = lambda c, u, msg: self.received.append((msg.topic, len(msg.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        eventually(lambda: self.connack, "CONNACK", timeout=30, every=0.05)
        assert not self.connack[0][0].is_failure, self.connack[0][0]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_limit_is_twice_the_telemetry_limit_plus_headers():
    assert BROKER_MAX_PACKET_BYTES == 2 * MAX_PAYLOAD_BYTES + MQTT_HEADER_ALLOWANCE
    # A 20 kB reading (the bridge's and the extension's `oversized` e2e cases) still reaches the ingester.
    assert publish_packet_bytes("devices/dev-1/telemetry", 20_100) < BROKER_MAX_PACKET_BYTES


def test_the_broker_refuses_a_packet_over_the_limit_and_passes_one_at_it(local_stack):
    port = local_stack.settings.mqtt_port
    device = f"pkt-{uuid.uuid4().hex[:8]}"
    topic = f"devices/{device}/telemetry"
    watcher = Client(port, "watch")
    publisher = Client(port, "pub")
    try:
        watcher.c.subscribe(topic, qos=1)
        eventually(lambda: watcher.subacks, "SUBACK", timeout=30, every=0.05)
        # The broker announces its limit in the CONNACK (MQTT 5 Maximum Packet Size).
        assert publisher.connack[0][1].MaximumPacketSize == BROKER_MAX_PACKET_BYTES
        reading = payload_for(topic, publish_packet_bytes(topic, MAX_PAYLOAD_BYTES))
        at_limit = payload_for(topic, BROKER_MAX_PACKET_BYTES)
        for payload in (reading, at_limit):
            info = publisher.c.publish(topic, payload, qos=1)
            info.wait_for_publish(30)
            assert info.is_published()
        eventually(
            lambda: sorted(n for _, n in watcher.received) == sorted([len(reading), len(at_limit)]),
            "both acknowledged publishes delivered",
            timeout=30,
            every=0.05,
            explain=lambda: repr(watcher.received),
        )

        over = payload_for(topic, BROKER_MAX_PACKET_BYTES + 1)
        refused = publisher.c.publish(topic, over, qos=1)
        reasons = eventually(lambda: publisher.disconnects, "the broker's DISCONNECT", timeout=30, every=0.05)
        assert reasons[0].value == PACKET_TOO_LARGE, reasons
        assert not refused.is_published()  # no PUBACK

        # Nothing of it was routed: a marker published after it arrives, the oversized packet never does.
        marker = Client(port, "marker")
        try:
            marker.c.publish(topic, b"marker", qos=1).wait_for_publish(30)
        finally:
            marker.close()
        eventually(lambda: (topic, len(b"marker")) in watcher.received, "the marker", timeout=30, every=0.05)
        assert len(over) not in [n for _, n in watcher.received]
        assert len(watcher.received) == 3
    finally:
        publisher.c.loop_stop()
        watcher.close()
