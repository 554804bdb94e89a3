package streamtrain.scorer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.test.TestRecord;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The scorer's topology (Main.topology: ScoreProcessor between the features topic and the scores and
 * dead-letter sinks) on Kafka's TopologyTestDriver, with real model versions: the records the trainer
 * publishes (Keras artefact, metadata, ONNX scoring graph) read by the real ModelWatcher logic and run
 * by ONNX Runtime. The expected scores and flags are the Python scorer's for the same versions and rows
 * (src/test/resources/models.json, made by tests/score_streams/topology_fixture.py).
 */
class ScoreTopologyTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static JsonNode fixture;

    private final List<String> refused = new ArrayList<>();
    private Settings settings;
    private ModelRegistry registry;
    private ScorerMetrics metrics;
    private ModelWatcher watcher;
    private TopologyTestDriver driver;
    private TestInputTopic<byte[], byte[]> features;
    private TestOutputTopic<byte[], byte[]> scores;
    private TestOutputTopic<byte[], byte[]> deadLetters;

    @BeforeAll
    static void readFixture() throws Exception {
        try (InputStream in = ScoreTopologyTest.class.getResourceAsStream("/models.json")) {
            fixture = JSON.readTree(in);
        }
    }

    @BeforeEach
    void start() {
        settings = Settings.fromEnv(Map.of("STREAMTRAIN_INSTANCE_ID", "topology-test",
                "STREAMTRAIN_TOPIC_FEATURES", "features", "STREAMTRAIN_TOPIC_SCORES", "scores",
                "STREAMTRAIN_TOPIC_DEADLETTER", "deadletter"));
        registry = new ModelRegistry(false);
        metrics = new ScorerMetrics();
        watcher = new ModelWatcher(settings, registry, refused::add);
        watcher.catchUp();  // an empty models topic: versions load as they arrive
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, "topology-test");
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        driver = new TopologyTestDriver(Main.topology(settings, registry, metrics), props);
        features = driver.createInputTopic("features", new ByteArraySerializer(), new ByteArraySerializer());
        scores = driver.createOutputTopic("scores", new ByteArrayDeserializer(), new ByteArrayDeserializer());
        deadLetters = driver.createOutputTopic("deadletter", new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    @AfterEach
    void stop() {
        driver.close();
        if (registry.champion() != null) {
            registry.champion().close();
        }
    }

    /** Publishes version {@code v} of the fixture to the test's watcher. */
    private void publish(int v) {
        publishTo(watcher, v);
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** Feature row i of the fixture as the preprocessor writes it, keyed by device. */
    private void send(int i) throws Exception {
        ObjectNode body = JSON.createObjectNode();
        String device = fixture.path("devices").get(i).asText();
        body.put("device_id", device).put("ts", 1764052800.0 + i).put("seq", i);
        JsonNode row = fixture.path("rows").get(i);
        for (int f = 0; f < row.size(); f++) {
            body.put(fixture.path("features").get(f).asText(), row.get(f).asDouble());
        }
        body.put("device_type", "pump").put("label", i >= 6 ? 1 : 0);
        features.pipeInput(bytes(device), JSON.writeValueAsBytes(body));
    }

    private List<JsonNode> readScores() throws Exception {
        List<JsonNode> out = new ArrayList<>();
        for (byte[] value : scores.readValuesToList()) {
            out.add(JSON.readTree(value));
        }
        return out;
    }

    private static void assertScoredLikePython(JsonNode score, int version, int row) {
        JsonNode expected = fixture.path("versions").path(String.valueOf(version));
        assertEquals(version, score.get("model_version").asInt());
        double want = expected.path("scores").get(row).asDouble();
        assertEquals(want, score.get("score").asDouble(), Math.abs(want) * 1e-5, "score of row " + row);
        assertEquals(expected.path("flags").get(row).asBoolean(), score.get("is_anomaly").asBoolean(), "flag of row " + row);
        assertEquals((float) expected.path("threshold").asDouble(), (float) score.get("threshold").asDouble());
        assertEquals(row, score.get("seq").asInt());
    }

    @Test
    void scoresAFeatureRecordWithTheLoadedModelAsThePythonScorerDoes() throws Exception {
        publish(1);
        assertEquals(1, registry.highestSeen(), "v1 loaded and offered: " + refused);
        int rows = fixture.path("rows").size();
        for (int i = 0; i < rows; i++) {
            send(i);
        }
        List<JsonNode> out = readScores();
        assertEquals(rows, out.size());
        for (int i = 0; i < rows; i++) {
            assertScoredLikePython(out.get(i), 1, i);
        }
        boolean[] flags = new boolean[rows];
        for (int i = 0; i < rows; i++) {
            flags[i] = out.get(i).get("is_anomaly").asBoolean();
        }
        assertTrue(flags[rows - 1] && !flags[0], "the fixture exercises both decisions");
        JsonNode first = out.get(0);
        assertEquals("kafka-streams", first.get("scorer").asText());
        assertEquals("topology-test", first.get("instance").asText());
        assertEquals("global", first.get("baseline").asText());
        assertEquals("pump", first.get("device_type").asText());
        assertEquals(0, first.get("label").asInt());
        assertEquals(0, first.path("source").get("offset").asLong());
        assertTrue(deadLetters.isEmpty());
        assertEquals(rows, metrics.scored.labelValues("1").get());
        assertTrue(refused.isEmpty(), refused.toString());
    }

    /**
     * Each score record byte for byte as Jackson's tree model wrote it when the scorer built one ObjectNode per
     * record: the input's fields (whatever their JSON type) copied, the scorer's own in the same order.
     */
    @Test
    void scoreRecordsAreWrittenByteForByteAsTheTreeModelWroteThem() throws Exception {
        publish(1);
        String row = "\"temperature\": 71.25, \"current\": 2.1, \"vibration\": 0.51, \"pressure\": 3.9";
        String[] inputs = {
            "{\"device_id\": \"d1\", \"ts\": 1765142481.1234567, \"seq\": 12, " + row + ", \"label\": 0}",
            "{\"device_id\": \"d\\u00e9\\n\\\"1\", \"ts\": 1e-7, \"seq\": 123456789012345678901234567890, " + row
                    + ", \"label\": \"x\", \"anomaly\": \"bearing\", \"device_type\": \"pump\"}",
            "{" + row + ", \"ts\": \"2026-12-07\", \"label\": [0, 1], \"anomaly\": {\"kind\": null, \"at\": 1.5}}",
            "{\"seq\": null, \"ts\": NaN, \"device_id\": 7, " + row + ", \"device_type\": true, \"seq\": -4}",
        };
        for (String in : inputs) {
            features.pipeInput(bytes("k"), bytes(in));
        }
        List<byte[]> out = scores.readValuesToList();
        assertEquals(inputs.length, out.size(), "dead letters: " + deadLetters.readValuesToList().size());
        for (int i = 0; i < inputs.length; i++) {
            JsonNode body = FeatureRecord.JSON.readTree(bytes(inputs[i]));
            JsonNode got = JSON.readTree(out.get(i));
            ObjectNode want = JSON.createObjectNode();
            want.set("device_id", body.get("device_id"));
            want.set("seq", body.get("seq"));
            want.set("ts", body.get("ts"));
            want.put("model_version", 1);
            want.put("score", got.get("score").asDouble());
            want.put("threshold", (double) (float) fixture.path("versions").path("1").path("threshold").asDouble());
            want.put("is_anomaly", got.get("is_anomaly").asBoolean());
            want.put("baseline", "global");
            want.put("scored_at", got.get("scored_at").asDouble());
            want.put("scorer", "kafka-streams");
            want.put("instance", "topology-test");
            want.putObject("source").put("partition", 0).put("offset", (long) i);
            for (String gt : new String[] {"label", "anomaly", "device_type"}) {
                if (body.has(gt)) {
                    want.set(gt.equals("anomaly") ? "anomaly_kind" : gt, body.get(gt));
                }
            }
            assertEquals(new String(FeatureRecord.JSON.writeValueAsBytes(want), StandardCharsets.UTF_8),
                    new String(out.get(i), StandardCharsets.UTF_8));
        }
    }

    @Test
    void aModelUpdateSwapsTheVersionBetweenTwoRecords() throws Exception {
        publish(1);
        for (int i = 0; i < 5; i++) {
            send(i);
        }
        publish(2);
        for (int i = 5; i < 10; i++) {
            send(i);
        }
        List<JsonNode> out = readScores();
        assertEquals(10, out.size());
        for (int i = 0; i < 10; i++) {
            assertScoredLikePython(out.get(i), i < 5 ? 1 : 2, i);
        }
        assertEquals(2, registry.champion().version);
        assertEquals(2.0, metrics.modelVersion.get());
    }

    @Test
    void aCorruptModelIsRefusedAndTheOldOneKeepsScoring() throws Exception {
        publish(1);
        send(0);
        // v2's records with its ONNX graph cut short: checksums made for the cut graph, so the
        // codec accepts the version and ONNX Runtime refuses the graph.
        for (JsonNode rec : fixture.path("versions").path("2").path("records")) {
            String key = rec.get(0).asText();
            byte[] value = Base64.getDecoder().decode(rec.get(1).asText());
            if (key.endsWith("/manifest")) {
                ObjectNode manifest = (ObjectNode) JSON.readTree(value);
                ObjectNode onnx = (ObjectNode) manifest.path("attachments").path("onnx");
                int first = onnx.get("first_chunk").asInt();
                onnx.put("chunks", 1);
                onnx.put("size", 100);
                onnx.put("sha256", ModelAssembler.sha256(Arrays.copyOf(graphChunk(first), 100)));
                value = JSON.writeValueAsBytes(manifest);
            } else if (key.endsWith("/chunk/" + onnxFirstChunk())) {
                value = Arrays.copyOf(value, 100);
            }
            watcher.accept(bytes(key), value);
        }
        // And a record that is no part of any model.
        watcher.accept(bytes("model/garbage"), bytes("\u0000 garbage"));
        assertEquals(List.of("load_failed", "bad_key"), refused);
        send(1);
        List<JsonNode> out = readScores();
        assertEquals(2, out.size());
        assertScoredLikePython(out.get(0), 1, 0);
        assertScoredLikePython(out.get(1), 1, 1);
        assertEquals(1, registry.champion().version);
    }

    private static int onnxFirstChunk() throws Exception {
        JsonNode records = fixture.path("versions").path("2").path("records");
        JsonNode manifest = JSON.readTree(Base64.getDecoder().decode(records.get(records.size() - 1).get(1).asText()));
        return manifest.path("attachments").path("onnx").get("first_chunk").asInt();
    }

    private static byte[] graphChunk(int index) {
        for (JsonNode rec : fixture.path("versions").path("2").path("records")) {
            if (rec.get(0).asText().endsWith("/chunk/" + index)) {
                return Base64.getDecoder().decode(rec.get(1).asText());
            }
        }
        throw new AssertionError("no chunk " + index);
    }

    @Test
    void badInputIsDeadLetteredWithTheReasonInHeaders() throws Exception {
        publish(1);
        features.pipeInput(bytes("dev-x"), bytes("{not json"));
        features.pipeInput(bytes("dev-x"), bytes("{\"device_id\": \"dev-x\", \"seq\": 1, \"temperature\": 60}"));
        features.pipeInput(bytes("dev-x"), bytes("{\"device_id\": \"dev-x\", \"seq\": 2, \"temperature\": 3.5e39,"
                + " \"current\": 1, \"vibration\": 0.3, \"pressure\": \"high\"}"));
        send(0);
        List<TestRecord<byte[], byte[]>> dead = deadLetters.readRecordsToList();
        assertEquals(3, dead.size());
        String[] reasons = new String[3];
        for (int i = 0; i < 3; i++) {
            Headers h = dead.get(i).headers();
            reasons[i] = header(h, "streamtrain.reason");
            assertEquals("kafka:features/0@" + i, header(h, "streamtrain.source"));
            assertFalse(header(h, "streamtrain.detail").isEmpty());
            assertArrayEquals(bytes("dev-x"), dead.get(i).key());
        }
        assertArrayEquals(new String[] {"malformed_json", "missing_feature", "bad_feature_value"}, reasons);
        assertArrayEquals(bytes("{not json"), dead.get(0).value(), "the dead letter keeps the record as it came");
        assertEquals("missing ['current', 'vibration', 'pressure']", header(dead.get(1).headers(), "streamtrain.detail"));
        List<JsonNode> out = readScores();
        assertEquals(1, out.size(), "bad input does not stop the good record after it");
        assertScoredLikePython(out.get(0), 1, 0);
        assertEquals(1.0, metrics.deadlettered.labelValues("malformed_json").get());
        assertEquals(1.0, metrics.deadlettered.labelValues("bad_feature_value").get());
    }

    private static String header(Headers headers, String name) {
        Header h = headers.lastHeader(name);
        assertTrue(h != null, "header " + name);
        return new String(h.value(), StandardCharsets.UTF_8);
    }

    /** Version {@code v}'s records with {@code training_health.status} set in its manifest, as the trainer writes it. */
    private static List<byte[][]> withHealth(int v, String status) throws Exception {
        List<byte[][]> out = new ArrayList<>();
        for (JsonNode rec : fixture.path("versions").path(String.valueOf(v)).path("records")) {
            String key = rec.get(0).asText();
            byte[] value = Base64.getDecoder().decode(rec.get(1).asText());
            if (key.endsWith("/manifest")) {
                ObjectNode manifest = (ObjectNode) JSON.readTree(value);
                ((ObjectNode) manifest.path("metadata")).putObject("training_health").put("status", status)
                        .putArray("problems").add(status + ": test");
                value = JSON.writeValueAsBytes(manifest);
            }
            out.add(new byte[][] {bytes(key), value});
        }
        return out;
    }

    private static byte[] promoteRequest(int version) {
        return bytes("{\"version\": " + version + ", \"at\": 0}");
    }

    @Test
    void anUnhealthyVersionIsHeldWhileTheOldOneScoresUntilPromoted() throws Exception {
        publish(1);
        for (int i = 0; i < 4; i++) {
            send(i);
        }
        for (byte[][] rec : withHealth(2, "no_better_than_constant")) {
            watcher.accept(rec[0], rec[1]);
        }
        for (int i = 4; i < 7; i++) {
            send(i);
        }
        assertEquals(1, registry.champion().version);
        assertEquals(2, registry.heldBack().version);
        assertEquals(1.0, metrics.held.labelValues("no_better_than_constant").get());
        assertEquals(0.0, metrics.held.labelValues("not_converged").get());
        assertEquals(2.0, metrics.heldVersion.get());
        watcher.accept(bytes("control/promote"), promoteRequest(2));
        for (int i = 7; i < 10; i++) {
            send(i);
        }
        List<JsonNode> out = readScores();
        assertEquals(10, out.size());
        for (int i = 0; i < 10; i++) {
            assertScoredLikePython(out.get(i), i < 7 ? 1 : 2, i);
        }
        assertNull(registry.heldBack());
        assertEquals(2.0, metrics.modelVersion.get());
        assertEquals(1.0, metrics.championUnhealthy.get());
        assertEquals(0.0, metrics.heldVersion.get());
        assertTrue(refused.isEmpty(), refused.toString());
    }

    /** A fresh watcher and its registry, caught up with the models topic as it was at start. */
    private record Started(ModelWatcher watcher, ModelRegistry registry) {
    }

    /**
     * A fresh watcher reading v1, v2 with training health {@code v2Health} and then {@code controls}
     * (key, value) before it caught up: what a restarted scorer finds on the models topic.
     */
    private Started caughtUp(String v2Health, byte[][]... controls) throws Exception {
        ModelRegistry fresh = new ModelRegistry(false);
        ModelWatcher w = new ModelWatcher(settings, fresh, refused::add);
        publishTo(w, 1);
        for (byte[][] rec : withHealth(2, v2Health)) {
            w.accept(rec[0], rec[1]);
        }
        for (byte[][] control : controls) {
            w.accept(control[0], control[1]);
        }
        w.catchUp();
        fresh.apply();
        return new Started(w, fresh);
    }

    @Test
    void atStartTheNewestHealthyVersionServesAndAPromotionOnTheTopicOutlivesARestart() throws Exception {
        ModelRegistry held = caughtUp("not_converged").registry();
        assertEquals(1, held.champion().version);
        assertEquals(2, held.heldBack().version);
        held.champion().close();
        held.heldBack().close();
        ModelRegistry promoted =
                caughtUp("not_converged", new byte[][] {bytes("control/promote"), promoteRequest(2)}).registry();
        assertEquals(2, promoted.champion().version);
        assertNull(promoted.heldBack());
        promoted.champion().close();
        assertTrue(refused.isEmpty(), refused.toString());
    }

    /** Version {@code from}'s records renumbered as version {@code to} (same model, same scores). */
    private static List<byte[][]> renumbered(int from, int to) throws Exception {
        List<byte[][]> out = new ArrayList<>();
        for (JsonNode rec : fixture.path("versions").path(String.valueOf(from)).path("records")) {
            String key = rec.get(0).asText().replace("model/" + from + "/", "model/" + to + "/");
            byte[] value = Base64.getDecoder().decode(rec.get(1).asText());
            if (key.endsWith("/manifest")) {
                ObjectNode manifest = (ObjectNode) JSON.readTree(value);
                ((ObjectNode) manifest.path("metadata")).put("version", to);
                value = JSON.writeValueAsBytes(manifest);
            }
            out.add(new byte[][] {bytes(key), value});
        }
        return out;
    }

    private static byte[] pinRequest(Integer version) {
        return bytes("{\"version\": " + version + ", \"at\": 0}");
    }

    @Test
    void aPinServesAnOlderVersionNewerOnesAreNotedAndUnpinServesTheNewest() throws Exception {
        publish(1);
        publish(2);
        for (int i = 0; i < 3; i++) {
            send(i);
        }
        watcher.accept(bytes("control/pin"), pinRequest(1));
        for (int i = 3; i < 5; i++) {
            send(i);
        }
        assertEquals(1.0, metrics.pinnedVersion.get());
        for (byte[][] rec : renumbered(2, 3)) {
            watcher.accept(rec[0], rec[1]);
        }
        for (int i = 5; i < 7; i++) {
            send(i);
        }
        assertEquals(1.0, metrics.notServed.get());
        watcher.accept(bytes("control/pin"), pinRequest(9));  // not on the topic: refused, v1 keeps serving
        send(7);
        assertEquals(List.of("pin_refused"), refused);
        watcher.accept(bytes("control/pin"), pinRequest(null));
        for (int i = 8; i < 10; i++) {
            send(i);
        }
        List<JsonNode> out = readScores();
        assertEquals(10, out.size());
        for (int i = 0; i < 8; i++) {
            assertScoredLikePython(out.get(i), i < 3 ? 2 : 1, i);
        }
        for (int i = 8; i < 10; i++) {
            assertEquals(3, out.get(i).get("model_version").asInt(), "unpinned: the newest healthy version");
        }
        assertEquals(0.0, metrics.pinnedVersion.get());
        assertEquals(3.0, metrics.modelVersion.get());
    }

    @Test
    void anUnpinBeforeThePinIsAppliedLeavesTheRuleServing() throws Exception {
        // Pin 1 and unpin read in one poll, before the stream thread takes the pin: v2 keeps serving.
        Started started = caughtUp("ok");
        ModelWatcher w = started.watcher();
        ModelRegistry fresh = started.registry();
        assertEquals(2, fresh.champion().version);
        w.accept(bytes("control/pin"), pinRequest(1));
        w.accept(bytes("control/pin"), pinRequest(null));
        assertEquals(List.of("unpinned"), fresh.apply().stream().map(ModelRegistry.Event::name).toList());
        assertEquals(2, fresh.champion().version, "the pending pin was undone");
        assertNull(fresh.pinned());
        fresh.champion().close();
    }

    @Test
    void aPinMayNameAHeldVersionAndOutlivesARestart() throws Exception {
        Started started = caughtUp("not_converged", new byte[][] {bytes("control/pin"), pinRequest(1)},
                new byte[][] {bytes("control/pin"), pinRequest(2)});
        ModelWatcher w = started.watcher();
        ModelRegistry fresh = started.registry();
        assertEquals(2, fresh.champion().version);
        assertEquals(2, fresh.pinned());
        assertNull(fresh.heldBack());
        w.accept(bytes("control/pin"), pinRequest(null));
        assertEquals(List.of("unpinned"), fresh.apply().stream().map(ModelRegistry.Event::name).toList());
        assertEquals(1, fresh.champion().version, "unpinned: the newest healthy version");
        fresh.champion().close();
        w.accept(bytes("control/pin"), bytes("{\"version\": \"2\"}"));
        w.accept(bytes("control/promote"), bytes("{\"version\": null}"));
        assertEquals(List.of("bad_control", "bad_control"), refused);
    }

    @Test
    void theWatcherOffersAVersionAndOnlyTheStreamThreadTakesIt() {
        assertNull(registry.champion());
        publish(1);
        assertEquals(1, registry.highestSeen());
        assertNull(registry.champion(), "taken by the stream thread between records, not by the watcher");
    }

    /** Version 3 of failing_version.json: v1's manifest, models that pass warm-up and fail on live input. */
    private static List<byte[][]> failingVersion() throws Exception {
        JsonNode failing;
        try (InputStream in = ScoreTopologyTest.class.getResourceAsStream("/failing_version.json")) {
            failing = JSON.readTree(in);
        }
        List<byte[][]> out = new ArrayList<>();
        for (JsonNode rec : failing.path("records")) {
            out.add(new byte[][] {bytes(rec.get(0).asText()), Base64.getDecoder().decode(rec.get(1).asText())});
        }
        return out;
    }

    @Test
    void aVersionFailingAfterWarmUpGivesWayToThePreviousOneAndIsNeverServedAgain() throws Exception {
        publish(1);
        for (int i = 0; i < 3; i++) {
            send(i);
        }
        for (byte[][] rec : failingVersion()) {
            watcher.accept(rec[0], rec[1]);
        }
        assertTrue(refused.isEmpty(), "v3 passes load and warm-up: " + refused);
        for (int i = 3; i < 10; i++) {
            send(i);
        }
        List<JsonNode> out = readScores();
        assertEquals(10, out.size(), "every record scored exactly once");
        for (int i = 0; i < 10; i++) {
            assertScoredLikePython(out.get(i), 1, i);
        }
        assertTrue(deadLetters.isEmpty());
        assertEquals(1, registry.champion().version);
        assertTrue(registry.isBad(3));
        assertEquals(1.0, metrics.versionsFailed.get());
        assertEquals(1.0, metrics.modelVersion.get());
        watcher.accept(bytes("control/promote"), promoteRequest(3));
        watcher.accept(bytes("control/pin"), promoteRequest(3));
        send(0);
        assertEquals(1, readScores().get(0).get("model_version").asInt());
        assertEquals(List.of("pin_refused"), refused);
        assertEquals(1.0, metrics.refused.labelValues("version_failed").get());
        assertFalse(watcher.healthy().containsKey(3));
    }

    @Test
    void aFailedVersionWithNoneBeforeItDeadLettersItsRecordsUntilTheRulePickServes() throws Exception {
        ModelWatcher fresh = new ModelWatcher(settings, registry, refused::add);
        publishTo(fresh, 1);
        for (byte[][] rec : failingVersion()) {
            fresh.accept(rec[0], rec[1]);
        }
        fresh.catchUp();  // only the newest loads at start: v3, with nothing kept before it
        send(0);
        send(1);
        assertTrue(readScores().isEmpty());
        List<TestRecord<byte[], byte[]>> dead = deadLetters.readRecordsToList();
        assertEquals(2, dead.size());
        assertEquals("model_failed", header(dead.get(0).headers(), "streamtrain.reason"));
        assertEquals(2.0, metrics.deadlettered.labelValues("model_failed").get());
        fresh.serveFallbackIfAsked();  // the watcher thread's loop: v1, the rule's pick without v3
        for (int i = 2; i < 5; i++) {
            send(i);
        }
        List<JsonNode> out = readScores();
        assertEquals(3, out.size());
        for (int i = 0; i < 3; i++) {
            assertScoredLikePython(out.get(i), 1, i + 2);
        }
        assertEquals(1.0, metrics.versionsFailed.get());
        assertTrue(refused.isEmpty(), refused.toString());
    }

    /** Publishes version {@code v} of the fixture to {@code w}, record by record, as the models topic holds it. */
    private static void publishTo(ModelWatcher w, int v) {
        for (JsonNode rec : fixture.path("versions").path(String.valueOf(v)).path("records")) {
            w.accept(bytes(rec.get(0).asText()), Base64.getDecoder().decode(rec.get(1).asText()));
        }
    }
}
