package streamtrain.scorer;

import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;

/**
 * Scores one feature record with the current champion (and the challenger in shadow) and
 * forwards the score, or the record to the dead-letter sink with the reason in headers. The
 * output has the Python scorer's fields (scorer/app.py) with {@code "scorer": "kafka-streams"}.
 * Model switches are taken between two records.
 */
final class ScoreProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    static final String SCORES_SINK = "scores";
    static final String DEADLETTER_SINK = "deadletter";
    /** streamtrain/topics.py ARRIVED_HEADER: when the reading reached Kafka (epoch ms), set by the preprocessor. */
    static final String ARRIVED_HEADER = "streamtrain.arrived_ms";
    private static final Log LOG = new Log("scorer");
    // Python's json.loads accepts NaN and Infinity; they are then refused as non-finite values, not as bad JSON.
    private static final ObjectMapper JSON = JsonMapper.builder()
            .enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS).build();
    private static final int RATE_WINDOW = 512;

    private final Settings settings;
    private final ModelRegistry registry;
    private final ScorerMetrics metrics;
    private ProcessorContext<byte[], byte[]> context;
    private float[] row = new float[0];
    private long shadowRecords, shadowAgree, shadowFlagged;
    private int windowRecords, windowFlagged;

    ScoreProcessor(Settings settings, ModelRegistry registry, ScorerMetrics metrics) {
        this.settings = settings;
        this.registry = registry;
        this.metrics = metrics;
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        applyModelEvents();
        OnnxModel champion = registry.champion();
        OnnxModel challenger = registry.challenger();
        RecordMetadata where = context.recordMetadata().orElseThrow();
        JsonNode body;
        try {
            body = record.value() == null ? null : JSON.readTree(record.value());
            if (body == null || !body.isObject()) {
                throw new IllegalArgumentException("not a JSON object");
            }
        } catch (Exception e) {
            deadLetter(record, where, "malformed_json", String.valueOf(e.getMessage()));
            return;
        }
        List<String> features = champion.featureNames;
        List<String> missing = new ArrayList<>();
        for (String f : features) {
            if (!body.has(f)) {
                missing.add("'" + f + "'");
            }
        }
        if (!missing.isEmpty()) {
            deadLetter(record, where, "missing_feature", "missing " + missing);
            return;
        }
        if (row.length != features.size()) {
            row = new float[features.size()];
        }
        for (int i = 0; i < row.length; i++) {
            JsonNode v = body.get(features.get(i));
            // Finite after the cast to float32 too (3.5e38 is a finite double but an infinite float32).
            if (!v.isNumber() || !Double.isFinite(v.asDouble()) || Math.abs(v.asDouble()) > Float.MAX_VALUE) {
                deadLetter(record, where, "bad_feature_value", "features must be finite numbers within float32 range");
                return;
            }
            row[i] = (float) v.asDouble();
        }
        float score, chScore = 0;
        boolean shadow = challenger != null && challenger.featureNames.equals(features);
        try {
            score = champion.scoreOne(row);
            if (shadow) {
                chScore = challenger.scoreOne(row);
            }
        } catch (Exception e) {
            // The graph ran at load time; failing now is not this record's fault: stop rather than drop it.
            throw new IllegalStateException("scoring failed with model v" + champion.version, e);
        }
        boolean flag = score > champion.thresholdF32;
        ObjectNode out = JSON.createObjectNode();
        out.set("device_id", body.get("device_id"));
        out.set("seq", body.get("seq"));
        out.set("ts", body.get("ts"));
        out.put("model_version", champion.version);
        out.put("score", (double) score);
        // As streamtrain/model.py Assessment: the threshold applied (float32), and whose baseline it is.
        out.put("threshold", (double) champion.thresholdF32);
        out.put("is_anomaly", flag);
        out.put("baseline", "global");
        out.put("scored_at", System.currentTimeMillis() / 1000.0);
        out.put("scorer", "kafka-streams");
        out.put("instance", settings.instanceId());
        ObjectNode source = out.putObject("source");
        source.put("partition", where.partition());
        source.put("offset", where.offset());
        for (String gt : new String[] {"label", "anomaly", "device_type"}) {
            if (body.has(gt)) {
                out.set(gt.equals("anomaly") ? "anomaly_kind" : gt, body.get(gt));
            }
        }
        if (shadow) {
            boolean chFlag = chScore > challenger.thresholdF32;
            ObjectNode ch = out.putObject("challenger");
            ch.put("model_version", challenger.version);
            ch.put("score", (double) chScore);
            ch.put("is_anomaly", chFlag);
            shadowRecords++;
            shadowAgree += chFlag == flag ? 1 : 0;
            shadowFlagged += chFlag ? 1 : 0;
        }
        byte[] value;
        try {
            value = JSON.writeValueAsBytes(out);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        context.forward(new Record<>(record.key(), value, record.timestamp(), new RecordHeaders()), SCORES_SINK);
        metrics.scored.labelValues(String.valueOf(champion.version)).inc();
        if (flag) {
            metrics.flagged.inc();
        }
        double now = System.currentTimeMillis() / 1000.0;
        metrics.lagSeconds.observe(Math.max(0.0, now - arrivalSeconds(record)));
        JsonNode ts = body.get("ts");
        if (ts != null && ts.isNumber()) {
            metrics.eventAge.observe(Math.max(0.0, now - ts.asDouble()));
        }
        windowRecords++;
        windowFlagged += flag ? 1 : 0;
        if (windowRecords == RATE_WINDOW) {
            metrics.anomalyRate.set((double) windowFlagged / windowRecords);
            windowRecords = windowFlagged = 0;
        }
        if (shadow) {
            maybePromote();
        }
    }

    private void applyModelEvents() {
        List<ModelRegistry.Event> events = registry.apply();
        if (events.isEmpty()) {
            return;
        }
        for (ModelRegistry.Event e : events) {
            LOG.info(e.name(), "old_version", e.oldVersion(), "new_version", e.newVersion());
            if (e.name().equals("challenger_loaded")) {
                shadowRecords = shadowAgree = shadowFlagged = 0;
            }
        }
        OnnxModel champion = registry.champion();
        OnnxModel challenger = registry.challenger();
        metrics.modelVersion.set(champion == null ? 0 : champion.version);
        metrics.challengerVersion.set(challenger == null ? 0 : challenger.version);
    }

    private void maybePromote() {
        double agreement = shadowRecords == 0 ? 0 : (double) shadowAgree / shadowRecords;
        metrics.challengerAgreement.set(agreement);
        metrics.challengerAnomalyRate.set(shadowRecords == 0 ? 0 : (double) shadowFlagged / shadowRecords);
        if (settings.promoteAfter() > 0 && shadowRecords >= settings.promoteAfter()) {
            if (agreement >= settings.promoteMinAgreement()) {
                ModelRegistry.Event e = registry.promote();
                LOG.info(e.name(), "old_version", e.oldVersion(), "new_version", e.newVersion(), "rule", "auto",
                        "agreement", Math.round(agreement * 1e4) / 1e4, "shadow_records", shadowRecords);
                metrics.modelVersion.set(e.newVersion());
                metrics.challengerVersion.set(0);
                shadowRecords = shadowAgree = shadowFlagged = 0;
            } else if (shadowRecords % settings.promoteAfter() == 0) {
                LOG.info("challenger_not_promoted", "agreement", Math.round(agreement * 1e4) / 1e4,
                        "needed", settings.promoteMinAgreement(), "shadow_records", shadowRecords);
            }
        }
    }

    private void deadLetter(Record<byte[], byte[]> record, RecordMetadata where, String reason, String detail) {
        RecordHeaders headers = new RecordHeaders();
        headers.add("streamtrain.reason", reason.getBytes(StandardCharsets.UTF_8));
        headers.add("streamtrain.source", ("kafka:" + where.topic() + "/" + where.partition() + "@" + where.offset())
                .getBytes(StandardCharsets.UTF_8));
        if (!detail.isEmpty()) {
            headers.add("streamtrain.detail", detail.substring(0, Math.min(1000, detail.length()))
                    .getBytes(StandardCharsets.UTF_8));
        }
        context.forward(new Record<>(record.key(), record.value(), record.timestamp(), headers), DEADLETTER_SINK);
        metrics.deadlettered.labelValues(reason).inc();
    }

    /** When the record's reading reached Kafka: the preprocessor's header, else the record's (arrival) timestamp. */
    static double arrivalSeconds(Record<byte[], byte[]> record) {
        Header arrived = record.headers().lastHeader(ARRIVED_HEADER);
        if (arrived != null && arrived.value() != null) {
            try {
                return Long.parseLong(new String(arrived.value(), StandardCharsets.UTF_8)) / 1000.0;
            } catch (NumberFormatException e) {
                // not ours: fall back to the record's timestamp
            }
        }
        return record.timestamp() / 1000.0;
    }
}
