"""MQTT plumbing on paho-mqtt 2.x shared by the simulator, the bridge and tests.

QoS 1 publishing stalls under load when nothing bounds the messages awaiting PUBACK, so
``AsyncPublisher`` puts an asyncio semaphore in front of paho: at most ``max_inflight``
messages per connection are unacknowledged, and ``publish`` waits (back-pressure) otherwise.
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes


def make_client(client_id: str | None = None, *, clean_start: bool = True, manual_ack: bool = False,
                username: str | None = None, password: str | None = None) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"st-{uuid.uuid4().hex[:12]}",
                         protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if username is not None:
        client.username_pw_set(username, password)
    return client


def connect_properties(session_expiry_s: int = 0, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


class MqttError(RuntimeError):
    pass


def wait_connected(client: mqtt.Client, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise MqttError(f"MQTT connection not established within {timeout:.0f}s")
        time.sleep(0.02)


class AsyncPublisher:
    """One MQTT connection used from asyncio, with bounded QoS 1 in-flight messages."""

    def __init__(self, host: str, port: int, *, client_id: str | None = None, max_inflight: int = 500,
                 qos: int = 1, username: str | None = None, password: str | None = None) -> None:
        self.host, self.port, self.qos = host, port, qos
        self.max_inflight = max_inflight
        self.client = make_client(client_id, username=username, password=password)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.published = 0
        self.acked = 0
        self.connected = threading.Event()
        self.refused_reason: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._all_acked: asyncio.Event | None = None

    # paho network thread -> asyncio loop
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._loop.call_soon_threadsafe(self._acked)

    def _acked(self) -> None:
        self.acked += 1
        self._slots.release()
        if self.acked >= self.published:
            self._all_acked.set()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused_reason = str(reason_code)
        else:
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()

    async def connect(self, timeout: float = 15.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.max_inflight)
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while not self.connected.is_set():
            if self.refused_reason:
                raise MqttError(f"MQTT broker {self.host}:{self.port} refused the connection: {self.refused_reason}")
            if time.monotonic() > deadline:
                raise MqttError(f"could not connect to MQTT broker {self.host}:{self.port} within {timeout:.0f}s")
            await asyncio.sleep(0.02)

    async def publish(self, topic: str, payload: bytes) -> None:
        await self._slots.acquire()
        self.published += 1
        self._all_acked.clear()
        info = self.client.publish(topic, payload, qos=self.qos)
        if self.qos == 0 or info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # QoS 0 has no PUBACK; a failed call will never be acknowledged either.
            self._acked()
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise MqttError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    async def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every published message is acknowledged by the broker."""
        try:
            await asyncio.wait_for(self._all_acked.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
