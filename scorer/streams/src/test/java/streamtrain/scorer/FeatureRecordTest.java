package streamtrain.scorer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The streaming read of a feature record ({@link FeatureRecord#read}) against Jackson's tree model, which
 * the scorer used before: same refusals with the same messages, same kept nodes, same verdicts and values.
 */
class FeatureRecordTest {
    private static final List<String> FEATURES = List.of("temperature", "current", "vibration", "pressure");
    private static final Map<String, Integer> INDEX = FeatureRecord.index(FEATURES);

    /** What the tree model makes of {@code json}: the record, or the message of what it throws. */
    private static Object viaTree(byte[] json) {
        try {
            JsonNode body = json == null ? null : FeatureRecord.JSON.readTree(json);
            if (body == null || !body.isObject()) {
                throw new IllegalArgumentException("not a JSON object");
            }
            return FeatureRecord.fromTree(body, FEATURES);
        } catch (Exception e) {
            return e.getClass().getName() + ": " + e.getMessage();
        }
    }

    private static Object viaRead(byte[] json) {
        try {
            return FeatureRecord.read(json, FEATURES, INDEX);
        } catch (Exception e) {
            return e.getClass().getName() + ": " + e.getMessage();
        }
    }

    private static void assertSame(String json) {
        assertSame(json == null ? null : json.getBytes(StandardCharsets.UTF_8), json);
    }

    private static void assertSame(byte[] bytes, String what) {
        Object tree = viaTree(bytes);
        Object read = viaRead(bytes);
        if (tree instanceof String) {
            assertEquals(tree, read, what);
            return;
        }
        FeatureRecord t = (FeatureRecord) tree;
        FeatureRecord r = (FeatureRecord) read;
        for (int i = 0; i < FeatureRecord.KEPT.size(); i++) {
            JsonNode a = t.kept[i];
            JsonNode b = r.kept[i];
            if (a == null) {
                assertNull(b, what + " " + FeatureRecord.KEPT.get(i));
            } else {
                assertNotNull(b, what + " " + FeatureRecord.KEPT.get(i));
                assertEquals(a.getClass(), b.getClass(), what + " " + FeatureRecord.KEPT.get(i));
                assertEquals(a.toString(), b.toString(), what + " " + FeatureRecord.KEPT.get(i));
            }
        }
        assertEquals(t.missing(FEATURES), r.missing(FEATURES), what);
        assertEquals(t.usable(), r.usable(), what);
        if (!t.usable()) {
            return;  // dead-lettered: its values are never read
        }
        float[] xt = new float[FEATURES.size()];
        float[] xr = new float[FEATURES.size()];
        t.copyTo(xt, 0);
        r.copyTo(xr, 0);
        assertArrayEquals(xt, xr, what);
    }

    @Test
    void readsWhatTheTreeModelReadsAndRefusesWhatItRefuses() {
        String good = "{\"device_id\": \"d1\", \"ts\": 1765142481.1234567, \"seq\": 12, \"current\": 2.1,"
                + " \"pressure\": 3.9, \"temperature\": 71.25, \"vibration\": 0.51, \"label\": 0}";
        String[] cases = {
            good,
            good.replace("\"label\": 0", "\"label\": 1, \"anomaly\": \"bearing\", \"device_type\": \"pump\""),
            good.replace("71.25", "NaN"),
            good.replace("71.25", "Infinity"),
            good.replace("71.25", "-Infinity"),
            good.replace("71.25", "3.5e38"),
            good.replace("71.25", "3.5e39"),
            good.replace("71.25", "1e400"),
            good.replace("71.25", "71"),
            good.replace("71.25", "123456789012345678901234567890"),
            good.replace("71.25", "-0.0"),
            good.replace("71.25", "4.9e-324"),
            good.replace("71.25", "\"hot\""),
            good.replace("71.25", "null"),
            good.replace("71.25", "true"),
            good.replace("71.25", "[71.25]"),
            good.replace("71.25", "{\"v\": 71.25}"),
            good.replace("\"seq\": 12", "\"seq\": 123456789012"),
            good.replace("\"seq\": 12", "\"seq\": 123456789012345678901234567890"),
            good.replace("\"seq\": 12", "\"seq\": 1.5e3"),
            good.replace("\"seq\": 12", "\"seq\": null"),
            good.replace("\"seq\": 12, ", ""),
            good.replace("\"ts\": 1765142481.1234567, ", ""),
            good.replace("\"ts\": 1765142481.1234567", "\"ts\": \"2026-12-07T21:00:00Z\""),
            good.replace("\"device_id\": \"d1\"", "\"device_id\": \"d\\u00e9\\n\\\"1\\ud83d\\ude00\""),
            good.replace("\"device_id\": \"d1\"", "\"device_id\": {\"site\": \"a\", \"n\": [1, 2.5]}"),
            good.replace("\"label\": 0", "\"label\": [0, 1]"),
            good.replace("\"label\": 0", "\"label\": 0, \"window\": {\"mean\": [1, 2, {\"x\": null}]}, \"note\": \"\\u0041\""),
            good.replace("\"label\": 0", "\"label\": 0, \"temperature\": 12.5"),
            good.replace("\"label\": 0", "\"label\": 0, \"temperature\": \"dup\""),
            good.replace("\"label\": 0", "\"label\": 0, \"label\": \"again\""),
            good.replace("\"current\": 2.1, ", ""),
            good.replace("\"current\": 2.1, \"pressure\": 3.9, ", ""),
            good + " trailing",
            good + "}",
            good.substring(0, good.length() - 1),
            good.replace("2.1", "2.1.1"),
            good.replace("2.1", "02.1"),
            good.replace("2.1", "+2.1"),
            good.replace("2.1", ".5"),
            good.replace(": 2.1", ": 2.1 ,,"),
            good.replace("\"d1\"", "'d1'"),
            good.replace("\"d1\"", "\"d1\u0001\""),
            "{}",
            "{ }",
            "[]",
            "[1, 2]",
            "\"text\"",
            "42",
            "null",
            "",
            "   ",
            "{not json",
            "{\"device_id\": \"dev-x\", \"seq\": 1, \"temperature\": 60}",
            null,
        };
        for (String c : cases) {
            assertSame(c);
        }
        byte[] badUtf8 = good.replace("\"d1\"", "\"d1XY\"").getBytes(StandardCharsets.UTF_8);
        int at = new String(badUtf8, StandardCharsets.UTF_8).indexOf("XY");
        badUtf8[at] = (byte) 0xC3;
        badUtf8[at + 1] = (byte) 0x28;
        assertSame(badUtf8, "invalid UTF-8 in a kept string");
        byte[] badUtf8Skipped = (good.substring(0, good.length() - 1) + ", \"note\": \"XY\"}").getBytes(StandardCharsets.UTF_8);
        at = new String(badUtf8Skipped, StandardCharsets.UTF_8).indexOf("XY");
        badUtf8Skipped[at] = (byte) 0xE2;
        badUtf8Skipped[at + 1] = (byte) 0x28;
        assertSame(badUtf8Skipped, "invalid UTF-8 in a string the scorer does not use");
    }

    @Test
    void randomRecordsReadAlike() {
        Random rng = new Random(28);
        List<String> names = new ArrayList<>(FEATURES);
        names.addAll(List.of("device_id", "ts", "seq", "label", "anomaly", "device_type", "extra"));
        for (int n = 0; n < 5000; n++) {
            StringBuilder json = new StringBuilder("{");
            int fields = rng.nextInt(names.size() + 2);
            for (int f = 0; f < fields; f++) {
                if (f > 0) {
                    json.append(", ");
                }
                json.append('"').append(names.get(rng.nextInt(names.size()))).append("\": ").append(randomValue(rng));
            }
            json.append('}');
            assertSame(json.toString());
        }
    }

    private static String randomValue(Random rng) {
        return switch (rng.nextInt(9)) {
            case 0 -> String.valueOf(rng.nextGaussian() * Math.pow(10, rng.nextInt(80) - 40));
            case 1 -> String.valueOf(rng.nextLong());
            case 2 -> String.valueOf(rng.nextInt(1000));
            case 3 -> String.format("%." + rng.nextInt(20) + "f", rng.nextDouble() * 1e6);
            case 4 -> "\"s" + rng.nextInt(100) + "\"";
            case 5 -> rng.nextBoolean() ? "true" : "null";
            case 6 -> "[" + rng.nextInt(9) + ", \"x\"]";
            case 7 -> rng.nextInt(4) == 0 ? "NaN" : "1e" + (rng.nextInt(700) - 350);
            default -> rng.nextDouble() + "e" + (rng.nextInt(80) - 40);
        };
    }
}
