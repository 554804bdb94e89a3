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
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The shared vectors (tests/ingest/vectors/telemetry.json), which the Python validator passes too. */
class TelemetryValidatorTest {
    static JsonNode vectors() throws IOException {
        return new ObjectMapper().readTree(Path.of(System.getProperty("vectors.dir"), "telemetry.json").toFile());
    }

    @TestFactory
    List<DynamicTest> casesMatchThePythonBridge() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        for (JsonNode c : vectors().get("cases")) {
            tests.add(DynamicTest.dynamicTest(c.get("name").asText(), () -> check(c)));
        }
        assertTrue(tests.size() > 50, "the vectors file lost its cases");
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
        TelemetryValidator.Result r = new TelemetryValidator(max, known).validate(payload, c.get("topic").asText());
        if (c.has("record")) {
            TelemetryValidator.Accepted ok = assertInstanceOf(TelemetryValidator.Accepted.class, r, () -> r.toString());
            assertEquals(c.get("record").asText(), new String(ok.json(), StandardCharsets.US_ASCII));
        } else {
            TelemetryValidator.Rejected bad = assertInstanceOf(TelemetryValidator.Rejected.class, r, () -> r.toString());
            assertEquals(c.get("reason").asText(), bad.reason(), bad::detail);
            if (c.has("detail") && !bad.reason().equals("malformed_json")) {
                assertEquals(c.get("detail").asText(), bad.detail());
            }
            if (c.has("detail") && c.get("detail").asText().equals("JSON nested too deeply")) {
                assertEquals("JSON nested too deeply", bad.detail());
            }
        }
    }

    @Test
    void floatsAreWrittenAsPythonsRepr() throws IOException {
        int n = 0;
        for (JsonNode f : vectors().get("floats")) {
            double d = Double.longBitsToDouble(Long.parseUnsignedLong(f.get(0).asText(), 16));
            StringBuilder sb = new StringBuilder();
            PyFormat.appendFloat(sb, d);
            assertEquals(f.get(1).asText(), sb.toString(), () -> "bits " + f.get(0).asText());
            n++;
        }
        assertTrue(n > 1000);
    }

    @Test
    void onlyDeviceTelemetryTopicsAreIngested() {
        assertTrue(KafkaIngestInterceptor.isTelemetry("devices/dev-1/telemetry"));
        assertTrue(KafkaIngestInterceptor.isTelemetry("devices//telemetry"));  // '+' matches an empty level
        assertFalse(KafkaIngestInterceptor.isTelemetry("devices/dev-1/telemetry/x"));
        assertFalse(KafkaIngestInterceptor.isTelemetry("devices/dev-1/status"));
        assertFalse(KafkaIngestInterceptor.isTelemetry("devices/dev-1/telemetryx"));
        assertFalse(KafkaIngestInterceptor.isTelemetry("device/dev-1/telemetry"));
        assertFalse(KafkaIngestInterceptor.isTelemetry("devices/a/b/telemetry"));
    }

    @Test
    void detailIsCutByCodePointsAsPythonSlices() {
        String s = "\uD83D\uDE00".repeat(3);
        assertEquals("\uD83D\uDE00\uD83D\uDE00", KafkaIngestInterceptor.firstCodePoints(s, 2));
    }

    @Test
    void fastFloatDigitsAgreeWithBigDecimal() {
        java.util.Random r = new java.util.Random(7);
        int fast = 0;
        for (int i = 0; i < 300_000; i++) {
            double d = switch (i % 3) {
                case 0 -> Double.longBitsToDouble(r.nextLong() & Long.MAX_VALUE);  // any bit pattern
                case 1 -> Math.round(r.nextGaussian() * 1e6) / Math.pow(10, r.nextInt(8));  // sensor-like decimals
                default -> r.nextDouble() * Math.pow(10, r.nextInt(40) - 20);
            };
            if (!(d >= Double.MIN_NORMAL) || Double.isInfinite(d)) {
                continue;
            }
            java.math.BigDecimal b = new java.math.BigDecimal(Double.toString(d)).stripTrailingZeros();
            PyFormat.Digits got = PyFormat.javaDigits(Double.toString(d));
            if (b.precision() > 15) {
                assertEquals(null, got, () -> "more than 15 digits take the slow path: " + d);
                continue;
            }
            String digits = b.unscaledValue().toString();
            assertEquals(new PyFormat.Digits(digits, digits.length() - 1 - b.scale()), got, () -> "digits of " + d);
            fast++;
        }
        assertTrue(fast > 50_000, "the fast path was taken " + fast + " times");
    }

    @Test
    void handWrittenMatchersAgreeWithTheRegexes() {
        java.util.Random r = new java.util.Random(11);
        String alphabet = "aZ09_.:-/\n x\u00e9";
        List<String> cases = new ArrayList<>(List.of("devices/a/telemetry", "devices/a/telemetry\n", "devices//telemetry",
                "devices/a/telemetry\n\n", "devices/a\nb/telemetry", "devices/a/b/telemetry", "devices/a/telemetryx",
                "xdevices/a/telemetry", "devices/a/Telemetry", "devices/", "devices", "", "\n", "a\n", "a".repeat(64),
                "a".repeat(65), "a".repeat(64) + "\n", "a b"));
        for (int i = 0; i < 200_000; i++) {
            StringBuilder sb = new StringBuilder();
            if (r.nextBoolean()) {
                sb.append("devices/");
            }
            int len = r.nextInt(r.nextInt(10) == 0 ? 80 : 6);
            for (int k = 0; k < len; k++) {
                sb.append(alphabet.charAt(r.nextInt(alphabet.length())));
            }
            if (r.nextBoolean()) {
                sb.append(r.nextBoolean() ? "/telemetry" : "/telemetry\n");
            }
            cases.add(sb.toString());
        }
        for (String c : cases) {
            java.util.regex.Matcher m = TelemetryValidator.TOPIC.matcher(c);
            assertEquals(m.matches() ? m.group(1) : null, TelemetryValidator.deviceFromTopic(c), () -> "topic " + c);
            assertEquals(TelemetryValidator.DEVICE_ID.matcher(c).matches(), TelemetryValidator.validDeviceId(c),
                    () -> "device id " + c);
        }
    }
}
