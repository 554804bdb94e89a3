"""MQTT -> Kafka bridge, at least once end to end.

A shared subscription spreads devices' messages over every bridge process. Each message is
validated; good ones go to the raw topic keyed by device id, bad ones to the dead-letter topic
with the reason in headers. The MQTT PUBACK is sent only after Kafka confirms delivery (paho
``manual_ack``), in the order the messages arrived, so a crash leaves unacknowledged messages
in the broker's persistent session to be delivered again. MQTT 5 Receive Maximum bounds the
messages in flight, which is the back-pressure towards the broker under overload.
"""
from __future__ import annotations

import collections
import socket
import threading
import time

from confluent_kafka import KafkaError, Producer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field

from streamtrain import logs, telemetry
from streamtrain.kafka import dead_letter_headers, producer_config
from streamtrain.lifecycle import StopFlag
from streamtrain.metrics import MetricsServer
from streamtrain.mqtt import connect_properties, make_client, no_delay
from streamtrain.settings import CommonSettings

log = logs.get("bridge")

#: Dead letters keep the payload; beyond this size it is cut (and the header says so).
DEADLETTER_PAYLOAD_LIMIT = 512 * 1024


class BridgeSettings(CommonSettings):
    """Settings of `streamtrain bridge` (env prefix STREAMTRAIN_)."""

    client_id: str = Field(default_factory=lambda: f"streamtrain-bridge-{socket.gethostname()}",
                           description="MQTT client id; keep it stable so a restart resumes the persistent session")
    share_group: str = Field("streamtrain-bridge", description="Shared subscription group of all bridge processes")
    subscription: str = Field("devices/+/telemetry", description="MQTT topic filter of device telemetry")
    receive_maximum: int = Field(1000, ge=1, le=65535, description="Unacknowledged MQTT messages in flight (back-pressure)")
    session_expiry_s: int = Field(24 * 3600, description="How long the broker keeps this bridge's session while it is away")
    max_payload_bytes: int = Field(telemetry.MAX_PAYLOAD_BYTES, description="Larger payloads are dead-lettered as oversized")
    known_devices: str | None = Field(None, description="Comma-separated device ids; others are dead-lettered (default: any)")


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("streamtrain_bridge_received", "MQTT messages received", registry=r)
        self.forwarded = Counter("streamtrain_bridge_forwarded", "Messages delivered to the raw topic", registry=r)
        self.deadlettered = Counter("streamtrain_bridge_deadlettered", "Messages delivered to the dead-letter topic",
                                    ["reason"], registry=r)
        self.delivery_errors = Counter("streamtrain_bridge_delivery_errors", "Kafka delivery failures (retried)", registry=r)
        self.inflight = Gauge("streamtrain_bridge_inflight", "Messages received and not yet acknowledged", registry=r)
        self.latency = Histogram("streamtrain_bridge_delivery_seconds", "MQTT receive to Kafka delivery",
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10), registry=r)


class _InOrderAcks:
    """Sends PUBACKs in arrival order although Kafka may confirm deliveries out of order."""

    def __init__(self, client) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.pending: collections.OrderedDict[int, bool] = collections.OrderedDict()
        self.seq = 0

    def received(self, mid: int, qos: int) -> int:
        with self.lock:
            self.seq += 1
            self.pending[self.seq] = (mid, qos, False)
            return self.seq

    def done(self, token: int) -> None:
        with self.lock:
            mid, qos, _ = self.pending[token]
            self.pending[token] = (mid, qos, True)
            while self.pending:
                first = next(iter(self.pending))
                mid, qos, ok = self.pending[first]
                if not ok:
                    break
                del self.pending[first]
                if qos > 0:
                    self.client.ack(mid, qos)

    def __len__(self) -> int:
        return len(self.pending)


class Bridge:
    def __init__(self, settings: BridgeSettings, stop: StopFlag | None = None) -> None:
        self.s = settings
        self.stop = stop or StopFlag()
        self.metrics = BridgeMetrics()
        self.known = frozenset(d.strip() for d in settings.known_devices.split(",")) if settings.known_devices else None
        self.producer = Producer(producer_config(settings.kafka_bootstrap, **{
            "client.id": settings.client_id,
            "queue.buffering.max.messages": 100000,
            "linger.ms": 10,
            "error_cb": self._kafka_error,
        }))
        self.client = make_client(settings.client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.acks = _InOrderAcks(self.client)
        self.mqtt_connected = threading.Event()
        self.kafka_ok = True
        self.draining = False

    # ---------------------------------------------------------------- MQTT side (paho thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt_refused", reason=str(reason_code))
            return
        no_delay(client.socket())
        topic = f"$share/{self.s.share_group}/{self.s.subscription}"
        client.subscribe(topic, qos=1)
        self.mqtt_connected.set()
        log.info("mqtt_connected", client_id=self.s.client_id, subscription=topic,
                 session_present=bool(flags.session_present))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("mqtt_subscribe_refused", reasons=failed)
        else:
            log.info("mqtt_subscribed", subscription=f"$share/{self.s.share_group}/{self.s.subscription}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.mqtt_connected.clear()
        if not self.stop.is_set():
            log.warning("mqtt_disconnected", reason=str(reason_code))

    def _on_message(self, client, userdata, msg) -> None:
        if self.draining:
            return  # not acknowledged: the broker keeps it in the session and delivers it again
        t0 = time.monotonic()
        self.metrics.received.inc()
        self.metrics.inflight.inc()
        token = self.acks.received(msg.mid, msg.qos)
        result = telemetry.validate(msg.payload, msg.topic, max_bytes=self.s.max_payload_bytes, known_devices=self.known)
        if isinstance(result, telemetry.Reading):
            self._produce(self.s.topic_raw, result.device_id.encode(), result.to_json(),
                          [("mqtt.topic", msg.topic.encode())], token, t0, None)
        else:
            payload = msg.payload[:DEADLETTER_PAYLOAD_LIMIT]
            detail = result.detail if len(msg.payload) <= DEADLETTER_PAYLOAD_LIMIT else \
                f"{result.detail}; payload cut to {DEADLETTER_PAYLOAD_LIMIT} of {len(msg.payload)} bytes"
            device = telemetry.device_from_topic(msg.topic)
            self._produce(self.s.topic_deadletter, device.encode() if device else None, payload,
                          dead_letter_headers(result.reason, f"mqtt:{msg.topic}", detail), token, t0, result.reason)

    def _produce(self, topic, key, value, headers, token, t0, reason) -> None:
        def delivered(err, _msg):
            if err is not None:
                # Idempotent producer retries internally; reaching here means it gave up: try again.
                self.metrics.delivery_errors.inc()
                self.kafka_ok = False
                log.warning("kafka_delivery_failed", topic=topic, error=str(err), action="retry")
                self._produce(topic, key, value, headers, token, t0, reason)
                return
            self.kafka_ok = True
            if reason is None:
                self.metrics.forwarded.inc()
            else:
                self.metrics.deadlettered.labels(reason).inc()
            self.metrics.latency.observe(time.monotonic() - t0)
            self.metrics.inflight.dec()
            self.acks.done(token)

        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
                return
            except BufferError:
                # Local queue full: wait for deliveries (the poll thread runs them); MQTT waits with us.
                time.sleep(0.005)

    def _kafka_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.kafka_ok = False
        log.warning("kafka_error", error=str(err))

    # ---------------------------------------------------------------- lifecycle
    def ready(self) -> bool:
        return self.mqtt_connected.is_set() and self.kafka_ok

    def run(self) -> None:
        server = MetricsServer(self.metrics.registry, self.s.metrics_port, self.ready).start() \
            if self.s.metrics_port else None
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.connect_async(self.s.mqtt_host, self.s.mqtt_port, keepalive=30, clean_start=False,
                                  properties=connect_properties(self.s.session_expiry_s, self.s.receive_maximum))
        self.client.loop_start()
        log.info("bridge_started", mqtt=f"{self.s.mqtt_host}:{self.s.mqtt_port}", kafka=self.s.kafka_bootstrap,
                 raw_topic=self.s.topic_raw, deadletter_topic=self.s.topic_deadletter,
                 metrics_port=server.port if server else None)
        try:
            while not self.stop.is_set():
                self.producer.poll(0.05)
        finally:
            self._shutdown(server)

    def _shutdown(self, server) -> None:
        log.info("bridge_stopping", reason=self.stop.signal_name or "stop requested", inflight=len(self.acks))
        # Stop taking messages, deliver what was accepted, let the acks go out, then disconnect.
        # No unsubscribe: the persistent session must keep queueing while the bridge is away.
        self.draining = True
        remaining = self.producer.flush(30)
        deadline = time.monotonic() + 5
        while len(self.acks) and time.monotonic() < deadline:
            self.producer.poll(0.05)
        time.sleep(0.2)  # the paho thread writes the last PUBACKs
        self.client.disconnect()
        self.client.loop_stop()
        if server:
            server.stop()
        log.info("bridge_stopped", undelivered=remaining, unacked=len(self.acks),
                 forwarded=self.metrics.forwarded._value.get(), received=self.metrics.received._value.get())
