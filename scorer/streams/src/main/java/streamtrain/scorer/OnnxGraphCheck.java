package streamtrain.scorer;

/**
 * Refuses ONNX graphs whose tensors live outside the graph's bytes, before ONNX Runtime sees them. A
 * tensor with {@code external_data} (or {@code data_location: EXTERNAL}) names a file path, such as
 * {@code ../../../../var/run/secrets/...}, or ONNX Runtime's in-memory address marker; the session would
 * read that file or that address into the model. The trainer's export never writes one, so any is
 * hostile. The graph's protobuf is walked along the fields that can hold tensors (initialisers, sparse
 * initialisers, node attributes and their subgraphs, functions, training info), nothing else decoded.
 */
final class OnnxGraphCheck {
    private static final int MAX_DEPTH = 64;

    private enum Kind { MODEL, GRAPH, NODE, ATTRIBUTE, TENSOR, SPARSE, TRAINING, FUNCTION }

    private OnnxGraphCheck() {}

    static void refuseExternalData(byte[] model) throws ModelRejected {
        try {
            walk(model, 0, model.length, Kind.MODEL, 0);
        } catch (IndexOutOfBoundsException | IllegalArgumentException e) {
            throw new ModelRejected("load_failed", "scoring graph is not a valid ONNX protobuf: " + e.getMessage());
        }
    }

    /** ONNX field numbers (onnx/onnx.proto) of the messages that may lead to a TensorProto. */
    private static Kind child(Kind kind, long field) {
        return switch (kind) {
            case MODEL -> field == 7 ? Kind.GRAPH : field == 20 ? Kind.TRAINING : field == 25 ? Kind.FUNCTION : null;
            case GRAPH -> field == 1 ? Kind.NODE : field == 5 ? Kind.TENSOR : field == 15 ? Kind.SPARSE : null;
            case NODE -> field == 5 ? Kind.ATTRIBUTE : null;
            case ATTRIBUTE -> field == 5 || field == 10 ? Kind.TENSOR : field == 6 || field == 11 ? Kind.GRAPH
                    : field == 22 || field == 23 ? Kind.SPARSE : null;
            case SPARSE -> field == 1 || field == 2 ? Kind.TENSOR : null;
            case TRAINING -> field == 1 || field == 2 ? Kind.GRAPH : null;
            case FUNCTION -> field == 7 ? Kind.NODE : field == 11 ? Kind.ATTRIBUTE : null;
            case TENSOR -> null;
        };
    }

    private static void walk(byte[] b, int start, int end, Kind kind, int depth) throws ModelRejected {
        if (depth > MAX_DEPTH) {
            throw new ModelRejected("incompatible", "scoring graph nests deeper than " + MAX_DEPTH + " messages");
        }
        int[] pos = {start};
        while (pos[0] < end) {
            long tag = varint(b, pos, end);
            long field = tag >>> 3;
            switch ((int) (tag & 7)) {
                case 0 -> {
                    long value = varint(b, pos, end);
                    if (kind == Kind.TENSOR && field == 14 && value == 1) {
                        throw external("data_location EXTERNAL");
                    }
                }
                case 1 -> skip(pos, 8, end);
                case 5 -> skip(pos, 4, end);
                case 2 -> {
                    long len = varint(b, pos, end);
                    if (len < 0 || len > end - pos[0]) {
                        throw new IllegalArgumentException("field " + field + " runs past its message");
                    }
                    if (kind == Kind.TENSOR && field == 13) {
                        throw external("external_data");
                    }
                    Kind inner = child(kind, field);
                    if (inner != null) {
                        walk(b, pos[0], pos[0] + (int) len, inner, depth + 1);
                    }
                    pos[0] += (int) len;
                }
                default -> throw new IllegalArgumentException("wire type " + (tag & 7) + " of field " + field);
            }
        }
        if (pos[0] != end) {
            throw new IllegalArgumentException("message ends inside a field");
        }
    }

    private static ModelRejected external(String what) {
        return new ModelRejected("external_data", "scoring graph has a tensor with " + what
                + ": its bytes would be read from outside the model version");
    }

    private static void skip(int[] pos, int n, int end) {
        if (n > end - pos[0]) {
            throw new IllegalArgumentException("field runs past its message");
        }
        pos[0] += n;
    }

    private static long varint(byte[] b, int[] pos, int end) {
        long value = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos[0] >= end) {
                throw new IllegalArgumentException("truncated varint");
            }
            byte x = b[pos[0]++];
            value |= (long) (x & 0x7f) << shift;
            if ((x & 0x80) == 0) {
                return value;
            }
        }
        throw new IllegalArgumentException("varint longer than 10 bytes");
    }
}
