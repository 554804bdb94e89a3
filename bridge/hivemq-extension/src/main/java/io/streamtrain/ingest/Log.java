package io.streamtrain.ingest;

import java.time.Instant;

/** One JSON line per event on stdout (HiveMQ's log), as every StreamTrain program logs. */
final class Log {
    private Log() {
    }

    static void event(String event, String... kv) {
        StringBuilder sb = new StringBuilder(128).append("{\"timestamp\":\"").append(Instant.now())
                .append("\",\"component\":\"hivemq-ingest\",\"event\":");
        PyFormat.appendJsonString(sb, event);
        for (int i = 0; i + 1 < kv.length; i += 2) {
            sb.append(',');
            PyFormat.appendJsonString(sb, kv[i]);
            sb.append(':');
            PyFormat.appendJsonString(sb, kv[i + 1] == null ? "" : kv[i + 1]);
        }
        System.out.println(sb.append('}'));
    }
}
