package io.streamtrain.ingest;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The shared Sparkplug B vectors (tests/ingest/vectors/sparkplug.json), written from the Python decoder's outcomes. */
class SparkplugDecoderTest {
    static JsonNode vectors() throws IOException {
        return new ObjectMapper().readTree(Path.of(System.getProperty("vectors.dir"), "sparkplug.json").toFile());
    }

    @TestFactory
    List<DynamicTest> sequencesMatchThePythonDecoder() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode s : vectors().get("sequences")) {
            tests.add(DynamicTest.dynamicTest(s.get("name").asText(), () -> replay(s)));
        }
        assertTrue(tests.size() >= 8, "the vectors file lost its sequences");
        return tests;
    }

    static void replay(JsonNode s) {
        SparkplugDecoder decoder = new SparkplugDecoder(IngestMappingTest.mapping(s.get("mapping")),
                s.get("rebirth_interval_s").asDouble(), 100_000);
        int i = 0;
        for (JsonNode m : s.get("messages")) {
            String where = "message " + i++ + ": " + m.get("topic").asText();
            int max = m.has("max_bytes") ? m.get("max_bytes").asInt() : TelemetryValidator.MAX_PAYLOAD_BYTES;
            SparkplugDecoder.Outcome out = decoder.apply(m.get("topic").asText(),
                    HexFormat.of().parseHex(m.get("payload_hex").asText()), m.get("arrived").asDouble(), max, null);
            assertEquals(m.get("message_type").asText(), out.messageType(), where);
            if (m.has("reason")) {
                assertTrue(out.rejection != null, where + ": accepted");
                assertEquals(m.get("reason").asText(), out.rejection.reason(), where + ": " + out.rejection.detail());
                String detail = m.get("detail").asText();
                if (out.rejection.reason().equals("malformed_protobuf")) {  // the rest is each protobuf library's
                    detail = detail.substring(0, detail.indexOf(':') + 1);
                    assertEquals(detail, out.rejection.detail().substring(0, detail.length()), where);
                } else {
                    assertEquals(detail, out.rejection.detail(), where);  // the dead letter's streamtrain.detail
                }
                assertEquals(m.get("key").isNull() ? null : m.get("key").asText(), out.deviceId(), where);
            } else {
                assertNull(out.rejection, where);
                List<String> expected = new ArrayList<>();
                m.get("records").forEach(r -> expected.add(r.get("key").asText() + " " + r.get("value").asText()));
                List<String> got = new ArrayList<>();
                out.readings.forEach(r -> got.add(r.deviceId() + " " + new String(r.json(), StandardCharsets.US_ASCII)));
                assertEquals(expected, got, where);
            }
            List<String> events = new ArrayList<>();
            m.get("events").forEach(e -> events.add(e.asText()));
            assertEquals(events, out.events.stream().map(e -> e[0]).toList(), where);
            assertEquals(m.get("seq_gap").asBoolean(), out.seqGap, where);
            assertEquals(m.has("rebirth_topic") ? m.get("rebirth_topic").asText() : null, out.rebirthTopic, where);
            assertEquals(m.has("rebirth_payload_hex") ? m.get("rebirth_payload_hex").asText() : null,
                    out.rebirthPayload == null ? null : HexFormat.of().formatHex(out.rebirthPayload), where);
        }
    }

    @Test
    void edgeNodesOnSeveralThreadsEachKeepTheirOrder() throws Exception {
        // One decoder for the extension: many edge nodes at once, each node's messages in order on one thread.
        SparkplugDecoder decoder = new SparkplugDecoder(IngestMapping.load("sparkplug-b", null), 30.0, 100_000);
        ExecutorService pool = Executors.newFixedThreadPool(8);
        try {
            List<Future<Integer>> results = new ArrayList<>();
            for (int n = 0; n < 64; n++) {
                String node = "spBv1.0/g/%s/node-" + n;
                results.add(pool.submit(() -> {
                    int gaps = 0;
                    decoder.apply(String.format(node, "NBIRTH"), birth(), 1.0, 1 << 16, null);
                    for (int seq = 1; seq < 600; seq++) {
                        SparkplugDecoder.Outcome out = decoder.apply(String.format(node, "NDATA"), data(seq % 256),
                                2.0, 1 << 16, null);
                        assertEquals(1, out.readings.size());
                        gaps += out.seqGap ? 1 : 0;
                    }
                    return gaps;
                }));
            }
            for (Future<Integer> r : results) {
                assertEquals(0, r.get());
            }
        } finally {
            pool.shutdownNow();
        }
    }

    private static byte[] birth() {
        return org.eclipse.tahu.protobuf.SparkplugBProto.Payload.newBuilder().setTimestamp(1000).setSeq(0)
                .addMetrics(org.eclipse.tahu.protobuf.SparkplugBProto.Payload.Metric.newBuilder().setName("t")
                        .setAlias(1).setDatatype(10).setDoubleValue(0)).build().toByteArray();
    }

    private static byte[] data(int seq) {
        return org.eclipse.tahu.protobuf.SparkplugBProto.Payload.newBuilder().setTimestamp(2000 + seq).setSeq(seq)
                .addMetrics(org.eclipse.tahu.protobuf.SparkplugBProto.Payload.Metric.newBuilder().setAlias(1)
                        .setDoubleValue(seq)).build().toByteArray();
    }
}
