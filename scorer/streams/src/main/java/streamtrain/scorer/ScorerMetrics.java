package streamtrain.scorer;

import com.sun.net.httpserver.HttpServer;
import io.prometheus.metrics.core.metrics.Counter;
import io.prometheus.metrics.core.metrics.Gauge;
import io.prometheus.metrics.core.metrics.Histogram;
import io.prometheus.metrics.expositionformats.PrometheusTextFormatWriter;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.function.BooleanSupplier;

/**
 * The Python scorer's metrics (same names where they mean the same), served like streamtrain/metrics.py.
 * Histograms are classic only: the text format shows no native histogram, and keeping one costs the stream
 * thread on every record.
 */
final class ScorerMetrics {
    final PrometheusRegistry registry = new PrometheusRegistry();
    final Counter scored = Counter.builder().name("streamtrain_scorer_records_scored").help("Records scored")
            .labelNames("model_version").register(registry);
    final Counter flagged = Counter.builder().name("streamtrain_scorer_anomalies")
            .help("Records flagged as anomalous").register(registry);
    final Counter deadlettered = Counter.builder().name("streamtrain_scorer_deadlettered")
            .help("Records that could not be scored").labelNames("reason").register(registry);
    final Counter refused = Counter.builder().name("streamtrain_scorer_models_refused")
            .help("Model versions refused").labelNames("reason").register(registry);
    final Histogram lagSeconds = Histogram.builder().name("streamtrain_scorer_end_to_end_seconds")
            .help("Processing lag: the reading's arrival in Kafka (raw topic) to its score (the Kafka Streams scorer: "
                  + "to scoring, before its transaction commits); independent of how old the reading is")
            .classicUpperBounds(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60).classicOnly().register(registry);
    final Histogram eventAge = Histogram.builder().name("streamtrain_scorer_event_age_seconds")
            .help("Event-time age: the reading's own timestamp (ts) to its score; years for a replayed recording")
            .classicUpperBounds(.1, 1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400,
                    10 * 365 * 86400.0).classicOnly().register(registry);
    final Gauge modelVersion = Gauge.builder().name("streamtrain_scorer_model_version")
            .help("Champion model version").register(registry);
    final Gauge anomalyRate = Gauge.builder().name("streamtrain_scorer_anomaly_rate")
            .help("Fraction flagged in the last 512 records").register(registry);
    final Gauge challengerVersion = Gauge.builder().name("streamtrain_scorer_challenger_version")
            .help("Challenger version (0 = none)").register(registry);
    final Gauge challengerAgreement = Gauge.builder().name("streamtrain_scorer_challenger_agreement")
            .help("Fraction of shadow records where challenger and champion agree").register(registry);
    final Gauge challengerAnomalyRate = Gauge.builder().name("streamtrain_scorer_challenger_anomaly_rate")
            .help("Fraction the challenger flags").register(registry);
    final Counter held = Counter.builder().name("streamtrain_scorer_versions_held")
            .help("Versions held back because their training was not healthy (champion only on a promotion request)")
            .labelNames("reason").register(registry);
    final Gauge heldVersion = Gauge.builder().name("streamtrain_scorer_held_version")
            .help("Newest held-back (unhealthy) version (0 = none)").register(registry);
    final Gauge championUnhealthy = Gauge.builder().name("streamtrain_scorer_champion_unhealthy")
            .help("1 while the champion's training was not healthy (the first version, or promoted on request)")
            .register(registry);
    final Gauge pinnedVersion = Gauge.builder().name("streamtrain_scorer_pinned_version")
            .help("Version pinned by `streamtrain models pin` (0 = none)").register(registry);
    final Counter notServed = Counter.builder().name("streamtrain_scorer_versions_not_served")
            .help("Versions that arrived while a pinned version serves (noted, not served)").register(registry);
    final Counter versionsFailed = Counter.builder().name("streamtrain_scorer_versions_failed")
            .help("Versions that failed on live input after load and warm-up passed (never served again by this "
                  + "process)").register(registry);
    private HttpServer server;

    ScorerMetrics() {
        for (String reason : ModelRegistry.HEALTH_PROBLEMS) {
            held.labelValues(reason);
        }
        held.labelValues("unhealthy");
        deadlettered.labelValues("model_failed");
    }

    /** /metrics, /healthz (alive) and /readyz (200 once {@code ready} holds, else 503). */
    int serve(int port, BooleanSupplier ready) throws Exception {
        server = HttpServer.create(new InetSocketAddress(port), 0);
        PrometheusTextFormatWriter writer = new PrometheusTextFormatWriter(false);
        server.createContext("/metrics", ex -> {
            ByteArrayOutputStream body = new ByteArrayOutputStream();
            writer.write(body, registry.scrape());
            respond(ex, 200, writer.getContentType(), body.toByteArray());
        });
        server.createContext("/healthz", ex -> respond(ex, 200, "text/plain", "ok\n".getBytes(StandardCharsets.UTF_8)));
        server.createContext("/readyz", ex -> {
            boolean ok = ready.getAsBoolean();
            respond(ex, ok ? 200 : 503, "text/plain", (ok ? "ready\n" : "not ready\n").getBytes(StandardCharsets.UTF_8));
        });
        server.start();
        return server.getAddress().getPort();
    }

    private static void respond(com.sun.net.httpserver.HttpExchange ex, int status, String type, byte[] body)
            throws java.io.IOException {
        ex.getResponseHeaders().set("Content-Type", type);
        ex.sendResponseHeaders(status, body.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(body);
        }
    }

    void stop() {
        if (server != null) {
            server.stop(0);
        }
    }
}
