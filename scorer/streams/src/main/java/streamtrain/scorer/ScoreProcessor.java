package streamtrain.scorer;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ValueNode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.processor.internals.InternalProcessorContext;
import org.apache.kafka.streams.processor.internals.ProcessorNode;
import org.apache.kafka.streams.processor.internals.ProcessorRecordContext;

/**
 * Scores feature records with the current champion (and the challenger in shadow), many per ONNX
 * call, and forwards each score, or the record to the dead-letter sink with the reason in headers
 * (at once). The output has the Python scorer's fields (scorer/app.py) with
 * {@code "scorer": "kafka-streams"}.
 *
 * <p>Valid records are held until the batch is full ({@link Batching#size()}), the wall-clock
 * punctuator fires ({@link Batching#waitMs()}), or the task is about to commit
 * ({@link FlushBeforeCommit}), whichever comes first; then one ONNX call scores them all and each
 * score is forwarded with its own input's record context, as if processed alone. So no commit ever
 * takes the offset of a record whose score was not forwarded in the same transaction. Model
 * switches and promotions happen only while no processor of this scorer holds a record.
 *
 * <p>A model that fails on a batch after its load and warm-up passed fails before any score of the batch is
 * forwarded: its version is marked bad ({@link ModelRegistry#fail}), the previous champion takes over and
 * scores the same records; with none, they go to the dead-letter sink ({@code model_failed}) while the
 * watcher loads the rule's next pick. No record is lost, none is scored twice.
 */
final class ScoreProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    static final String SCORES_SINK = "scores";
    static final String DEADLETTER_SINK = "deadletter";
    /** streamtrain/topics.py ARRIVED_HEADER: when the reading reached Kafka (epoch ms), set by the preprocessor. */
    static final String ARRIVED_HEADER = "streamtrain.arrived_ms";
    private static final Log LOG = new Log("scorer");
    private static final int RATE_WINDOW = 512;

    /** A valid record waiting for its batch's ONNX call; its features are row {@code index} of {@code x}. */
    private record Held(Record<byte[], byte[]> record, String topic, int partition, long offset, FeatureRecord body) {}

    private final Settings settings;
    private final ModelRegistry registry;
    private final ScorerMetrics metrics;
    private final Batching batching;
    private ProcessorContext<byte[], byte[]> context;
    /** Set when the records can be forwarded outside process() (not under a mock context): batches are possible. */
    private InternalProcessorContext<byte[], byte[]> internal;
    private ProcessorNode<?, ?, ?, ?> node;
    private final List<Held> held = new ArrayList<>();
    private float[] x = new float[0];
    /** The features {@code x}'s rows hold (the champion's when the batch's first record came). */
    private List<String> xFeatures = List.of();
    /** {@link FeatureRecord#index} of the last feature list records were read with. */
    private List<String> indexed;
    private Map<String, Integer> featureIndex;
    /** Where score records are written, one at a time, by one generator (no separator between its root values). */
    private final ByteArrayOutputStream scoreBytes = new ByteArrayOutputStream(512);
    private final JsonGenerator scoreWriter;
    private long shadowRecords, shadowAgree, shadowFlagged;
    private int windowRecords, windowFlagged;

    ScoreProcessor(Settings settings, ModelRegistry registry, ScorerMetrics metrics) {
        this(settings, registry, metrics, Batching.DEFAULT);
    }

    ScoreProcessor(Settings settings, ModelRegistry registry, ScorerMetrics metrics, Batching batching) {
        this.settings = settings;
        this.registry = registry;
        this.metrics = metrics;
        this.batching = batching;
        try {
            this.scoreWriter = FeatureRecord.JSON.getFactory().createGenerator(scoreBytes);
            this.scoreWriter.setRootValueSeparator(null);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    @Override
    @SuppressWarnings("unchecked")
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        FlushBeforeCommit store = null;
        try {
            store = context.getStateStore(FlushBeforeCommit.NAME);
        } catch (RuntimeException e) {
            // a topology without the store (or a mock context): score each record on its own
        }
        if (store != null && context instanceof InternalProcessorContext) {
            internal = (InternalProcessorContext<byte[], byte[]>) context;
            node = internal.currentNode();
            store.beforeCommit(this::flush);
            context.schedule(Duration.ofMillis(Math.max(1, batching.waitMs())), PunctuationType.WALL_CLOCK_TIME,
                    now -> flush());
        }
    }

    @Override
    public void close() {
        // Records still held belong to a task closed without a commit (dirty): their offsets were
        // not committed either, the next owner scores them.
        registry.letGo(held.size());
        held.clear();
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        if (registry.held() == 0) {
            applyModelEvents();
        }
        OnnxModel champion = registry.champion();
        RecordMetadata where = context.recordMetadata().orElseThrow();
        List<String> features = champion.featureNames;
        if (features != indexed) {
            featureIndex = FeatureRecord.index(features);
            indexed = features;
        }
        FeatureRecord body;
        try {
            body = FeatureRecord.read(record.value(), features, featureIndex);
        } catch (Exception e) {
            deadLetter(record, where, "malformed_json", String.valueOf(e.getMessage()));
            return;
        }
        String missing = body.missing(features);
        if (!missing.isEmpty()) {
            deadLetter(record, where, "missing_feature", "missing " + missing);
            return;
        }
        if (held.isEmpty()) {
            xFeatures = features;
        } else if (!xFeatures.equals(features)) {
            flush();  // a failed version gave way to one reading other features: finish the rows built so far
            xFeatures = features;
        }
        int n = features.size();
        if (x.length < batching.size() * n) {
            x = new float[batching.size() * n];
        }
        if (!body.usable()) {
            deadLetter(record, where, "bad_feature_value", "features must be finite numbers within float32 range");
            return;
        }
        body.copyTo(x, held.size() * n);
        held.add(new Held(record, where.topic(), where.partition(), where.offset(), body));
        registry.hold(1);
        if (internal == null || held.size() >= batching.size()) {
            flush();
        }
    }

    /** Scores every held record with one call per model and forwards the scores. */
    private void flush() {
        if (held.isEmpty()) {
            return;
        }
        float[] scores = null;
        OnnxModel champion = null;
        while (scores == null) {
            champion = registry.champion();
            if (registry.isBad(champion.version)) {
                deadLetterHeld("model_failed", "v" + champion.version + " failed on live input; no version to serve");
                return;
            }
            if (!champion.featureNames.equals(xFeatures) && !rebuild(champion.featureNames)) {
                return;  // every held record lacked a feature of the version that took over: dead-lettered
            }
            try {
                scores = champion.score(x, held.size());
            } catch (Exception e) {
                // The graph ran at warm-up; failing now is the version's fault, not these records': serve another.
                versionFailed(champion, e);
            }
        }
        int rows = held.size();
        OnnxModel challenger = registry.challenger();
        boolean shadow = challenger != null && challenger.featureNames.equals(champion.featureNames);
        float[] chScores = null;
        if (shadow) {
            try {
                chScores = challenger.score(x, rows);
            } catch (Exception e) {
                versionFailed(challenger, e);
                shadow = false;
            }
        }
        double now = System.currentTimeMillis() / 1000.0;
        // Written as Jackson writes finite doubles (Double.toString), once per batch rather than once per record.
        String threshold = Float.isFinite(champion.thresholdF32) ? Double.toString(champion.thresholdF32) : null;
        String scoredAt = Double.toString(now);
        for (int r = 0; r < rows; r++) {
            Held h = held.get(r);
            boolean flag = scores[r] > champion.thresholdF32;
            boolean chFlag = shadow && chScores[r] > challenger.thresholdF32;
            if (shadow) {
                shadowRecords++;
                shadowAgree += chFlag == flag ? 1 : 0;
                shadowFlagged += chFlag ? 1 : 0;
            }
            byte[] value;
            try {
                value = scoreJson(h, champion, scores[r], flag, threshold, scoredAt,
                        shadow ? challenger : null, shadow ? chScores[r] : 0f, chFlag);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
            forwardAs(h, new Record<>(h.record.key(), value, h.record.timestamp(), new RecordHeaders()), SCORES_SINK);
            observe(h, flag, now);
        }
        metrics.scored.labelValues(String.valueOf(champion.version)).inc(rows);
        held.clear();
        registry.letGo(rows);
        if (shadow) {
            maybePromote(rows);
        }
    }

    /** Rebuilds {@code x} for {@code features}; held records lacking one are dead-lettered. False when none is left. */
    private boolean rebuild(List<String> features) {
        int n = features.size();
        List<Held> keep = new ArrayList<>();
        float[] rebuilt = new float[Math.max(batching.size(), held.size()) * n];
        Map<String, Integer> index = FeatureRecord.index(features);
        for (Held h : held) {
            FeatureRecord body;
            try {
                body = FeatureRecord.read(h.record.value(), features, index);  // read before: it parses
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
            if (body.usable()) {
                body.copyTo(rebuilt, keep.size() * n);
                keep.add(new Held(h.record, h.topic, h.partition, h.offset, body));
            } else {
                deadLetterHeld(h, "missing_feature", "not a record of the features " + features);
            }
        }
        registry.letGo(held.size() - keep.size());
        held.clear();
        held.addAll(keep);
        x = rebuilt;
        xFeatures = features;
        return !held.isEmpty();
    }

    /** Marks {@code model} bad; logs and counts it with the version that serves now. */
    private void versionFailed(OnnxModel model, Exception e) {
        String role = model == registry.champion() ? "champion" : "challenger";
        OnnxModel successor = registry.fail(model);
        OnnxModel serving = registry.champion();
        metrics.versionsFailed.inc();
        LOG.error("version_failed", "version", model.version, "role", role, "error",
                e.getClass().getSimpleName() + ": " + String.valueOf(e.getMessage()).substring(0,
                        Math.min(300, String.valueOf(e.getMessage()).length())),
                "serving_version", serving == null || registry.isBad(serving.version) ? null : serving.version);
        if (successor != null) {
            checkChampionHealth("version_failed");
        }
        metrics.modelVersion.set(serving == null || registry.isBad(serving.version) ? 0 : serving.version);
        OnnxModel challenger = registry.challenger();
        metrics.challengerVersion.set(challenger == null ? 0 : challenger.version);
        Integer pinned = registry.pinned();
        metrics.pinnedVersion.set(pinned == null ? 0 : pinned);
    }

    /** Every held record to the dead-letter sink with {@code reason}. */
    private void deadLetterHeld(String reason, String detail) {
        for (Held h : held) {
            deadLetterHeld(h, reason, detail);
        }
        LOG.error("batch_deadlettered", "reason", reason, "records", held.size(), "detail", detail);
        registry.letGo(held.size());
        held.clear();
    }

    private void deadLetterHeld(Held h, String reason, String detail) {
        forwardAs(h, new Record<>(h.record.key(), h.record.value(), h.record.timestamp(),
                deadLetterHeaders(reason, h.topic, h.partition, h.offset, detail)), DEADLETTER_SINK);
        metrics.deadlettered.labelValues(reason).inc();
    }

    /**
     * The score record of {@code h}: the Python scorer's fields in its order, the challenger's verdict last when
     * {@code challenger} is set. Written with Jackson's generator, so byte for byte what its tree model wrote.
     */
    private byte[] scoreJson(Held h, OnnxModel champion, float score, boolean flag, String threshold, String scoredAt,
                             OnnxModel challenger, float chScore, boolean chFlag) throws IOException {
        JsonNode[] kept = h.body.kept;
        scoreBytes.reset();
        JsonGenerator g = scoreWriter;
        g.writeStartObject();
        copy(g, "device_id", kept[FeatureRecord.DEVICE_ID]);
        copy(g, "seq", kept[FeatureRecord.SEQ]);
        copy(g, "ts", kept[FeatureRecord.TS]);
        g.writeNumberField("model_version", champion.version);
        g.writeNumberField("score", (double) score);
        // As streamtrain/model.py Assessment: the threshold applied (float32), and whose baseline it is.
        g.writeFieldName("threshold");
        if (threshold != null) {
            g.writeNumber(threshold);
        } else {
            g.writeNumber((double) champion.thresholdF32);
        }
        g.writeBooleanField("is_anomaly", flag);
        g.writeStringField("baseline", "global");
        g.writeFieldName("scored_at");
        g.writeNumber(scoredAt);
        g.writeStringField("scorer", "kafka-streams");
        g.writeStringField("instance", settings.instanceId());
        g.writeObjectFieldStart("source");
        g.writeNumberField("partition", h.partition);
        g.writeNumberField("offset", h.offset);
        g.writeEndObject();
        if (kept[FeatureRecord.LABEL] != null) {
            copy(g, "label", kept[FeatureRecord.LABEL]);
        }
        if (kept[FeatureRecord.ANOMALY] != null) {
            copy(g, "anomaly_kind", kept[FeatureRecord.ANOMALY]);
        }
        if (kept[FeatureRecord.DEVICE_TYPE] != null) {
            copy(g, "device_type", kept[FeatureRecord.DEVICE_TYPE]);
        }
        if (challenger != null) {
            g.writeObjectFieldStart("challenger");
            g.writeNumberField("model_version", challenger.version);
            g.writeNumberField("score", (double) chScore);
            g.writeBooleanField("is_anomaly", chFlag);
            g.writeEndObject();
        }
        g.writeEndObject();
        g.flush();
        return scoreBytes.toByteArray();
    }

    /** An input field into the score record; null when the input lacks it (as the tree model's set() did). */
    private static void copy(JsonGenerator g, String name, JsonNode value) throws IOException {
        g.writeFieldName(name);
        if (value == null) {
            g.writeNull();
        } else if (value instanceof ValueNode) {
            value.serialize(g, null);
        } else {
            FeatureRecord.JSON.writeTree(g, value);
        }
    }

    private void observe(Held h, boolean flag, double now) {
        if (flag) {
            metrics.flagged.inc();
        }
        metrics.lagSeconds.observe(Math.max(0.0, now - arrivalSeconds(h.record)));
        JsonNode ts = h.body.kept[FeatureRecord.TS];
        if (ts != null && ts.isNumber()) {
            metrics.eventAge.observe(Math.max(0.0, now - ts.asDouble()));
        }
        windowRecords++;
        windowFlagged += flag ? 1 : 0;
        if (windowRecords == RATE_WINDOW) {
            metrics.anomalyRate.set((double) windowFlagged / windowRecords);
            windowRecords = windowFlagged = 0;
        }
    }

    /** Forwards {@code out} as the processing of {@code h} would have, whatever scope flush() runs in
     *  (process, punctuation, or the commit's cache flush). */
    private void forwardAs(Held h, Record<byte[], byte[]> out, String sink) {
        if (internal == null) {
            context.forward(out, sink);
            return;
        }
        ProcessorRecordContext previousContext = internal.recordContext();
        ProcessorNode<?, ?, ?, ?> previousNode = internal.currentNode();
        internal.setRecordContext(new ProcessorRecordContext(h.record.timestamp(), h.offset, h.partition, h.topic,
                h.record.headers()));
        internal.setCurrentNode(node);
        try {
            context.forward(out, sink);
        } finally {
            internal.setRecordContext(previousContext);
            internal.setCurrentNode(previousNode);
        }
    }

    private void applyModelEvents() {
        List<ModelRegistry.Event> events = registry.apply();
        if (events.isEmpty()) {
            return;
        }
        for (ModelRegistry.Event e : events) {
            if (e.name().equals("version_held")) {
                OnnxModel held = registry.heldBack();
                String reason = held != null && held.unhealthy != null ? held.unhealthy : "unhealthy";
                metrics.held.labelValues(reason).inc();
                LOG.warning("version_held", "version", e.newVersion(), "serving_version", e.oldVersion(),
                        "reason", reason, "how_to_serve", "streamtrain models promote " + e.newVersion());
                continue;
            }
            if (e.name().equals("version_refused")) {
                metrics.refused.labelValues("version_failed").inc();
                LOG.warning("version_refused", "version", e.newVersion(), "serving_version", e.oldVersion(),
                        "reason", "failed on live input after warm-up");
                continue;
            }
            if (e.name().equals("version_not_served")) {
                metrics.notServed.inc();
                LOG.warning("version_not_served", "version", e.newVersion(), "pinned_version", e.oldVersion(),
                        "reason", "pinned", "how_to_serve", "streamtrain models unpin");
                continue;
            }
            LOG.info(e.name(), "old_version", e.oldVersion(), "new_version", e.newVersion());
            if (e.name().equals("challenger_loaded")) {
                shadowRecords = shadowAgree = shadowFlagged = 0;
            } else {
                checkChampionHealth(e.name());
            }
        }
        OnnxModel champion = registry.champion();
        OnnxModel challenger = registry.challenger();
        OnnxModel held = registry.heldBack();
        metrics.modelVersion.set(champion == null ? 0 : champion.version);
        metrics.challengerVersion.set(challenger == null ? 0 : challenger.version);
        metrics.heldVersion.set(held == null ? 0 : held.version);
        Integer pinned = registry.pinned();
        metrics.pinnedVersion.set(pinned == null ? 0 : pinned);
    }

    /** Flags a champion whose training was not healthy: served only with nothing else to serve, or on request. */
    private void checkChampionHealth(String event) {
        OnnxModel champion = registry.champion();
        String reason = champion == null ? null : champion.unhealthy;
        metrics.championUnhealthy.set(reason == null ? 0 : 1);
        if (reason != null) {
            LOG.warning("champion_unhealthy", "version", champion.version, "reason", reason, "why",
                    event.equals("held_promoted") ? "promoted on request"
                            : event.equals("pinned") ? "pinned on request" : "no healthy version to serve instead");
        }
    }

    /** After a batch of {@code rows} shadow-scored records. */
    private void maybePromote(int rows) {
        if (registry.held() > 0) {
            return;  // another task holds records for the current champion: promote after its flush
        }
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
            } else if ((shadowRecords - rows) / settings.promoteAfter() != shadowRecords / settings.promoteAfter()) {
                LOG.info("challenger_not_promoted", "agreement", Math.round(agreement * 1e4) / 1e4,
                        "needed", settings.promoteMinAgreement(), "shadow_records", shadowRecords);
            }
        }
    }

    private void deadLetter(Record<byte[], byte[]> record, RecordMetadata where, String reason, String detail) {
        RecordHeaders headers = deadLetterHeaders(reason, where.topic(), where.partition(), where.offset(), detail);
        context.forward(new Record<>(record.key(), record.value(), record.timestamp(), headers), DEADLETTER_SINK);
        metrics.deadlettered.labelValues(reason).inc();
    }

    private static RecordHeaders deadLetterHeaders(String reason, String topic, int partition, long offset,
                                                   String detail) {
        RecordHeaders headers = new RecordHeaders();
        headers.add("streamtrain.reason", reason.getBytes(StandardCharsets.UTF_8));
        headers.add("streamtrain.source", ("kafka:" + topic + "/" + partition + "@" + offset)
                .getBytes(StandardCharsets.UTF_8));
        if (!detail.isEmpty()) {
            headers.add("streamtrain.detail", detail.substring(0, Math.min(1000, detail.length()))
                    .getBytes(StandardCharsets.UTF_8));
        }
        return headers;
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
