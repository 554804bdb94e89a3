package streamtrain.scorer;

import java.util.Map;

/**
 * How many records {@link ScoreProcessor} scores per ONNX call, and how long it holds them at most:
 * the Python scorer's STREAMTRAIN_BATCH_SIZE and STREAMTRAIN_BATCH_WAIT_MS. Records are forwarded
 * before every commit whatever the batch holds (see {@link FlushBeforeCommit}).
 */
record Batching(int size, long waitMs) {
    static final Batching DEFAULT = new Batching(512, 50);

    Batching {
        if (size < 1 || waitMs < 0) {
            throw new IllegalArgumentException("batch size must be at least 1 and the wait not negative: " + size + ", " + waitMs);
        }
    }

    static Batching fromEnv(Map<String, String> env) {
        return new Batching(Integer.parseInt(get(env, "BATCH_SIZE", String.valueOf(DEFAULT.size))),
                Long.parseLong(get(env, "BATCH_WAIT_MS", String.valueOf(DEFAULT.waitMs))));
    }

    private static String get(Map<String, String> env, String name, String fallback) {
        String v = env.get("STREAMTRAIN_" + name);
        return v == null || v.isBlank() ? fallback : v.trim();
    }
}
