package io.streamtrain.ingest;

import com.hivemq.extension.sdk.api.async.Async;
import com.hivemq.extension.sdk.api.async.TimeoutFallback;
import com.hivemq.extension.sdk.api.interceptor.publish.PublishInboundInterceptor;
import com.hivemq.extension.sdk.api.interceptor.publish.parameter.PublishInboundInput;
import com.hivemq.extension.sdk.api.interceptor.publish.parameter.PublishInboundOutput;
import com.hivemq.extension.sdk.api.packets.general.Qos;
import com.hivemq.extension.sdk.api.packets.publish.AckReasonCode;
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
import java.util.concurrent.atomic.AtomicLong;

/**
 * Every PUBLISH on a topic of the ingest mapping (devices/+/telemetry with the default preset streamtrain):
 * mapped to a reading as the bridge maps it ({@link IngestMapping}), validated, written to Kafka (raw topic keyed by device id, or
 * the dead-letter topic with the reason in headers), and only then acknowledged. ack.mode=puback (default):
 * the PUBACK waits in {@link PubackGate}; ack.mode=async: it waits in HiveMQ's async output of this
 * interceptor (one message per connection at a time). A failed or late delivery is never acknowledged:
 * the client is disconnected (MQTT 5 in async mode: an error PUBACK), so it sends the message again.
 * A PUBLISH on a topic no pattern of the mapping matches is counted, logged (the first and then every
 * {@value #UNMATCHED_LOG_EVERY}th) and left to HiveMQ as before: not written to Kafka.
 */
final class KafkaIngestInterceptor implements PublishInboundInterceptor {
    /** Dead letters keep the payload; beyond this size it is cut (bridge/app.py DEADLETTER_PAYLOAD_LIMIT). */
    static final int DEADLETTER_PAYLOAD_LIMIT = 512 * 1024;
    /** One log line per this many publishes on topics the mapping does not take (all are counted). */
    static final long UNMATCHED_LOG_EVERY = 1000;

    private final IngestSettings settings;
    private final IngestMapping mapping;
    private final boolean streamtrainFormat;
    private final IngestMapping.ArrivalSeq arrivalSeq = new IngestMapping.ArrivalSeq(200_000);
    /** One value per topic: the last value of each device's channels (kept in memory: a restart starts afresh). */
    private final IngestMapping.HeldValues held;
    private final AtomicLong unmatchedSeen = new AtomicLong();
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
        TelemetryValidator.Result result = mapping.apply(topic, payload, arrived, settings.maxPayloadBytes(),
                settings.knownDevices(), arrivalSeq, held);
        ProducerRecord<byte[], byte[]> record;
        String reason = null;
        if (result instanceof TelemetryValidator.Accepted ok) {
            record = new ProducerRecord<>(settings.topicRaw(), null, ok.deviceId().getBytes(StandardCharsets.UTF_8),
                    ok.json(), List.of(new RecordHeader("mqtt.topic", topic.getBytes(StandardCharsets.UTF_8))));
        } else {
            TelemetryValidator.Rejected bad = (TelemetryValidator.Rejected) result;
            reason = bad.reason();
            if (reason.equals("bad_topic") && mapping.matchTopic(topic) == null) {
                unmatched(topic, input.getClientInformation().getClientId());  // e.g. an empty level: as the bridge counts
            }
            record = deadLetter(topic, payload, bad);
            Log.event("message_deadlettered", "reason", bad.reason(), "detail", bad.detail(), "topic", topic,
                    "client_id", input.getClientInformation().getClientId(), "bytes", String.valueOf(payload.length));
        }
        // Back-pressure: at most max.inflight records wait for Kafka; beyond that the interceptor thread waits.
        try {
            if (!inflight.tryAcquire(settings.publishTimeoutS(), TimeUnit.SECONDS)) {
                output.preventPublishDelivery(AckReasonCode.UNSPECIFIED_ERROR, "too many messages waiting for Kafka");
                return;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            output.preventPublishDelivery(AckReasonCode.UNSPECIFIED_ERROR, "interrupted");
            return;
        }
        metrics.inflight.inc();
        if (gate != null) {
            pipelined(input, output, record, reason, t0);
            return;
        }
        Async<PublishInboundOutput> async = output.async(Duration.ofSeconds(settings.publishTimeoutS()),
                TimeoutFallback.FAILURE, AckReasonCode.UNSPECIFIED_ERROR, "Kafka did not confirm the message in time");
        String deadReason = reason;
        try {
            producer.send(record, (md, error) -> delivered(output, async, deadReason, t0, error));
        } catch (RuntimeException e) {  // e.g. a record too large, a closed producer
            delivered(output, async, deadReason, t0, e);
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
    private void pipelined(PublishInboundInput input, PublishInboundOutput output, ProducerRecord<byte[], byte[]> record,
                           String reason, long t0) {
        CompletableFuture<Void> delivery = new CompletableFuture<>();
        if (input.getPublishPacket().getQos() != Qos.AT_MOST_ONCE) {
            gate.expect(input.getClientInformation().getClientId(), input.getPublishPacket().getPacketId(), delivery);
        }
        try {
            producer.send(record, (md, error) -> {
                counted(reason, t0, error);
                if (error == null) {
                    delivery.complete(null);
                } else {
                    delivery.completeExceptionally(error);
                }
            });
        } catch (RuntimeException e) {
            counted(reason, t0, e);
            delivery.completeExceptionally(e);
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

    private void delivered(PublishInboundOutput output, Async<PublishInboundOutput> async, String reason, long t0,
                           Exception error) {
        counted(reason, t0, error);
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

    private ProducerRecord<byte[], byte[]> deadLetter(String topic, byte[] payload, TelemetryValidator.Rejected bad) {
        String detail = bad.detail();
        byte[] value = payload;
        if (payload.length > DEADLETTER_PAYLOAD_LIMIT) {
            value = java.util.Arrays.copyOf(payload, DEADLETTER_PAYLOAD_LIMIT);
            detail = detail + "; payload cut to " + DEADLETTER_PAYLOAD_LIMIT + " of " + payload.length + " bytes";
        }
        String device = mapping.deviceFromTopic(topic);
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
