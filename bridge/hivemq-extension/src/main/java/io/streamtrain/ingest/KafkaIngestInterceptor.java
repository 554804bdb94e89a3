package io.streamtrain.ingest;

import com.hivemq.extension.sdk.api.async.Async;
import com.hivemq.extension.sdk.api.async.TimeoutFallback;
import com.hivemq.extension.sdk.api.interceptor.publish.PublishInboundInterceptor;
import com.hivemq.extension.sdk.api.interceptor.publish.parameter.PublishInboundInput;
import com.hivemq.extension.sdk.api.interceptor.publish.parameter.PublishInboundOutput;
import com.hivemq.extension.sdk.api.packets.general.Qos;
import com.hivemq.extension.sdk.api.packets.publish.AckReasonCode;
import com.hivemq.extension.sdk.api.services.Services;
import com.hivemq.extension.sdk.api.services.builder.Builders;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeader;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BiConsumer;

/**
 * Every PUBLISH on a topic of the ingest mapping (devices/+/telemetry with the default preset streamtrain):
 * mapped to a reading as the bridge maps it ({@link IngestMapping}), validated, written to Kafka (raw topic keyed by device id, or
 * the dead-letter topic with the reason in headers), and only then acknowledged. ack.mode=puback (default):
 * the PUBACK waits in {@link PubackGate}; ack.mode=async: it waits in HiveMQ's async output of this
 * interceptor (one message per connection at a time). A failed or late delivery is never acknowledged:
 * the client is disconnected (MQTT 5 in async mode: an error PUBACK), so it sends the message again.
 * A PUBLISH on a topic no pattern of the mapping matches is counted, logged (the first and then every
 * {@value #UNMATCHED_LOG_EVERY}th) and left to HiveMQ as before: not written to Kafka.
 *
 * <p>Sparkplug B (format sparkplug_b): each message goes through one {@link SparkplugDecoder} for the extension,
 * which keeps births and seqs per edge node; a DATA message may make several readings, written as several
 * records, and its PUBACK waits for all of them. Births, deaths and commands make none (commands and host states
 * are always delivered onward: they are for edge nodes and host applications). A rebirth request (NCMD) is
 * published through HiveMQ's publish service.
 */
final class KafkaIngestInterceptor implements PublishInboundInterceptor {
    /** Dead letters keep the payload; beyond this size it is cut (bridge/app.py DEADLETTER_PAYLOAD_LIMIT). */
    static final int DEADLETTER_PAYLOAD_LIMIT = 512 * 1024;
    /** One log line per this many publishes on topics the mapping does not take (all are counted). */
    static final long UNMATCHED_LOG_EVERY = 1000;
    /** Sparkplug B: one log line per this many seq gaps, and per this many data before a birth (all counted). */
    static final long SPARKPLUG_LOG_EVERY = 100;
    /** Edge nodes whose births are kept; beyond, the least recent is forgotten (Python's SparkplugDecoder). */
    static final int SPARKPLUG_MAX_NODES = 100_000;

    private final IngestSettings settings;
    private final IngestMapping mapping;
    private final boolean streamtrainFormat;
    private final IngestMapping.ArrivalSeq arrivalSeq = new IngestMapping.ArrivalSeq(200_000);
    /** One value per topic: the last value of each device's channels (kept in memory: a restart starts afresh). */
    private final IngestMapping.HeldValues held;
    private final AtomicLong unmatchedSeen = new AtomicLong();
    /** Format sparkplug_b: the decoder of every edge node; null otherwise. */
    private final SparkplugDecoder sparkplug;
    private final AtomicLong seqGapsSeen = new AtomicLong();
    private final AtomicLong noBirthSeen = new AtomicLong();
    /** Publishes a rebirth request (topic, payload): HiveMQ's publish service; replaceable in tests. */
    BiConsumer<String, byte[]> rebirthPublisher = KafkaIngestInterceptor::publishRebirth;
    private final Producer<byte[], byte[]> producer;
    private final IngestMetrics metrics;
    private final Semaphore inflight;
    /** ack.mode=puback: the outbound PUBACK interceptor that waits for Kafka; null in ack.mode=async. */
    private final PubackGate gate;
    private final AtomicLong lastFailureLog = new AtomicLong();
    volatile boolean kafkaUp = true;

    KafkaIngestInterceptor(IngestSettings settings, Producer<byte[], byte[]> producer, IngestMetrics metrics,
                           PubackGate gate) {
        this.settings = settings;
        this.gate = gate;
        this.mapping = settings.mapping();
        this.held = new IngestMapping.HeldValues(mapping.holdS, 200_000);
        this.streamtrainFormat = mapping.format.equals("streamtrain");
        this.producer = producer;
        this.metrics = metrics;
        this.inflight = new Semaphore(settings.maxInflight());
        this.sparkplug = mapping.format.equals("sparkplug_b")
                ? new SparkplugDecoder(mapping, settings.sparkplugRebirthIntervalS(), SPARKPLUG_MAX_NODES) : null;
    }

    /** MQTT topic filter devices/+/telemetry: what the Python bridge subscribes to. */
    static boolean isTelemetry(String topic) {
        int a = topic.indexOf('/');
        int b = a < 0 ? -1 : topic.indexOf('/', a + 1);
        return a == 7 && topic.startsWith("devices/") && b >= 0 && topic.indexOf('/', b + 1) < 0
                && topic.regionMatches(b + 1, "telemetry", 0, 9) && topic.length() == b + 10;
    }

    @Override
    public void onInboundPublish(PublishInboundInput input, PublishInboundOutput output) {
        String topic = input.getPublishPacket().getTopic();
        if (!(streamtrainFormat ? isTelemetry(topic) : mapping.subscribed(topic))) {
            unmatched(topic, input.getClientInformation().getClientId());
            return;  // not device telemetry: HiveMQ handles it as usual
        }
        long t0 = System.nanoTime();
        metrics.received.inc();
        byte[] payload = input.getPublishPacket().getPayload().map(KafkaIngestInterceptor::bytes).orElse(new byte[0]);
        Instant now = Instant.now();
        double arrived = now.getEpochSecond() + now.getNano() / 1e9;
        if (sparkplug != null) {
            sparkplug(input, output, topic, payload, arrived, t0);
            return;
        }
        TelemetryValidator.Result result = mapping.apply(topic, payload, arrived, settings.maxPayloadBytes(),
                settings.knownDevices(), arrivalSeq, held);
        if (result instanceof TelemetryValidator.Accepted ok) {
            send(input, output, List.of(rawRecord(topic, ok)), null, t0);
        } else {
            TelemetryValidator.Rejected bad = (TelemetryValidator.Rejected) result;
            send(input, output, List.of(refused(input, topic, payload, bad, mapping.deviceFromTopic(topic))),
                    bad.reason(), t0);
        }
    }

    private ProducerRecord<byte[], byte[]> rawRecord(String topic, TelemetryValidator.Accepted ok) {
        return new ProducerRecord<>(settings.topicRaw(), null, ok.deviceId().getBytes(StandardCharsets.UTF_8),
                ok.json(), List.of(new RecordHeader("mqtt.topic", topic.getBytes(StandardCharsets.UTF_8))));
    }

    /** The dead letter of a refused message, counted as unmatched when no pattern takes its topic, and logged. */
    private ProducerRecord<byte[], byte[]> refused(PublishInboundInput input, String topic, byte[] payload,
                                                   TelemetryValidator.Rejected bad, String device) {
        if (bad.reason().equals("bad_topic") && mapping.matchTopic(topic) == null) {
            unmatched(topic, input.getClientInformation().getClientId());  // e.g. an empty level: as the bridge counts
        }
        Log.event("message_deadlettered", "reason", bad.reason(), "detail", bad.detail(), "topic", topic,
                "client_id", input.getClientInformation().getClientId(), "bytes", String.valueOf(payload.length));
        return deadLetter(topic, payload, bad, device);
    }

    /** A Sparkplug B message: its readings as records (or its dead letter), its events logged, a rebirth asked. */
    private void sparkplug(PublishInboundInput input, PublishInboundOutput output, String topic, byte[] payload,
                           double arrived, long t0) {
        SparkplugDecoder.Outcome out = sparkplug.apply(topic, payload, arrived, settings.maxPayloadBytes(),
                settings.knownDevices());
        noted(out);
        if (out.rejection != null) {
            send(input, output, List.of(refused(input, topic, payload, out.rejection, out.deviceId())),
                    out.rejection.reason(), t0);
            return;
        }
        if (out.readings.isEmpty()) {  // a birth, a death, a command or a host's state: nothing to write
            String type = out.messageType();
            boolean forOthers = type.equals("NCMD") || type.equals("DCMD") || type.equals("STATE");
            if (!settings.deliverToSubscribers() && !forOthers) {
                output.preventPublishDelivery();
            }
            return;
        }
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>(out.readings.size());
        for (TelemetryValidator.Accepted reading : out.readings) {
            records.add(rawRecord(topic, reading));
        }
        send(input, output, records, null, t0);
    }

    /**
     * Format sparkplug_b: the NDEATH that the broker published as an edge node's will ({@link SparkplugWills}; no
     * publish interceptor sees a will). Noted as any NDEATH; one that cannot be read is dead-lettered.
     */
    void sparkplugWill(String topic, byte[] payload) {
        metrics.received.inc();
        Instant now = Instant.now();
        SparkplugDecoder.Outcome out = sparkplug.apply(topic, payload, now.getEpochSecond() + now.getNano() / 1e9,
                settings.maxPayloadBytes(), settings.knownDevices());
        noted(out);
        if (out.rejection != null) {
            String reason = out.rejection.reason();
            Log.event("message_deadlettered", "reason", reason, "detail", out.rejection.detail(), "topic", topic,
                    "client_id", "(will)", "bytes", String.valueOf(payload.length));
            producer.send(deadLetter(topic, payload, out.rejection, out.deviceId()), (md, error) -> {
                if (error == null) {
                    metrics.deadlettered.labelValues(reason).inc();
                } else {
                    metrics.deliveryErrors.inc();
                    Log.event("kafka_delivery_failed", "error", String.valueOf(error), "action", "a will: lost");
                }
            });
        }
    }

    /** A Sparkplug B outcome's metrics and log lines (seq gaps and data before a birth sampled). */
    private void noted(SparkplugDecoder.Outcome out) {
        metrics.sparkplugMessages.labelValues(out.messageType()).inc();
        for (String[] event : out.events) {
            String name = event[0];
            if (name.equals("sparkplug_command_ignored") || name.equals("sparkplug_host_state_ignored")) {
                continue;  // counted by type; not the edge node's data
            }
            if (name.equals("sparkplug_seq_gap") || name.equals("sparkplug_no_birth")) {
                // A broken edge node may send many: the first and every SPARKPLUG_LOG_EVERYth of each kind.
                long seen = (name.equals("sparkplug_seq_gap") ? seqGapsSeen : noBirthSeen).incrementAndGet();
                if (seen % SPARKPLUG_LOG_EVERY != 1) {
                    continue;
                }
                event = java.util.Arrays.copyOf(event, event.length + 2);
                event[event.length - 2] = "so_far";
                event[event.length - 1] = String.valueOf(seen);
            }
            Log.event(name, java.util.Arrays.copyOfRange(event, 1, event.length));
        }
        if (out.seqGap) {
            metrics.sparkplugSeqGaps.inc();
        }
        if (out.rebirthTopic != null) {
            try {
                rebirthPublisher.accept(out.rebirthTopic, out.rebirthPayload);
                metrics.sparkplugRebirths.inc();
            } catch (RuntimeException e) {
                Log.event("sparkplug_rebirth_failed", "topic", out.rebirthTopic, "error", String.valueOf(e));
            }
        }
    }

    static void publishRebirth(String topic, byte[] payload) {
        Services.publishService().publish(Builders.publish().topic(topic).payload(ByteBuffer.wrap(payload))
                .qos(Qos.AT_MOST_ONCE).build());
    }

    /** The records of one message (its readings, or its dead letter) to Kafka; its PUBACK waits for all of them. */
    private void send(PublishInboundInput input, PublishInboundOutput output,
                      List<ProducerRecord<byte[], byte[]>> records, String reason, long t0) {
        int n = records.size();
        // Back-pressure: at most max.inflight records wait for Kafka; beyond that the interceptor thread waits.
        try {
            if (!inflight.tryAcquire(n, settings.publishTimeoutS(), TimeUnit.SECONDS)) {
                output.preventPublishDelivery(AckReasonCode.UNSPECIFIED_ERROR, "too many messages waiting for Kafka");
                return;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            output.preventPublishDelivery(AckReasonCode.UNSPECIFIED_ERROR, "interrupted");
            return;
        }
        metrics.inflight.inc(n);
        if (gate != null) {
            pipelined(input, output, records, reason, t0);
            return;
        }
        Async<PublishInboundOutput> async = output.async(Duration.ofSeconds(settings.publishTimeoutS()),
                TimeoutFallback.FAILURE, AckReasonCode.UNSPECIFIED_ERROR, "Kafka did not confirm the message in time");
        AtomicInteger left = new AtomicInteger(n);
        AtomicReference<Exception> failure = new AtomicReference<>();
        for (ProducerRecord<byte[], byte[]> record : records) {
            java.util.function.Consumer<Exception> done = error -> {
                counted(reason, t0, error);
                if (error != null) {
                    failure.compareAndSet(null, error);
                }
                if (left.decrementAndGet() == 0) {
                    delivered(output, async, failure.get());
                }
            };
            try {
                producer.send(record, (md, error) -> done.accept(error));
            } catch (RuntimeException e) {  // e.g. a record too large, a closed producer
                done.accept(e);
            }
        }
    }

    /** A publish the mapping does not take: counted, and logged for the first and every UNMATCHED_LOG_EVERYth. */
    private void unmatched(String topic, String clientId) {
        metrics.unmatched.inc();
        long seen = unmatchedSeen.incrementAndGet();
        if (seen % UNMATCHED_LOG_EVERY == 1) {
            Log.event("topic_unmatched", "topic", topic, "mapping", mapping.name, "client_id", clientId,
                    "unmatched_so_far", String.valueOf(seen));
        }
    }

    /** ack.mode=puback: hand the record over and return; the PubackGate holds the PUBACK until Kafka confirms. */
    private void pipelined(PublishInboundInput input, PublishInboundOutput output,
                           List<ProducerRecord<byte[], byte[]>> records, String reason, long t0) {
        List<CompletableFuture<Void>> parts = new ArrayList<>(records.size());
        for (int i = 0; i < records.size(); i++) {
            parts.add(new CompletableFuture<>());
        }
        CompletableFuture<Void> delivery = parts.size() == 1 ? parts.get(0)
                : CompletableFuture.allOf(parts.toArray(new CompletableFuture<?>[0]));
        if (input.getPublishPacket().getQos() != Qos.AT_MOST_ONCE) {
            gate.expect(input.getClientInformation().getClientId(), input.getPublishPacket().getPacketId(), delivery);
        }
        for (int i = 0; i < records.size(); i++) {
            CompletableFuture<Void> part = parts.get(i);
            try {
                producer.send(records.get(i), (md, error) -> {
                    counted(reason, t0, error);
                    if (error == null) {
                        part.complete(null);
                    } else {
                        part.completeExceptionally(error);
                    }
                });
            } catch (RuntimeException e) {
                counted(reason, t0, e);
                part.completeExceptionally(e);
            }
        }
        if (!settings.deliverToSubscribers()) {
            output.preventPublishDelivery();  // PUBACK (held by the gate) without onward delivery
        }
    }

    /** Metrics, health and the in-flight slot of one delivery outcome. */
    private void counted(String reason, long t0, Exception error) {
        inflight.release();
        metrics.inflight.dec();
        if (error == null) {
            kafkaUp = true;
            if (reason == null) {
                metrics.forwarded.inc();
            } else {
                metrics.deadlettered.labelValues(reason).inc();
            }
            metrics.latency.observe((System.nanoTime() - t0) / 1e9);
            return;
        }
        kafkaUp = false;
        metrics.deliveryErrors.inc();
        long now = System.currentTimeMillis();
        long last = lastFailureLog.get();
        if (now - last >= 1000 && lastFailureLog.compareAndSet(last, now)) {
            Log.event("kafka_delivery_failed", "error", String.valueOf(error),
                    "action", "not acknowledged; the client sends it again");
        }
    }

    /** ack.mode=async: every record of the message is delivered (error null) or one failed. */
    private void delivered(PublishInboundOutput output, Async<PublishInboundOutput> async, Exception error) {
        try {
            if (error == null) {
                if (!settings.deliverToSubscribers()) {
                    output.preventPublishDelivery();  // PUBACK (success) without onward delivery
                }
            } else {
                output.preventPublishDelivery(AckReasonCode.UNSPECIFIED_ERROR, "Kafka delivery failed");
            }
        } catch (RuntimeException e) {
            // The async output already timed out (HiveMQ refused the publish itself).
            Log.event("publish_outcome_too_late", "error", String.valueOf(e));
        } finally {
            async.resume();
        }
    }

    private ProducerRecord<byte[], byte[]> deadLetter(String topic, byte[] payload, TelemetryValidator.Rejected bad,
                                                      String device) {
        String detail = bad.detail();
        byte[] value = payload;
        if (payload.length > DEADLETTER_PAYLOAD_LIMIT) {
            value = java.util.Arrays.copyOf(payload, DEADLETTER_PAYLOAD_LIMIT);
            detail = detail + "; payload cut to " + DEADLETTER_PAYLOAD_LIMIT + " of " + payload.length + " bytes";
        }
        List<org.apache.kafka.common.header.Header> headers = new ArrayList<>(3);
        headers.add(new RecordHeader("streamtrain.reason", bad.reason().getBytes(StandardCharsets.UTF_8)));
        headers.add(new RecordHeader("streamtrain.source", ("mqtt:" + topic).getBytes(StandardCharsets.UTF_8)));
        if (!detail.isEmpty()) {
            headers.add(new RecordHeader("streamtrain.detail", firstCodePoints(detail, 1000).getBytes(StandardCharsets.UTF_8)));
        }
        return new ProducerRecord<>(settings.topicDeadletter(), null,
                device == null ? null : device.getBytes(StandardCharsets.UTF_8), value, headers);
    }

    /** Python's s[:n] (code points, not UTF-16 units). */
    static String firstCodePoints(String s, int n) {
        return s.codePointCount(0, s.length()) <= n ? s : s.substring(0, s.offsetByCodePoints(0, n));
    }

    private static byte[] bytes(ByteBuffer buffer) {
        ByteBuffer b = buffer.asReadOnlyBuffer();
        byte[] out = new byte[b.remaining()];
        b.get(out);
        return out;
    }
}
