"""MQTT plumbing on paho-mqtt 2.x shared by the simulator, the bridge and tests.

QoS 1 publishing stalls under load when nothing bounds the messages awaiting PUBACK, so
``AsyncPublisher`` puts an asyncio semaphore in front of paho: at most ``max_inflight``
messages per connection are unacknowledged, and ``publish`` waits (back-pressure) otherwise.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamtrain.telemetry import MAX_PAYLOAD_BYTES

#: What an MQTT PUBLISH carries besides its payload: fixed header (at most 5 bytes), topic name (2 + its
#: length: ``devices/<64-char id>/telemetry`` is 84, Sparkplug and mapped topics stay well under the rest),
#: packet identifier (2) and MQTT 5 properties.
MQTT_HEADER_ALLOWANCE = 1024
#: The managed broker's maximum packet size (HiveMQ's ``max-packet-size``; its own default is about 256 MB).
#: Twice the telemetry payload limit plus the headers: a reading somewhat over the limit still reaches the
#: bridge or the ingest extension, which dead-letters it as ``oversized`` with its reason and counts it;
#: anything larger is refused by the broker itself (MQTT 5 DISCONNECT 0x95 "packet too large", MQTT 3 a
#: closed connection) before it is buffered, so one client cannot make the broker hold huge packets.
BROKER_MAX_PACKET_BYTES = 2 * MAX_PAYLOAD_BYTES + MQTT_HEADER_ALLOWANCE


class MqttTlsError(ValueError):
    """The MQTT TLS settings cannot work (a CA file that is not there)."""


class MqttTls(BaseSettings):
    """TLS of every MQTT client of a process, from the environment like KafkaSecurity: the simulator's
    devices, the bridge's links, ``ingest check`` and the local stack's readiness probe alike."""

    model_config = SettingsConfigDict(env_prefix="STREAMTRAIN_MQTT_", extra="ignore")

    ca_file: Path | None = Field(
        None,
        description="PEM file of the CA that signed the MQTT broker's certificate: every MQTT client connects "
        "over TLS and checks the broker's certificate and host name against it; unset: plain TCP",
    )

    @classmethod
    def from_env(cls) -> "MqttTls":
        """The process's MQTT TLS; a CA file that is not there is a MqttTlsError (a ValueError: the settings
        of programs that speak MQTT call this in a validator, so it ends them with exit CONFIG at start)."""
        tls = cls()
        if tls.ca_file is not None and not tls.ca_file.is_file():
            raise MqttTlsError(f"MQTT CA file {tls.ca_file} does not exist or is not a file (STREAMTRAIN_MQTT_CA_FILE)")
        return tls


def tls_pending(sock) -> bool:
    """The TLS layer holds decrypted bytes that the socket's readiness no longer shows: read them first."""
    pending = getattr(sock, "pending", None)
    return bool(pending and pending())


def read_available(client: mqtt.Client) -> int:
    """``loop_read``, again while TLS holds decrypted bytes (one TLS record may carry many PUBACKs, and select
    would not wake up for them until more bytes arrive)."""
    rc = client.loop_read()
    while rc == mqtt.MQTT_ERR_SUCCESS and tls_pending(client.socket()):
        rc = client.loop_read()
    return rc


def hivemq_config_xml(
    port: int, bind: str, max_packet_bytes: int = BROKER_MAX_PACKET_BYTES, tls: tuple[str, str] | None = None
) -> str:
    """HiveMQ CE's config.xml, the one every StreamTrain broker runs: the local stack (bind 127.0.0.1 and a
    free port), the launcher image (images/hivemq-config.xml: bind 0.0.0.0, port 1883; a test keeps the two
    equal) and the operator's managed broker (a ConfigMap with the same text). With ``tls`` (a PKCS12
    keystore's path and password) the one listener speaks TLS only.

    File persistence keeps sessions and queued QoS 1 messages across broker restarts.
    The queue must hold a bridge outage's worth of messages for the shared subscription."""
    if tls is None:
        listener = f"""        <tcp-listener>
            <port>{port}</port>
            <bind-address>{bind}</bind-address>
        </tcp-listener>"""
    else:
        store, password = tls
        listener = f"""        <tls-tcp-listener>
            <port>{port}</port>
            <bind-address>{bind}</bind-address>
            <tls>
                <keystore>
                    <path>{store}</path>
                    <password>{password}</password>
                    <private-key-password>{password}</private-key-password>
                </keystore>
                <client-authentication-mode>NONE</client-authentication-mode>
            </tls>
        </tls-tcp-listener>"""
    return f"""<?xml version="1.0"?>
<hivemq>
    <listeners>
{listener}
    </listeners>
    <mqtt>
        <packets>
            <max-packet-size>{max_packet_bytes}</max-packet-size>
        </packets>
        <queued-messages>
            <max-queue-size>2000000</max-queue-size>
            <strategy>discard</strategy>
        </queued-messages>
        <receive-maximum>
            <server-receive-maximum>1000</server-receive-maximum>
        </receive-maximum>
    </mqtt>
    <persistence>
        <mode>file</mode>
    </persistence>
    <anonymous-usage-statistics>
        <enabled>false</enabled>
    </anonymous-usage-statistics>
</hivemq>
"""


def make_client(
    client_id: str | None = None,
    *,
    manual_ack: bool = False,
    protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
    username: str | None = None,
    password: str | None = None,
) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"st-{uuid.uuid4().hex[:12]}",
        protocol=protocol,
        manual_ack=manual_ack,
    )
    if username is not None:
        client.username_pw_set(username, password)
    tls = MqttTls.from_env()
    if tls.ca_file is not None:
        client.tls_set(ca_certs=str(tls.ca_file))  # the broker's chain and host name checked (paho's default)
    return client


def connect_properties(session_expiry_s: int = 0, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def no_delay(sock) -> None:
    """Disable Nagle's algorithm: paho does not, and small PUBACKs then wait on TCP acks
    (measured: QoS 1 delivery to one subscriber 1,000 msg/s with Nagle, 5,500 without)."""
    if sock is not None and hasattr(sock, "setsockopt"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttError(RuntimeError):
    pass


def wait_connected(client: mqtt.Client, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise MqttError(f"MQTT connection not established within {timeout:.0f}s")
        time.sleep(0.02)


class AsyncPublisher:
    """One MQTT connection driven by the asyncio loop itself, with bounded QoS 1 in-flight messages.

    paho's own network thread makes every publish wake it through a socket pair, and the two
    threads then fight over the GIL (measured: ~70 us per message). Driving paho's socket from
    the event loop (``loop_read`` / ``loop_write`` on readiness) keeps everything on one thread.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        max_inflight: int = 500,
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.qos = host, port, qos
        self.max_inflight = max_inflight
        # MQTT 3.1.1 for devices: a v5 PUBACK costs paho a Properties and a ReasonCode object each.
        self.client = make_client(client_id, username=username, password=password, protocol=mqtt.MQTTv311)
        # The semaphore bounds in-flight messages; paho's own limit (0 = off) would rescan its
        # whole message table on every PUBACK (measured as the top cost at 500 in flight).
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_socket_open = self._on_socket_open
        self.client.on_socket_close = self._on_socket_close
        self.client.on_socket_register_write = self._on_register_write
        self.client.on_socket_unregister_write = self._on_unregister_write
        self.published = 0
        self.acked = 0
        self.connected = asyncio.Event()
        self.refused_reason: str | None = None
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._all_acked: asyncio.Event | None = None
        self._misc: asyncio.Task | None = None

    # socket readiness -> paho
    def _on_socket_open(self, client, userdata, sock) -> None:
        no_delay(sock)
        self._loop.add_reader(sock, read_available, client)

    def _on_socket_close(self, client, userdata, sock) -> None:
        if sock.fileno() >= 0:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _on_register_write(self, client, userdata, sock) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, client, userdata, sock) -> None:
        if sock.fileno() >= 0:
            self._loop.remove_writer(sock)

    async def _housekeeping(self) -> None:
        """Keep-alive pings, retries, and reconnection with backoff after the broker goes away."""
        delay = 0.5
        while not self.closing:
            await asyncio.sleep(0.5)
            rc = self.client.loop_misc()
            if rc == mqtt.MQTT_ERR_NO_CONN and not self.closing:
                try:
                    self.client.reconnect()
                    delay = 0.5
                except OSError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)

    # paho callbacks (on the loop thread)
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
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
        try:
            # A loopback/LAN TCP connect is quick; doing it on the loop thread keeps paho single-threaded.
            self.client.connect(self.host, self.port, 30)
        except OSError as exc:
            raise MqttError(f"could not connect to MQTT broker {self.host}:{self.port}: {exc}") from None
        self._misc = asyncio.create_task(self._housekeeping())
        deadline = time.monotonic() + timeout
        while not self.connected.is_set():
            if self.refused_reason or time.monotonic() > deadline:
                await self.close()  # no reconnect attempts in the background after a refusal
                if self.refused_reason:
                    raise MqttError(
                        f"MQTT broker {self.host}:{self.port} refused the connection: {self.refused_reason}"
                    )
                raise MqttError(f"could not connect to MQTT broker {self.host}:{self.port} within {timeout:.0f}s")
            await asyncio.sleep(0.01)

    async def publish(self, topic: str, payload: bytes) -> None:
        await self._slots.acquire()
        self.published += 1
        self._all_acked.clear()
        info = self.client.publish(topic, payload, qos=self.qos)
        if self.qos == 0 or info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # QoS 0 has no PUBACK; a failed call will never be acknowledged either.
            self._on_publish(None, None, info.mid, None, None)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise MqttError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    async def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every published message is acknowledged by the broker."""
        try:
            await asyncio.wait_for(self._all_acked.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        self.closing = True
        if self._misc:
            self._misc.cancel()
        self.client.disconnect()
        deadline = time.monotonic() + 2
        while self.client.socket() is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the writer sends DISCONNECT, then paho closes the socket
