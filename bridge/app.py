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
import json
import select
import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field, SecretStr, model_validator

from streamtrain import ingest_mapping as mappings
from streamtrain import logs, sparkplug, telemetry
from streamtrain.kafka import KafkaHealth, dead_letter_headers, producer_config
from streamtrain.kafka.config import READER_GROUP, client_config
from streamtrain.kafka.reading import watermarks
from streamtrain.lifecycle import StopFlag
from streamtrain.metrics import MetricsServer, zero_labels
from streamtrain.mqtt import MqttTls, connect_properties, make_client, no_delay, tls_pending
from streamtrain.settings import CommonSettings

log = logs.get("bridge")

#: Dead letters keep the payload; beyond this size it is cut (and the header says so).
DEADLETTER_PAYLOAD_LIMIT = 512 * 1024
#: A record Kafka would not take (broker gone past the producer's retries, topic not authorized)
#: is produced again after this pause; its MQTT message stays unacknowledged meanwhile.
RETRY_DELAY_S = 1.0
#: Header of a raw record of a device without seq: the fingerprint of the MQTT message it came from.
FINGERPRINT_HEADER = "streamtrain.mqtt.fingerprint"
#: One log line per this many messages on topics no pattern of the mapping matches (all are counted).
UNMATCHED_LOG_EVERY = 100


class BridgeSettings(CommonSettings, telemetry.IngestLimits, mappings.IngestMappingSettings):
    """Settings of `streamtrain bridge` (env prefix STREAMTRAIN_)."""

    client_id: str = Field(
        default_factory=lambda: f"streamtrain-bridge-{socket.gethostname()}",
        description="MQTT client id; keep it stable so a restart resumes the persistent session",
    )
    share_group: str = Field("streamtrain-bridge", description="Shared subscription group of all bridge processes")
    subscription: str | None = Field(
        None,
        description=(
            "MQTT topic filters, comma-separated, to subscribe instead of the mapping's (e.g. '#'); messages on "
            "topics no pattern matches are dead-lettered as bad_topic, counted and logged (sampled)"
        ),
    )
    redelivery_lookback: int = Field(
        10000,
        ge=0,
        description=(
            "For a mapping whose devices send no seq: the last records of each raw partition read at start to "
            "recognise messages the broker delivers again after a crash (at least receive_maximum x connections)"
        ),
    )
    redelivery_window_s: float = Field(
        300.0,
        ge=0,
        description=(
            "For a mapping without timestamp nor seq: a message identical (topic and payload) to one written this "
            "long ago or less is the broker's redelivery, not a new reading (HiveMQ redelivers a shared "
            "subscription's messages without the DUP flag, so only the content tells); skipped, counted, logged"
        ),
    )
    connections: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "MQTT connections in the shared group, each with its own in-flight window. More is faster "
            "(measured 3.1k -> 5.2k msg/s with 4), but the broker spreads one device's messages over "
            "them, so per-device order in Kafka is kept only with 1"
        ),
    )
    receive_maximum: int = Field(
        1000, ge=1, le=65535, description="Unacknowledged MQTT messages in flight (back-pressure)"
    )
    session_expiry_s: int = Field(
        24 * 3600, description="How long the broker keeps this bridge's session while it is away"
    )
    max_payload_bytes: int = Field(
        telemetry.MAX_PAYLOAD_BYTES, description="Larger payloads are dead-lettered as oversized"
    )
    known_devices: str | None = Field(
        None, description="Comma-separated device ids; others are dead-lettered (default: any)"
    )
    resubscribe_idle_s: float = Field(
        5.0,
        gt=0,
        description=(
            "Send the SUBSCRIBE again after this long without a message and with nothing in flight. HiveMQ CE can "
            "lose track of a shared subscriber that subscribed right after connecting (it then never polls the "
            "shared queue for it again: hivemq-community-edition#558); a SUBSCRIBE makes it poll. Harmless otherwise"
        ),
    )
    sparkplug_rebirth_interval_s: float = Field(
        30.0,
        ge=0,
        description=(
            "Sparkplug B: ask an edge node for its births again (NCMD Node Control/Rebirth) when its data comes "
            "before its NBIRTH, names an unknown alias or skips a seq, at most once per this many seconds; 0 = never"
        ),
    )
    mqtt_username: str | None = Field(
        None, description="The bridge's MQTT identity (role bridge in the broker's users file)"
    )
    mqtt_password: SecretStr | None = Field(None, description="Its password (prefer mqtt_password_file)")
    mqtt_password_file: Path | None = Field(None, description="File holding the password, e.g. a mounted Secret")

    @model_validator(mode="after")
    def _mapping_valid(self) -> "BridgeSettings":
        MqttTls.from_env()  # a CA file that is not there: an invalid setting, said at start
        mapping = self.mapping()  # the mapping with ingest_topics (a bad pattern is an invalid setting)
        if self.connections > 1 and mapping.format == "sparkplug_b":
            # The broker spreads a shared subscription's messages over the connections: one would see an edge
            # node's data without its births, and every seq as a gap.
            raise ValueError("a sparkplug_b mapping needs connections = 1 (births and seqs are per edge node)")
        return self

    def filters(self) -> list[str]:
        if self.subscription:
            return [f.strip() for f in self.subscription.split(",") if f.strip()]
        return self.mapping().subscriptions

    def password(self) -> str | None:
        if self.mqtt_password_file is not None:
            return self.mqtt_password_file.read_text().strip()
        return self.mqtt_password.get_secret_value() if self.mqtt_password else None


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("streamtrain_bridge_received", "MQTT messages received", registry=r)
        self.forwarded = Counter("streamtrain_bridge_forwarded", "Messages delivered to the raw topic", registry=r)
        self.deadlettered = Counter(
            "streamtrain_bridge_deadlettered", "Messages delivered to the dead-letter topic", ["reason"], registry=r
        )
        zero_labels(self.deadlettered, (*telemetry.REASONS, *telemetry.LIMIT_REASONS, *sparkplug.REASONS))
        self.delivery_errors = Counter(
            "streamtrain_bridge_delivery_errors", "Kafka delivery failures (retried)", registry=r
        )
        self.inflight = Gauge("streamtrain_bridge_inflight", "Messages received and not yet acknowledged", registry=r)
        self.unmatched = Counter(
            "streamtrain_bridge_unmatched_topics",
            "Messages on topics no pattern of the ingest mapping matches (dead-lettered as bad_topic)",
            registry=r,
        )
        self.redelivered = Counter(
            "streamtrain_bridge_redelivered_duplicates",
            "Messages delivered again by the broker whose reading is already in the raw topic (acknowledged, not written)",
            registry=r,
        )
        self.sparkplug_messages = Counter(
            "streamtrain_bridge_sparkplug_messages",
            "Sparkplug B messages by type (births, deaths and commands make no reading; invalid: no Sparkplug topic)",
            ["type"],
            registry=r,
        )
        self.sparkplug_seq_gaps = Counter(
            "streamtrain_bridge_sparkplug_seq_gaps",
            "Sparkplug B messages whose seq is not one more than their edge node's last (a message lost or reordered)",
            registry=r,
        )
        self.sparkplug_rebirths = Counter(
            "streamtrain_bridge_sparkplug_rebirth_requests",
            "NCMD Node Control/Rebirth sent to edge nodes whose births the bridge misses",
            registry=r,
        )
        self.resubscribes = Counter(
            "streamtrain_bridge_resubscribes",
            "SUBSCRIBEs sent again after an idle spell (shared-queue poll nudges)",
            registry=r,
        )
        self.latency = Histogram(
            "streamtrain_bridge_delivery_seconds",
            "MQTT receive to Kafka delivery",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )


class _InOrderAcks:
    """Sends PUBACKs in arrival order although Kafka may confirm deliveries out of order."""

    def __init__(self, client) -> None:
        self.client = client
        self.lock = threading.Lock()
        # mid, qos, records still to be delivered (a Sparkplug B message may make several)
        self.pending: collections.OrderedDict[int, tuple[int, int, int]] = collections.OrderedDict()
        self.seq = 0

    def received(self, mid: int, qos: int) -> int:
        with self.lock:
            self.seq += 1
            self.pending[self.seq] = (mid, qos, 1)
            return self.seq

    def expect(self, token: int, records: int) -> None:
        """The message of ``token`` is done once ``records`` deliveries are (1 unless said otherwise)."""
        with self.lock:
            mid, qos, _ = self.pending[token]
            self.pending[token] = (mid, qos, records)

    def done(self, token: int) -> bool:
        """One delivery of the message done; True when it was its last (the message is then acknowledged in order)."""
        with self.lock:
            mid, qos, left = self.pending[token]
            self.pending[token] = (mid, qos, left - 1)
            while self.pending:
                first = next(iter(self.pending))
                mid, qos, left = self.pending[first]
                if left > 0:
                    break
                del self.pending[first]
                if qos > 0:
                    self.client.ack(mid, qos)
            return self.pending.get(token, (0, 0, 0))[2] <= 0

    def __len__(self) -> int:
        return len(self.pending)


class _Link:
    """One MQTT connection of the bridge: its own client id, session, and in-order acks."""

    def __init__(self, client_id: str, bridge: "Bridge") -> None:
        self.client_id = client_id
        self.client = make_client(
            client_id, manual_ack=True, username=bridge.s.mqtt_username, password=bridge.s.password()
        )
        self.client.user_data_set(self)
        self.client.on_connect = bridge._on_connect
        self.client.on_disconnect = bridge._on_disconnect
        self.client.on_message = bridge._on_message
        self.client.on_subscribe = bridge._on_subscribe
        self.acks = _InOrderAcks(self.client)
        self.connected = False
        self.subscribed = False
        self.last_message = time.monotonic()
        self.next_attempt = 0.0
        self.backoff = 0.5


class Bridge:
    def __init__(self, settings: BridgeSettings, stop: StopFlag | None = None) -> None:
        self.s = settings
        self.stop = stop or StopFlag()
        self.metrics = BridgeMetrics()
        self.known = frozenset(d.strip() for d in settings.known_devices.split(",")) if settings.known_devices else None
        self.mapping = settings.mapping()
        self.arrival_seq = mappings.ArrivalSeq()
        #: One value per topic: each device's last channel values (restored from the raw topic at start).
        self.held = mappings.HeldValues(self.mapping.hold_s) if self.mapping.one_value_per_topic else None
        self.sparkplug = (
            sparkplug.SparkplugDecoder(self.mapping, rebirth_interval_s=settings.sparkplug_rebirth_interval_s)
            if self.mapping.format == "sparkplug_b"
            else None
        )
        #: Fingerprints of the messages written to the raw topic (devices without seq), oldest first.
        self.forwarded: collections.OrderedDict[str, float] = collections.OrderedDict()  # -> when written
        self.forwarded_max = max(100_000, 2 * settings.redelivery_lookback)
        self.producer = Producer(
            producer_config(
                settings.kafka_bootstrap,
                **{
                    "client.id": settings.client_id,
                    "queue.buffering.max.messages": 100000,
                    # Every message waits for its delivery before its PUBACK, and the broker sends a
                    # bounded window: throughput = window / latency, so keep latency short.
                    "linger.ms": 1,
                    "error_cb": self._kafka_error,
                },
            )
        )
        ids = (
            [settings.client_id]
            if settings.connections == 1
            else [f"{settings.client_id}-{i}" for i in range(settings.connections)]
        )
        self.links = [_Link(cid, self) for cid in ids]
        self.kafka_health = KafkaHealth()
        self.draining = False
        self.retries: collections.deque[tuple[float, tuple]] = collections.deque()
        self._failure_logged = 0.0

    @property
    def topic_filters(self) -> list[str]:
        return [f"$share/{self.s.share_group}/{f}" for f in self.s.filters()]

    def _subscribe(self, client) -> None:
        client.subscribe([(f, 1) for f in self.topic_filters])

    def _remember(self, fp: str, when: float) -> None:
        self.forwarded.pop(fp, None)
        self.forwarded[fp] = when
        if len(self.forwarded) > self.forwarded_max:
            self.forwarded.popitem(last=False)

    def load_fingerprints(self) -> int:
        """The fingerprints of the newest raw records (devices without seq): a message delivered again after a
        crash, whose reading the last run had written, is then recognised and not written twice."""
        if not self.mapping.derives_seq or not self.s.redelivery_lookback:
            return 0
        try:
            return self._read_fingerprints()
        except (KafkaException, RuntimeError) as exc:
            # Without them a redelivery after a crash is written again (then counted by the preprocessor's
            # de-duplication, or dead-lettered as too_old): say so, and how to fix it, but do not stop ingesting.
            log.warning(
                "redelivery_fingerprints_unavailable",
                topic=self.s.topic_raw,
                error=str(exc),
                fix="grant the bridge's Kafka identity Read on the raw topic",
            )
            return 0

    def _read_fingerprints(self) -> int:
        consumer = Consumer(
            client_config(
                self.s.kafka_bootstrap,
                **{"group.id": READER_GROUP, "enable.auto.commit": False, "isolation.level": "read_committed"},
            )
        )
        loaded = restored = 0
        try:
            md = consumer.list_topics(self.s.topic_raw, timeout=10)
            if md.topics[self.s.topic_raw].error is not None:
                raise RuntimeError(f"topic {self.s.topic_raw}: {md.topics[self.s.topic_raw].error}")
            ends: dict[int, int] = {}
            starts = []
            for p in md.topics[self.s.topic_raw].partitions:
                low, high = watermarks(consumer, TopicPartition(self.s.topic_raw, p))
                if high > low:
                    ends[p] = high
                    starts.append(TopicPartition(self.s.topic_raw, p, max(low, high - self.s.redelivery_lookback)))
            consumer.assign(starts)
            deadline = time.monotonic() + 60
            while ends and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().fatal() or msg.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                        raise KafkaException(msg.error())
                    continue
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
                for name, value in msg.headers() or ():
                    if name == FINGERPRINT_HEADER and value:
                        self._remember(value.decode(), msg.timestamp()[1] / 1000.0)
                        loaded += 1
                        if self.held is not None:
                            restored += self._restore_held(msg.value())
        finally:
            consumer.close()
        log.info(
            "redelivery_fingerprints_loaded", topic=self.s.topic_raw, fingerprints=loaded, unread_partitions=len(ends)
        )
        if self.held is not None:
            log.info("held_values_restored", topic=self.s.topic_raw, readings=restored, devices=len(self.held.devices))
        return loaded

    def _restore_held(self, value: bytes | None) -> int:
        """One value per topic: a reading written before the restart gives its device's last channel values."""
        try:
            record = json.loads(value or b"")
            device, ts = record["device_id"], float(record["ts"])
        except (ValueError, KeyError, TypeError):
            return 0  # not a reading of ours: nothing to restore from it
        channels = {
            k: float(v)
            for k, v in record.items()
            if k not in telemetry.RESERVED and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.held.restore(device, ts, channels)
        return 1

    # ---------------------------------------------------------------- MQTT side
    def _on_connect(self, client, link: _Link, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error(
                "mqtt_refused",
                client_id=link.client_id,
                reason=str(reason_code),
                username=self.s.mqtt_username,
                retry_in_s=link.backoff,
            )
            link.next_attempt = time.monotonic() + link.backoff
            link.backoff = min(link.backoff * 2, 10.0)
            return
        no_delay(client.socket())
        self._subscribe(client)
        link.connected = True
        link.subscribed = False
        link.last_message = time.monotonic()
        link.backoff = 0.5
        log.info(
            "mqtt_connected",
            client_id=link.client_id,
            subscription=self.topic_filters,
            mapping=self.mapping.name,
            session_present=bool(flags.session_present),
        )

    def _on_subscribe(self, client, link: _Link, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("mqtt_subscribe_refused", client_id=link.client_id, reasons=failed)
        elif not link.subscribed:
            link.subscribed = True
            log.info("mqtt_subscribed", client_id=link.client_id, subscription=self.topic_filters)
            # Once more now that the broker has surely finished its connect-time poll (see resubscribe_idle_s).
            self._resubscribe(link)

    def _resubscribe(self, link: _Link) -> None:
        self._subscribe(link.client)
        link.last_message = time.monotonic()
        self.metrics.resubscribes.inc()
        log.debug("mqtt_resubscribed", client_id=link.client_id, subscription=self.topic_filters)

    def _nudge_idle(self) -> None:
        now = time.monotonic()
        for link in self.links:
            if (
                link.subscribed
                and link.connected
                and not len(link.acks)
                and now - link.last_message > self.s.resubscribe_idle_s
            ):
                self._resubscribe(link)

    def _on_disconnect(self, client, link: _Link, flags, reason_code, properties) -> None:
        link.connected = False
        if not self.stop.is_set():
            log.warning("mqtt_disconnected", client_id=link.client_id, reason=str(reason_code))

    def _on_message(self, client, link: _Link, msg) -> None:
        if self.draining:
            return  # not acknowledged: the broker keeps it in the session and delivers it again
        t0 = link.last_message = time.monotonic()
        self.metrics.received.inc()
        self.metrics.inflight.inc()
        token = link.acks.received(msg.mid, msg.qos)
        arrived = time.time()
        if self.sparkplug is not None:
            self._on_sparkplug(link, msg, token, t0, arrived)
            return
        result = mappings.apply(
            self.mapping,
            msg.topic,
            msg.payload,
            arrived,
            max_bytes=self.s.max_payload_bytes,
            known_devices=self.known,
            arrival_seq=self.arrival_seq,
            held=self.held,
        )
        if isinstance(result, telemetry.Reading):
            result = self.s.clock_skew(result.ts, arrived) or result
        elif result.reason == "bad_topic" and self.mapping.match_topic(msg.topic) is None:
            self.metrics.unmatched.inc()
            seen = int(self.metrics.unmatched._value.get())
            if seen % UNMATCHED_LOG_EVERY == 1:
                log.warning("topic_unmatched", topic=msg.topic, mapping=self.mapping.name, unmatched_so_far=seen)
        if isinstance(result, telemetry.Reading):
            headers = [("mqtt.topic", msg.topic.encode())]
            if self.mapping.derives_seq:
                fp = mappings.fingerprint(msg.topic, msg.payload)
                # With a timestamp from the device, the same message is the same reading; with the arrival time,
                # the same message within redelivery_window_s is taken for the broker's redelivery.
                written = self.forwarded.get(fp)
                if written is not None and (
                    self.mapping.device_timestamps or arrived - written <= self.s.redelivery_window_s
                ):
                    self.metrics.redelivered.inc()
                    self.metrics.inflight.dec()
                    log.info(
                        "redelivery_skipped", device=result.device_id, topic=msg.topic, fingerprint=fp, dup=msg.dup
                    )
                    link.acks.done(token)
                    return
                self._remember(fp, arrived)
                headers.append((FINGERPRINT_HEADER, fp.encode()))
            # The record's Kafka timestamp is its arrival (now; the topics append with LogAppendTime anyway), so
            # retention counts from arrival however old the reading is; its event time is the `ts` field.
            self._produce(
                self.s.topic_raw,
                result.device_id.encode(),
                result.to_json(),
                headers,
                link,
                token,
                t0,
                None,
            )
        else:
            device = (
                telemetry.device_from_topic(msg.topic)
                if self.mapping.format == "streamtrain"
                else self.mapping.device_from_topic(msg.topic)
            )
            self._dead_letter(msg, result, device, link, token, t0)

    def _dead_letter(self, msg, result: telemetry.Rejection, device: str | None, link: _Link, token, t0) -> None:
        payload = msg.payload[:DEADLETTER_PAYLOAD_LIMIT]
        detail = (
            result.detail
            if len(msg.payload) <= DEADLETTER_PAYLOAD_LIMIT
            else f"{result.detail}; payload cut to {DEADLETTER_PAYLOAD_LIMIT} of {len(msg.payload)} bytes"
        )
        self._produce(
            self.s.topic_deadletter,
            device.encode() if device else None,
            payload,
            dead_letter_headers(result.reason, f"mqtt:{msg.topic}", detail),
            link,
            token,
            t0,
            result.reason,
        )

    def _on_sparkplug(self, link: _Link, msg, token: int, t0: float, arrived: float) -> None:
        """A Sparkplug B message: DATA as one record per reading, births and deaths remembered and logged."""
        fp = mappings.fingerprint(msg.topic, msg.payload)
        if fp in self.forwarded:  # its readings are written: the broker delivers it again (the device's timestamps)
            self.metrics.redelivered.inc()
            self.metrics.inflight.dec()
            log.info("redelivery_skipped", topic=msg.topic, fingerprint=fp, dup=msg.dup)
            link.acks.done(token)
            return
        outcome = self.sparkplug.apply(
            msg.topic, msg.payload, arrived, max_bytes=self.s.max_payload_bytes, known_devices=self.known
        )
        self.metrics.sparkplug_messages.labels(outcome.message_type).inc()
        for event, fields in outcome.events:
            if event in ("sparkplug_seq_gap", "sparkplug_no_birth"):
                log.warning(event, **fields)
            elif event in ("sparkplug_command_ignored", "sparkplug_host_state_ignored"):
                log.debug(event, **fields)
            else:
                log.info(event, **fields)
        if outcome.seq_gap:
            self.metrics.sparkplug_seq_gaps.inc()
        if outcome.rebirth is not None:
            topic, payload = outcome.rebirth
            link.client.publish(topic, payload, qos=0)
            self.metrics.sparkplug_rebirths.inc()
        rejection = outcome.rejection
        if rejection is None:
            rejection = next((r for r in (self.s.clock_skew(x.ts, arrived) for x in outcome.readings) if r), None)
        if rejection is not None:
            if rejection.reason == "bad_topic" and self.mapping.match_topic(msg.topic) is None:
                self.metrics.unmatched.inc()
            log.warning(
                "sparkplug_refused",
                topic=msg.topic,
                reason=rejection.reason,
                detail=rejection.detail,
                seq_gap=outcome.seq_gap,
            )
            self._dead_letter(msg, rejection, outcome.device_id, link, token, t0)
            return
        if not outcome.readings:  # a birth, a death or a command: nothing to write
            self.metrics.inflight.dec()
            link.acks.done(token)
            return
        self._remember(fp, arrived)
        headers = [("mqtt.topic", msg.topic.encode()), (FINGERPRINT_HEADER, fp.encode())]
        link.acks.expect(token, len(outcome.readings))
        for reading in outcome.readings:
            self._produce(
                self.s.topic_raw, reading.device_id.encode(), reading.to_json(), headers, link, token, t0, None
            )

    def _retry_later(self, args: tuple, error) -> None:
        """Idempotent producer retries internally; reaching here means it gave up (or the record was refused
        outright): produce again after a pause, logging at most once a second."""
        self.metrics.delivery_errors.inc()
        self.kafka_health.up = False
        self.retries.append((time.monotonic() + RETRY_DELAY_S, args))
        now = time.monotonic()
        if now - self._failure_logged >= 1.0:
            self._failure_logged = now
            log.warning(
                "kafka_delivery_failed",
                topic=args[0],
                error=str(error),
                action=f"retry in {RETRY_DELAY_S}s",
                waiting=len(self.retries),
            )

    def _retry_due(self) -> None:
        now = time.monotonic()
        while self.retries and self.retries[0][0] <= now and not self.draining:
            self._produce(*self.retries.popleft()[1])

    def _produce(self, topic, key, value, headers, link: _Link, token, t0, reason) -> None:
        args = (topic, key, value, headers, link, token, t0, reason)

        def delivered(err, _msg):
            if err is not None:
                self._retry_later(args, err)
                return
            self.kafka_health.up = True
            if reason is None:
                self.metrics.forwarded.inc()
            else:
                self.metrics.deadlettered.labels(reason).inc()
            self.metrics.latency.observe(time.monotonic() - t0)
            if link.acks.done(token):
                self.metrics.inflight.dec()

        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
                return
            except BufferError:
                # Local queue full: serve deliveries until there is room; MQTT waits with us.
                self.producer.poll(0.005)
            except KafkaException as exc:
                self._retry_later(args, exc.args[0])
                return

    def _kafka_error(self, err: KafkaError) -> None:
        self.kafka_health.error_cb(err)

    # ---------------------------------------------------------------- lifecycle
    def ready(self) -> bool:
        return all(link.connected for link in self.links) and self.kafka_health.ok(
            lambda: self.producer.list_topics(self.s.topic_raw, timeout=2)
        )

    def _try_connect(self, link: _Link) -> None:
        now = time.monotonic()
        if now < link.next_attempt:
            return
        try:
            link.client.connect(
                self.s.mqtt_host,
                self.s.mqtt_port,
                keepalive=30,
                clean_start=False,
                properties=connect_properties(self.s.session_expiry_s, self.s.receive_maximum),
            )
        except OSError as exc:
            log.warning("mqtt_connect_failed", client_id=link.client_id, error=str(exc), retry_in_s=link.backoff)
            link.next_attempt = now + link.backoff
            link.backoff = min(link.backoff * 2, 10.0)

    def run(self) -> None:
        """One thread drives everything: the MQTT sockets and Kafka delivery callbacks.

        (With paho's own network thread, every PUBACK sent from the Kafka callback thread wakes
        it through a socket pair and the two threads contend for the GIL.)
        """
        server = (
            MetricsServer(self.metrics.registry, self.s.metrics_port, self.ready).start()
            if self.s.metrics_port
            else None
        )
        log.info(
            "bridge_started",
            mqtt=f"{self.s.mqtt_host}:{self.s.mqtt_port}",
            kafka=self.s.kafka_bootstrap,
            raw_topic=self.s.topic_raw,
            deadletter_topic=self.s.topic_deadletter,
            connections=len(self.links),
            metrics_port=server.port if server else None,
            mapping=self.mapping.name,
            subscription=self.s.filters(),
        )
        try:
            self.load_fingerprints()
            while not self.stop.is_set():
                for link in self.links:
                    if link.client.socket() is None:
                        link.connected = False
                        self._try_connect(link)
                self._pump(0.005)
                self._retry_due()
                self._nudge_idle()
        finally:
            self._shutdown(server)

    def _pump(self, timeout: float) -> None:
        by_sock = {link.client.socket(): link for link in self.links if link.client.socket() is not None}
        if not by_sock:
            self.producer.poll(timeout)
            return
        wants = [sock for sock, link in by_sock.items() if link.client.want_write()]
        pending = [sock for sock in by_sock if tls_pending(sock)]  # decrypted already: select cannot tell
        readable, _, _ = select.select(list(by_sock), wants, [], 0 if pending else timeout)
        for sock in dict.fromkeys([*pending, *readable]):
            client = by_sock[sock].client
            for _ in range(1000):  # paho reads one packet per call
                if client.loop_read() != mqtt.MQTT_ERR_SUCCESS or client.socket() is None:
                    break
                if not (tls_pending(sock) or select.select([sock], [], [], 0)[0]):
                    break
        self.producer.poll(0)
        for link in by_sock.values():
            if link.client.socket() is not None and link.client.want_write():
                link.client.loop_write()
            link.client.loop_misc()

    def _shutdown(self, server) -> None:
        inflight = sum(len(link.acks) for link in self.links)
        log.info(
            "bridge_stopping",
            reason=self.stop.signal_name or "stop requested",
            inflight=inflight,
            unacknowledged_for_redelivery=len(self.retries),
        )
        # Stop taking messages, deliver what was accepted, let the acks go out, then disconnect.
        # No unsubscribe: the persistent session must keep queueing while the bridge is away.
        self.draining = True
        remaining = self.producer.flush(30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self._pump(0.01)  # writes the last PUBACKs
            if not any(len(link.acks) or link.client.want_write() for link in self.links):
                break
        for link in self.links:
            link.client.disconnect()
            if link.client.socket() is not None and link.client.want_write():
                link.client.loop_write()
        if server:
            server.stop()
        log.info(
            "bridge_stopped",
            undelivered=remaining,
            unacked=sum(len(link.acks) for link in self.links),
            forwarded=self.metrics.forwarded._value.get(),
            received=self.metrics.received._value.get(),
        )
