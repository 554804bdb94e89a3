package streamtrain.scorer;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;

/** One JSON line per event on stderr, with the same keys as the Python programs (structlog). */
final class Log {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static volatile int threshold = level("INFO");
    private final String component;

    Log(String component) {
        this.component = component;
    }

    static void setLevel(String name) {
        threshold = level(name);
    }

    private static int level(String name) {
        return switch (name.toUpperCase()) {
            case "DEBUG" -> 10;
            case "WARNING", "WARN" -> 30;
            case "ERROR" -> 40;
            default -> 20;
        };
    }

    void debug(String event, Object... kv) { emit(10, "debug", event, kv); }
    void info(String event, Object... kv) { emit(20, "info", event, kv); }
    void warning(String event, Object... kv) { emit(30, "warning", event, kv); }
    void error(String event, Object... kv) { emit(40, "error", event, kv); }

    private void emit(int lvl, String levelName, String event, Object[] kv) {
        if (lvl < threshold) {
            return;
        }
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("component", component);
        line.put("event", event);
        for (int i = 0; i + 1 < kv.length; i += 2) {
            line.put(String.valueOf(kv[i]), kv[i + 1]);
        }
        line.put("level", levelName);
        line.put("timestamp", Instant.now().toString());
        String text;
        try {
            // Python's json.dumps separators, so log searches work the same on both scorers.
            text = JSON.writeValueAsString(line).replace("\":", "\": ");
        } catch (Exception e) {
            text = "{\"event\": \"" + event + "\", \"level\": \"" + levelName + "\"}";
        }
        synchronized (System.err) {
            System.err.println(text);
            System.err.flush();
        }
    }
}
