package streamtrain.scorer;

import java.util.Map;
import java.util.Random;

/**
 * The Kafka Streams scorer's limit in {@code make bench}: the newest model version on the models
 * topic (loaded by the scorer's own {@link ModelWatcher} and {@link OnnxModel}), scoring rows held
 * in memory through ONNX Runtime, {@link Batching#size()} rows per call as the scorer calls it.
 * {@code java -cp streamtrain-scorer-streams.jar streamtrain.scorer.OnnxCeiling ROWS} with the
 * scorer's STREAMTRAIN_ variables; prints one JSON line with records per second.
 */
public final class OnnxCeiling {
    private OnnxCeiling() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> env = System.getenv();
        Settings s = Settings.fromEnv(env);
        Log.setLevel("WARNING");
        int rows = Integer.parseInt(args[0]);
        int batch = Batching.fromEnv(env).size();
        ModelRegistry registry = new ModelRegistry(false);
        ModelWatcher watcher = new ModelWatcher(s, registry, reason -> { });
        watcher.start();
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (registry.highestSeen() == 0) {
            if (watcher.error != null || System.nanoTime() > deadline) {
                throw new IllegalStateException("no model on " + s.topicModels() + ": " + watcher.error);
            }
            Thread.sleep(50);
        }
        registry.apply();
        OnnxModel model = registry.champion();
        watcher.shutdown();
        watcher.join(5000);
        int n = model.featureNames.size();
        float[] x = new float[rows * n];
        Random rng = new Random(2);
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) (60 + 10 * rng.nextGaussian());
        }
        float[] slice = new float[batch * n];
        for (int i = 0; i < 200; i++) {  // the JIT and ONNX Runtime warm up first, as in a running scorer
            model.score(slice, batch);
        }
        long t0 = System.nanoTime();
        for (int start = 0; start < rows; start += batch) {
            int count = Math.min(batch, rows - start);
            System.arraycopy(x, start * n, slice, 0, count * n);
            model.score(slice, count);
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        System.out.printf("{\"records_per_s\": %.1f, \"rows\": %d, \"batch\": %d, \"model_version\": %d}%n",
                rows / seconds, rows, batch, model.version);
        model.close();
    }
}
