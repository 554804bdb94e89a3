package io.streamtrain.ingest;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The shared mapping vectors (tests/ingest/vectors/mappings.json), written from the Python mappings' outcomes. */
class IngestMappingTest {
    static JsonNode vectors() throws IOException {
        return new ObjectMapper().readTree(Path.of(System.getProperty("vectors.dir"), "mappings.json").toFile());
    }

    @SuppressWarnings("unchecked")
    static IngestMapping mapping(JsonNode fields) {
        return IngestMapping.of(new ObjectMapper().convertValue(fields, Map.class));
    }

    @TestFactory
    List<DynamicTest> casesMatchThePythonBridge() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode c : vectors().get("cases")) {
            tests.add(DynamicTest.dynamicTest(c.get("name").asText(), () -> check(c)));
        }
        assertTrue(tests.size() > 80, "the vectors file lost its cases");
        return tests;
    }

    static void check(JsonNode c) {
        byte[] payload = c.has("payload_hex") ? HexFormat.of().parseHex(c.get("payload_hex").asText())
                : c.get("payload").asText().getBytes(StandardCharsets.UTF_8);
        Set<String> known = null;
        if (c.has("known_devices")) {
            known = new HashSet<>();
            for (JsonNode d : c.get("known_devices")) {
                known.add(d.asText());
            }
        }
        int max = c.has("max_bytes") ? c.get("max_bytes").asInt() : TelemetryValidator.MAX_PAYLOAD_BYTES;
        IngestMapping m = mapping(c.get("mapping"));
        String topic = c.get("topic").asText();
        assertEquals(c.get("subscribed").asBoolean(), m.subscribed(topic), "subscribed");
        TelemetryValidator.Result r = m.apply(topic, payload, c.get("arrived").asDouble(), max, known,
                new IngestMapping.ArrivalSeq(100), null);
        if (c.has("record")) {
            TelemetryValidator.Accepted ok = assertInstanceOf(TelemetryValidator.Accepted.class, r, r::toString);
            assertEquals(c.get("record").asText(), new String(ok.json(), StandardCharsets.US_ASCII));
        } else {
            TelemetryValidator.Rejected bad = assertInstanceOf(TelemetryValidator.Rejected.class, r, r::toString);
            assertEquals(c.get("reason").asText(), bad.reason(), bad::detail);
        }
    }

    @Test
    void arrivalSeqsIncreaseStrictlyPerDevice() throws IOException {
        for (JsonNode s : vectors().get("sequences")) {
            IngestMapping m = mapping(s.get("mapping"));
            IngestMapping.ArrivalSeq seqs = new IngestMapping.ArrivalSeq(100);
            IngestMapping.HeldValues held = new IngestMapping.HeldValues(m.holdS, 100);
            List<String> got = new ArrayList<>();
            for (JsonNode msg : s.get("messages")) {
                TelemetryValidator.Result r = m.apply(msg.get("topic").asText(),
                        msg.get("payload").asText().getBytes(StandardCharsets.UTF_8), msg.get("arrived").asDouble(),
                        TelemetryValidator.MAX_PAYLOAD_BYTES, null, seqs, held);
                got.add(r instanceof TelemetryValidator.Rejected bad ? "refused: " + bad.reason()
                        : new String(assertInstanceOf(TelemetryValidator.Accepted.class, r).json(),
                                StandardCharsets.US_ASCII));
            }
            List<String> expected = new ArrayList<>();
            s.get("records").forEach(n -> expected.add(n.asText()));
            assertEquals(expected, got, s.get("name").asText());
        }
    }

    @Test
    void arrivalSeqForgetsTheLeastRecentDevice() {
        IngestMapping.ArrivalSeq seqs = new IngestMapping.ArrivalSeq(2);
        assertEquals(5, seqs.next("a", 5));
        assertEquals(6, seqs.next("a", 5));
        assertEquals(5, seqs.next("b", 5));
        assertEquals(5, seqs.next("c", 5));  // a is forgotten
        assertEquals(5, seqs.next("a", 5));
    }

    @Test
    void everyPresetOfTheResourceLoads() throws IOException {
        Map<String, Map<String, Object>> presets = IngestMapping.presets();
        assertTrue(presets.keySet().containsAll(List.of("streamtrain", "zigbee2mqtt", "tasmota", "cloud")));
        for (String name : presets.keySet()) {
            assertEquals(name, IngestMapping.load(name, null).name);
        }
        assertEquals("sparkplug_b", IngestMapping.load("sparkplug-b", null).format);
    }

    @Test
    void aMappingFileOverridesItsPresetAndTopicsOverrideBoth(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("plant.json");
        Files.writeString(file, "{\"preset\": \"tasmota\", \"ts_timezone\": \"Europe/Berlin\"}");
        IngestMapping m = IngestMapping.load(file.toString(), null);
        assertEquals("tasmota", m.name);
        assertEquals("Time", m.tsPath);
        assertEquals("Europe/Berlin", m.tsZone.getId());
        m = IngestMapping.load(file.toString(), List.of("plant/{device_id}/SENSOR"));
        assertEquals(List.of("plant/{device_id}/SENSOR"), m.topics);
        assertTrue(m.subscribed("plant/p1/SENSOR"));
        Files.writeString(file, "{\"topics\": [\"site/{device_id}\"], \"ts_path\": \"t\", \"ts_format\": \"ms\"}");
        m = IngestMapping.load(file.toString(), null);
        assertEquals("plant", m.name);  // the file's name, as the bridge names it
        assertEquals("json", m.format);
        assertEquals(List.of("*"), m.include.stream().map(p -> "*").toList());  // the generated defaults
    }

    @Test
    void anInlineJsonMappingReadsLikeAMappingFile() throws IOException {
        // How the operator renders a StreamingTraining's spec.ingest.mapping into STREAMTRAIN_INGEST_MAPPING.
        IngestMapping m = IngestMapping.load("{\"preset\":\"tasmota\",\"ts_timezone\":\"Europe/Berlin\"}", null);
        assertEquals("tasmota", m.name);
        assertEquals("Time", m.tsPath);
        assertEquals("Europe/Berlin", m.tsZone.getId());
        m = IngestMapping.load(" {\"topics\": [\"plant/{device_id}\"], \"ts_path\": \"t\", \"hold_s\": 60}", null);
        assertEquals("inline", m.name);  // as the bridge names it
        assertEquals("json", m.format);
        assertEquals(60.0, m.holdS);
        assertTrue(m.subscribed("plant/p1"));
        assertThrows(IllegalArgumentException.class, () -> IngestMapping.load("{\"ts_path\": ", null));
        assertThrows(IllegalArgumentException.class, () -> IngestMapping.load("{\"preset\": \"modbus\"}", null));
    }

    @Test
    void badMappingsAreRefusedAtStartup(@TempDir Path dir) throws IOException {
        assertThrows(IllegalArgumentException.class, () -> IngestMapping.load("no-such-preset", null));
        assertThrows(IllegalArgumentException.class, () -> IngestMapping.load("zigbee2mqtt", List.of("a/#")));
        assertThrows(IllegalArgumentException.class, () -> IngestMapping.load("zigbee2mqtt", List.of("a/{area}")));
        assertThrows(IllegalArgumentException.class, () -> IngestMapping.load("streamtrain", List.of("a/{device_id}")));
        Path file = dir.resolve("m.json");
        Files.writeString(file, "{\"preset\": \"cloud\", \"ts_timezone\": \"Mars/Olympus\"}");
        assertThrows(IllegalArgumentException.class, () -> IngestMapping.load(file.toString(), null));
        Files.writeString(file, "{\"preset\": \"cloud\", \"colour\": \"red\"}");
        assertThrows(IllegalArgumentException.class, () -> IngestMapping.load(file.toString(), null));
        Files.writeString(file, "[1]");
        assertThrows(IllegalArgumentException.class, () -> IngestMapping.load(file.toString(), null));
    }

    @Test
    void theStreamtrainPresetTakesTheTopicsTheHandWrittenMatcherTakes() throws IOException {
        IngestMapping m = IngestMapping.load("streamtrain", null);
        for (String t : List.of("devices/dev-1/telemetry", "devices//telemetry", "devices/dev-1/telemetry/x",
                "devices/dev-1/status", "devices/dev-1/telemetryx", "device/dev-1/telemetry", "devices/a/b/telemetry",
                "devices", "")) {
            assertEquals(KafkaIngestInterceptor.isTelemetry(t), m.subscribed(t), t);
        }
        assertEquals("dev-1", m.deviceFromTopic("devices/dev-1/telemetry"));
        assertNull(IngestMapping.load("zigbee2mqtt", null).deviceFromTopic("zigbee2mqtt/a b"));
    }

    @Test
    void globsAreFnmatchs() {
        assertTrue(IngestMapping.glob("ENERGY_*").matcher("ENERGY_Total").matches());
        assertTrue(IngestMapping.glob("t?mp").matcher("temp").matches());
        assertTrue(IngestMapping.glob("h[!x]m").matcher("hum").matches());
        assertTrue(!IngestMapping.glob("h[!x]m").matcher("hxm").matches());
        assertTrue(IngestMapping.glob("a[").matcher("a[").matches());
        assertTrue(IngestMapping.glob("a.b").matcher("a.b").matches());
        assertTrue(!IngestMapping.glob("a.b").matcher("axb").matches());
        assertTrue(IngestMapping.glob("[]]x").matcher("]x").matches());
    }
}
