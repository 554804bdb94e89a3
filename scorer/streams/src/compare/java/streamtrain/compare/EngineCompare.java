package streamtrain.compare;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import java.lang.management.ManagementFactory;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;
import org.tensorflow.Result;
import org.tensorflow.SavedModelBundle;
import org.tensorflow.SessionFunction;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.types.TFloat32;

/**
 * How the scorer's engine was chosen: the same trained autoencoder through TensorFlow Java
 * (Keras `model.export` SavedModel; normalization and MSE in Java) and through ONNX Runtime
 * (streamtrain/onnx_export.py graph, normalization and MSE inside). One engine per JVM run:
 * {@code java -cp ... streamtrain.compare.EngineCompare onnx|tf <model> <mean,...> <std,...>}.
 * Prints one JSON line: startup (JVM start to warmed model), load, records/s one row per call
 * (as the scorer calls it) and 512 rows per call, resident memory, the first rows' scores.
 */
public final class EngineCompare {
    interface Engine {
        float[] score(float[] x, int rows) throws Exception;
    }

    public static void main(String[] args) throws Exception {
        String kind = args[0];
        Path model = Path.of(args[1]);
        float[] mean = floats(args[2]);
        float[] std = floats(args[3]);
        int n = mean.length;
        long t0 = System.nanoTime();
        Engine engine = kind.equals("onnx") ? onnx(model) : tf(model, mean, std);
        engine.score(new float[8 * n], 8);
        double loadMs = (System.nanoTime() - t0) / 1e6;
        double startupMs = System.currentTimeMillis() - ManagementFactory.getRuntimeMXBean().getStartTime();
        Random rng = new Random(1);
        float[] data = new float[512 * n];
        for (int i = 0; i < data.length; i++) {
            data[i] = (float) rng.nextGaussian();
        }
        double single = rate(engine, data, n, 1, 20000);
        double batched = rate(engine, data, n, 512, 400000);
        float[] probe = floats(args[4]);
        float[] first = engine.score(probe, probe.length / n);
        System.out.printf("{\"engine\": \"%s\", \"startup_ms\": %.0f, \"load_ms\": %.0f, \"records_per_s_1\": %.0f, "
                        + "\"records_per_s_512\": %.0f, \"rss_mb\": %.0f, \"scores\": %s}%n",
                kind, startupMs, loadMs, single, batched, rssMb(), java.util.Arrays.toString(first));
    }

    static double rate(Engine e, float[] data, int n, int rows, int total) throws Exception {
        for (int i = 0; i < 200; i++) {
            e.score(data, rows);
        }
        long t = System.nanoTime();
        for (int done = 0; done < total; done += rows) {
            e.score(data, rows);
        }
        return total / ((System.nanoTime() - t) / 1e9);
    }

    static Engine onnx(Path model) throws Exception {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        OrtSession.SessionOptions o = new OrtSession.SessionOptions();
        o.setIntraOpNumThreads(1);
        o.setInterOpNumThreads(1);
        OrtSession s = env.createSession(Files.readAllBytes(model), o);
        String input = s.getInputNames().iterator().next();
        long n = ((ai.onnxruntime.TensorInfo) s.getInputInfo().get(input).getInfo()).getShape()[1];
        java.nio.FloatBuffer one = java.nio.ByteBuffer.allocateDirect((int) (4 * n))
                .order(java.nio.ByteOrder.nativeOrder()).asFloatBuffer();
        OnnxTensor oneTensor = OnnxTensor.createTensor(env, one, new long[] {1, n});
        return (x, rows) -> {
            if (rows == 1) {  // as the scorer calls it: one reused direct buffer
                one.clear();
                one.put(x, 0, (int) n).flip();
                try (OrtSession.Result r = s.run(Map.of(input, oneTensor))) {
                    return (float[]) r.get(0).getValue();
                }
            }
            try (OnnxTensor t = OnnxTensor.createTensor(env, FloatBuffer.wrap(x, 0, (int) (rows * n)),
                    new long[] {rows, n}); OrtSession.Result r = s.run(Map.of(input, t))) {
                return (float[]) r.get(0).getValue();
            }
        };
    }

    static Engine tf(Path dir, float[] mean, float[] std) {
        SavedModelBundle bundle = SavedModelBundle.load(dir.toString(), "serve");
        SessionFunction fn = bundle.function("serving_default");
        int n = mean.length;
        return (x, rows) -> {
            float[] xn = new float[rows * n];
            for (int r = 0; r < rows; r++) {
                for (int j = 0; j < n; j++) {
                    xn[r * n + j] = (x[r * n + j] - mean[j]) / std[j];
                }
            }
            try (TFloat32 in = TFloat32.tensorOf(Shape.of(rows, n), DataBuffers.of(xn, true, false));
                 Result res = fn.call(Map.of("features", in))) {
                TFloat32 out = (TFloat32) res.get("output_0").orElseThrow();
                float[] scores = new float[rows];
                for (int r = 0; r < rows; r++) {
                    float sum = 0;
                    for (int j = 0; j < n; j++) {
                        float d = xn[r * n + j] - out.getFloat(r, j);
                        sum += d * d;
                    }
                    scores[r] = sum / n;
                }
                return scores;
            }
        };
    }

    static float[] floats(String csv) {
        String[] parts = csv.split(",");
        float[] out = new float[parts.length];
        for (int i = 0; i < parts.length; i++) {
            out[i] = Float.parseFloat(parts[i]);
        }
        return out;
    }

    static double rssMb() throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) / 1024.0;
            }
        }
        return -1;
    }
}
