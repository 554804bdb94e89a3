package streamtrain.scorer;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import java.io.ByteArrayInputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.zip.ZipInputStream;

/**
 * One model version ready to score, the JVM twin of streamtrain/model.py LoadedModel. The
 * metadata is checked with the same rules; the scoring function (normalize, autoencoder,
 * mean squared reconstruction error) runs as the ONNX graph the trainer attached to the version
 * (streamtrain/onnx_export.py), so no arithmetic is re-implemented here.
 */
final class OnnxModel implements AutoCloseable {
    static final String ARTEFACT_FORMAT = "keras-v3";
    static final String ATTACHMENT = "onnx";
    private static final OrtEnvironment ENV = OrtEnvironment.getEnvironment();

    final int version;
    final List<String> featureNames;
    final double threshold;
    /** The threshold as the Python scorer compares it: against float32 scores, in float32. */
    final float thresholdF32;
    final float[] mean;
    /** Why its training was not healthy ({@link ModelRegistry#unhealthyReason}); null when ok. */
    String unhealthy;
    private final OrtSession session;
    private final String input;
    /** One row's input, reused: ORT reads a direct buffer in place, so a call allocates only its result. */
    private final FloatBuffer oneRow;
    private final OnnxTensor oneRowTensor;

    private OnnxModel(int version, List<String> featureNames, double threshold, float[] mean, OrtSession session) {
        this.version = version;
        this.featureNames = List.copyOf(featureNames);
        this.threshold = threshold;
        this.thresholdF32 = (float) threshold;
        this.mean = mean;
        this.session = session;
        this.input = session.getInputNames().iterator().next();
        this.oneRow = ByteBuffer.allocateDirect(4 * featureNames.size()).order(ByteOrder.nativeOrder()).asFloatBuffer();
        try {
            this.oneRowTensor = OnnxTensor.createTensor(ENV, oneRow, new long[] {1, featureNames.size()});
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    static OnnxModel load(ModelAssembler.Version mv) throws ModelRejected {
        JsonNode meta = mv.metadata();
        String format = meta.path("format").asText(null);
        if (!ARTEFACT_FORMAT.equals(format)) {
            throw new ModelRejected("incompatible", "artefact format '" + format + "', expected " + ARTEFACT_FORMAT);
        }
        // Per-device baselines, sequences and smoothing (streamtrain/model.py SUPPORTED) are Python-only:
        // such versions carry no ONNX export and are refused here with the reason.
        JsonNode requires = meta.get("requires");
        if (requires != null && requires.isArray() && !requires.isEmpty()) {
            throw new ModelRejected("incompatible", "requires " + requires + ", this scorer supports []");
        }
        String kind = meta.path("input").path("kind").asText("features");
        if (!kind.equals("features")) {
            throw new ModelRejected("incompatible", "input kind '" + kind + "', this scorer scores features only");
        }
        JsonNode names = meta.get("feature_names");
        List<String> features = new ArrayList<>();
        if (names == null || !names.isArray() || names.isEmpty()) {
            throw new ModelRejected("bad_metadata", "feature_names must be a non-empty list of strings");
        }
        for (JsonNode n : names) {
            if (!n.isTextual()) {
                throw new ModelRejected("bad_metadata", "feature_names must be a non-empty list of strings");
            }
            features.add(n.asText());
        }
        JsonNode t = meta.get("threshold");
        double threshold;
        if (t != null && t.isNumber()) {
            threshold = t.asDouble();
        } else if (t != null && t.isTextual()) {
            try {
                threshold = Double.parseDouble(t.asText().trim());
            } catch (NumberFormatException e) {
                throw new ModelRejected("bad_metadata", "threshold " + t + " is not a number");
            }
        } else {
            throw new ModelRejected("bad_metadata", "threshold " + t + " is not a number");
        }
        if (!Double.isFinite(threshold) || threshold <= 0) {
            throw new ModelRejected("bad_metadata", "threshold " + threshold + " must be finite and positive");
        }
        JsonNode version = meta.get("version");
        if (version == null || !version.isIntegralNumber()) {
            throw new ModelRejected("bad_metadata", "version " + version + " is not an integer");
        }
        JsonNode norm = meta.get("normalization");
        if (norm == null || norm.isNull() || (norm.isObject() && norm.isEmpty())) {
            norm = JsonNodeFactory.instance.objectNode();
        } else if (!norm.isObject()) {
            throw new ModelRejected("bad_metadata", "normalization must be an object with mean and std");
        }
        float[] mean = new float[features.size()];
        for (String key : new String[] {"mean", "std"}) {
            JsonNode vals = norm.get(key);
            boolean ok = vals != null && vals.isArray() && vals.size() == features.size();
            for (int i = 0; ok && i < vals.size(); i++) {
                ok = vals.get(i).isNumber() && Double.isFinite(vals.get(i).asDouble());
            }
            if (!ok) {
                throw new ModelRejected("bad_metadata", "normalization." + key + " must have " + features.size()
                        + " finite numbers");
            }
            if (key.equals("mean")) {
                for (int i = 0; i < mean.length; i++) {
                    mean[i] = (float) vals.get(i).asDouble();
                }
            }
        }
        if (!isZip(mv.artefact())) {
            throw new ModelRejected("not_a_model", "artefact of " + mv.artefact().length + " bytes is not a .keras archive");
        }
        byte[] graph = mv.attachments().get(ATTACHMENT);
        if (graph == null) {
            throw new ModelRejected("incompatible", "version has no '" + ATTACHMENT + "' attachment (published by a "
                    + "trainer without ONNX export, or a model the export does not cover)");
        }
        // Before a session exists: ONNX Runtime would read an external tensor's path or address while loading.
        OnnxGraphCheck.refuseExternalData(graph);
        OrtSession session;
        try {
            OrtSession.SessionOptions opts = new OrtSession.SessionOptions();
            opts.setIntraOpNumThreads(1);
            opts.setInterOpNumThreads(1);
            session = ENV.createSession(graph, opts);
        } catch (Exception e) {
            throw new ModelRejected("load_failed", e.getClass().getSimpleName() + ": " + trim(e.getMessage()));
        }
        try {
            checkShapes(session, features.size());
        } catch (ModelRejected e) {
            closeQuietly(session);
            throw e;
        }
        return new OnnxModel(mv.version(), features, threshold, mean, session);
    }

    private static void checkShapes(OrtSession session, int n) throws ModelRejected {
        try {
            if (session.getInputInfo().size() != 1 || session.getOutputInfo().size() != 1) {
                throw new ModelRejected("incompatible", "scoring graph must have one input and one output");
            }
            NodeInfo in = session.getInputInfo().values().iterator().next();
            NodeInfo out = session.getOutputInfo().values().iterator().next();
            long[] inShape = ((TensorInfo) in.getInfo()).getShape();
            long[] outShape = ((TensorInfo) out.getInfo()).getShape();
            if (inShape.length != 2 || inShape[1] != n || outShape.length != 1) {
                throw new ModelRejected("incompatible", "scoring graph maps " + java.util.Arrays.toString(inShape)
                        + " -> " + java.util.Arrays.toString(outShape) + ", metadata has " + n + " features");
            }
        } catch (ModelRejected e) {
            throw e;
        } catch (Exception e) {
            throw new ModelRejected("incompatible", "scoring graph: " + trim(e.getMessage()));
        }
    }

    private static boolean isZip(byte[] data) {
        try (ZipInputStream zip = new ZipInputStream(new ByteArrayInputStream(data))) {
            return zip.getNextEntry() != null;
        } catch (Exception e) {
            return false;
        }
    }

    /** Score of one row (float32, like numpy). Only the stream thread calls it. */
    float scoreOne(float[] row) throws Exception {
        oneRow.clear();
        oneRow.put(row, 0, featureNames.size());
        oneRow.flip();
        try (OrtSession.Result r = session.run(Map.of(input, oneRowTensor))) {
            return ((float[]) r.get(0).getValue())[0];
        }
    }

    /** Scores of {@code rows} rows laid out row-major in {@code x} (float32, like numpy). */
    float[] score(float[] x, int rows) throws Exception {
        if (rows == 0) {
            return new float[0];
        }
        long[] shape = {rows, featureNames.size()};
        try (OnnxTensor t = OnnxTensor.createTensor(ENV, FloatBuffer.wrap(x, 0, rows * featureNames.size()), shape);
             OrtSession.Result r = session.run(Map.of(input, t))) {
            return (float[]) r.get(0).getValue();
        }
    }

    /**
     * Runs the graph as scoring will, one row and a batch, and refuses it unless each row gets exactly one
     * score: a graph whose output has another length would pass a load and then fail the stream thread on
     * every restart.
     */
    void warm() throws Exception {
        int n = featureNames.size();
        float[] x = new float[8 * n];
        for (int i = 0; i < 8; i++) {
            System.arraycopy(mean, 0, x, i * n, n);
        }
        for (int rows : new int[] {8, 3}) {
            int got = score(x, rows).length;
            if (got != rows) {
                throw new ModelRejected("incompatible", "scoring graph returns " + got + " scores for " + rows
                        + " rows");
            }
        }
        scoreOne(mean);
    }

    @Override
    public void close() {
        oneRowTensor.close();
        closeQuietly(session);
    }

    private static void closeQuietly(OrtSession s) {
        try {
            s.close();
        } catch (Exception ignored) {
            // releasing native memory of a model nobody uses any more
        }
    }

    private static String trim(String s) {
        return s == null ? "" : s.substring(0, Math.min(300, s.length()));
    }
}
