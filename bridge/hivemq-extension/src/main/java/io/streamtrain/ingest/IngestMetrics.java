package io.streamtrain.ingest;

import com.sun.net.httpserver.HttpServer;
import io.prometheus.metrics.core.metrics.Counter;
import io.prometheus.metrics.core.metrics.CounterWithCallback;
import io.prometheus.metrics.core.metrics.Gauge;
import io.prometheus.metrics.core.metrics.GaugeWithCallback;
import io.prometheus.metrics.core.metrics.Histogram;
import io.prometheus.metrics.expositionformats.PrometheusTextFormatWriter;
import io.prometheus.metrics.model.registry.PrometheusRegistry;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.concurrent.Executors;
import java.util.function.BooleanSupplier;

/** The Python bridge's metric names (bridge/app.py BridgeMetrics), so dashboards and alerts read either. */
final class IngestMetrics {
    final PrometheusRegistry registry = new PrometheusRegistry();
    final Counter received = Counter.builder().name("streamtrain_bridge_received")
            .help("MQTT messages received").register(registry);
    final Counter forwarded = Counter.builder().name("streamtrain_bridge_forwarded")
            .help("Messages delivered to the raw topic").register(registry);
    final Counter deadlettered = Counter.builder().name("streamtrain_bridge_deadlettered")
            .help("Messages delivered to the dead-letter topic").labelNames("reason").register(registry);
    final Counter deliveryErrors = Counter.builder().name("streamtrain_bridge_delivery_errors")
            .help("Kafka delivery failures (the publish is not acknowledged; the client sends it again)")
            .register(registry);
    final Counter unmatched = Counter.builder().name("streamtrain_bridge_unmatched_topics")
            .help("Messages on topics no pattern of the ingest mapping matches (not written to Kafka; HiveMQ "
                    + "handles them as usual)").register(registry);
    final Gauge inflight = Gauge.builder().name("streamtrain_bridge_inflight")
            .help("Messages received and not yet acknowledged").register(registry);
    final Histogram latency = Histogram.builder().name("streamtrain_bridge_delivery_seconds")
            .help("MQTT receive to Kafka delivery").classicOnly()
            .classicUpperBounds(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10).register(registry);
    final Counter sparkplugMessages = Counter.builder().name("streamtrain_bridge_sparkplug_messages")
            .help("Sparkplug B messages by type (births, deaths and commands make no reading; invalid: no Sparkplug "
                    + "topic)").labelNames("type").register(registry);
    final Counter sparkplugSeqGaps = Counter.builder().name("streamtrain_bridge_sparkplug_seq_gaps")
            .help("Sparkplug B messages whose seq is not one more than their edge node's last (a message lost or "
                    + "reordered)").register(registry);
    final Counter sparkplugRebirths = Counter.builder().name("streamtrain_bridge_sparkplug_rebirth_requests")
            .help("NCMD Node Control/Rebirth requests sent to edge nodes").register(registry);
    private HttpServer server;

    IngestMetrics() {
        for (String reason : TelemetryValidator.REASONS) {
            deadlettered.labelValues(reason);  // every reason exported from the start, at 0
        }
        for (String reason : SparkplugDecoder.REASONS) {
            deadlettered.labelValues(reason);
        }
    }

    /**
     * HiveMQ's own counters, under the names StreamTrain's launcher serves them (stack/java/HiveMQLauncher.java
     * BrokerMetrics): with the extension this port is the broker's metrics port, so the alert
     * StreamTrainBrokerDroppedMessages sees the messages HiveMQ drops (a subscriber's queue full, a packet above
     * its maximum size, ...) here too.
     */
    void brokerCounters(com.codahale.metrics.MetricRegistry hivemq) {
        CounterWithCallback.builder().name("streamtrain_broker_messages_dropped")
                .help("Messages HiveMQ dropped instead of delivering (every reason)")
                .callback(cb -> cb.call(count(hivemq, "com.hivemq.messages.dropped.count"))).register(registry);
        CounterWithCallback.builder().name("streamtrain_broker_publishes_received")
                .help("PUBLISH packets clients sent the broker")
                .callback(cb -> cb.call(count(hivemq, "com.hivemq.messages.incoming.publish.count"))).register(registry);
        CounterWithCallback.builder().name("streamtrain_broker_publishes_sent")
                .help("PUBLISH packets the broker sent subscribers")
                .callback(cb -> cb.call(count(hivemq, "com.hivemq.messages.outgoing.publish.count"))).register(registry);
        GaugeWithCallback.builder().name("streamtrain_broker_connections").help("Open MQTT connections")
                .callback(cb -> {
                    com.codahale.metrics.Gauge<?> g = hivemq.getGauges().get("com.hivemq.networking.connections.current");
                    Object open = g == null ? null : g.getValue();
                    cb.call(open instanceof Number n ? n.doubleValue() : 0);
                }).register(registry);
    }

    private static double count(com.codahale.metrics.MetricRegistry registry, String name) {
        com.codahale.metrics.Counter c = registry.getCounters().get(name);
        return c == null ? 0 : c.getCount();
    }

    /** Serves /metrics and /healthz (200 while {@code healthy}, else 503) on host:port. */
    void serve(String host, int port, BooleanSupplier healthy) throws IOException {
        server = HttpServer.create(new InetSocketAddress(host, port), 0);
        PrometheusTextFormatWriter writer = new PrometheusTextFormatWriter(false);
        server.createContext("/metrics", exchange -> {
            ByteArrayOutputStream body = new ByteArrayOutputStream();
            writer.write(body, registry.scrape());
            exchange.getResponseHeaders().set("Content-Type", writer.getContentType());
            reply(exchange, 200, body.toByteArray());
        });
        server.createContext("/healthz", exchange -> {
            boolean ok = healthy.getAsBoolean();
            reply(exchange, ok ? 200 : 503, (ok ? "ok\n" : "kafka unavailable\n").getBytes());
        });
        server.setExecutor(Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "streamtrain-ingest-metrics");
            t.setDaemon(true);
            return t;
        }));
        server.start();
    }

    int port() {
        return server == null ? 0 : server.getAddress().getPort();
    }

    private static void reply(com.sun.net.httpserver.HttpExchange exchange, int status, byte[] body) throws IOException {
        exchange.sendResponseHeaders(status, body.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(body);
        }
    }

    void stop() {
        if (server != null) {
            server.stop(0);
        }
    }
}
