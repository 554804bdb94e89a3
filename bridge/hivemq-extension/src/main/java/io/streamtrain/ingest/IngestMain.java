package io.streamtrain.ingest;

import com.hivemq.extension.sdk.api.ExtensionMain;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartOutput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopOutput;
import com.hivemq.extension.sdk.api.services.Services;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Properties;

/** Starts the Kafka producer, the metrics endpoint and the publish interceptor of every client. */
public final class IngestMain implements ExtensionMain {
    private Producer<byte[], byte[]> producer;
    private IngestMetrics metrics;

    @Override
    public void extensionStart(ExtensionStartInput input, ExtensionStartOutput output) {
        try {
            Path folder = input.getExtensionInformation().getExtensionHomeFolder().toPath();
            if (!IngestSettings.configured(folder, System.getenv())) {
                // In the image for every managed broker; this one ingests through the bridge instead.
                Log.event("ingest_disabled", "reason", "no " + IngestSettings.FILE + " and no "
                        + IngestSettings.ENV_PREFIX + "KAFKA_BOOTSTRAP: MQTT messages are not written to Kafka here");
                return;
            }
            IngestSettings s = IngestSettings.load(folder, System.getenv());
            producer = newProducer(s);
            metrics = new IngestMetrics();
            PubackGate gate = s.ackMode().equals("puback") ? new PubackGate(s.publishTimeoutS()) : null;
            KafkaIngestInterceptor interceptor = new KafkaIngestInterceptor(s, producer, metrics, gate);
            if (s.metricsPort() > 0) {
                metrics.brokerCounters(Services.metricRegistry());
                metrics.serve(s.metricsHost(), s.metricsPort(),
                        () -> interceptor.kafkaUp);
            }
            if (s.mapping().format.equals("sparkplug_b")) {
                SparkplugWills wills = new SparkplugWills(s.mapping(), interceptor::sparkplugWill);
                Services.eventRegistry().setClientLifecycleEventListener(providerInput -> wills);
            }
            Services.initializerRegistry().setClientInitializer((initInput, client) -> {
                client.addPublishInboundInterceptor(interceptor);
                if (gate != null) {
                    client.addPubackOutboundInterceptor(gate);
                }
            });
            Log.event("ingest_started", "mapping", s.mapping().name, "topics", String.join(",", s.mapping().topics),
                    "kafka", s.kafkaBootstrap(), "raw_topic", s.topicRaw(),
                    "deadletter_topic", s.topicDeadletter(), "max_inflight", String.valueOf(s.maxInflight()), "ack_mode", s.ackMode(),
                    "deliver_to_subscribers", String.valueOf(s.deliverToSubscribers()),
                    "metrics_port", String.valueOf(metrics.port()));
        } catch (Exception e) {
            Log.event("ingest_start_failed", "error", String.valueOf(e));
            output.preventExtensionStartup("StreamTrain ingestion cannot start: " + e);
        }
    }

    static Producer<byte[], byte[]> newProducer(IngestSettings s) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, s.kafkaBootstrap());
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "streamtrain-ingest");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        // Each PUBACK waits for its record: keep batches short (the broker sends a bounded window).
        p.put(ProducerConfig.LINGER_MS_CONFIG, "2");
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, String.valueOf(128 * 1024));
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        p.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, String.valueOf(2 * 1024 * 1024));
        // Kafka decides before HiveMQ's async timeout does: a failed delivery is reported, not a silent timeout.
        int deliveryMs = Math.max(10_000, (s.publishTimeoutS() - 5) * 1000);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, String.valueOf(deliveryMs));
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, String.valueOf(Math.min(30_000, deliveryMs - 10)));
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(deliveryMs));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.putAll(s.producer());
        // Kafka's classes come from this extension's class loader, not the thread's (a HiveMQ one).
        ClassLoader previous = Thread.currentThread().getContextClassLoader();
        Thread.currentThread().setContextClassLoader(IngestMain.class.getClassLoader());
        try {
            return new KafkaProducer<>(p);
        } finally {
            Thread.currentThread().setContextClassLoader(previous);
        }
    }

    @Override
    public void extensionStop(ExtensionStopInput input, ExtensionStopOutput output) {
        // HiveMQ stops taking publishes first; what is in flight is delivered (and acknowledged) or fails.
        if (producer != null) {
            producer.flush();
            producer.close(Duration.ofSeconds(20));
        }
        if (metrics != null) {
            metrics.stop();
        }
        Log.event("ingest_stopped");
    }
}
