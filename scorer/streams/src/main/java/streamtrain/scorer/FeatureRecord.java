package streamtrain.scorer;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * One feature record as the scorer reads it: the model's feature values in the model's order, and the
 * fields a score record copies ({@link #KEPT}), as the JSON nodes Jackson's tree model would hold.
 *
 * <p>Read in one streaming pass ({@link #read}): no tree of the whole record, doubles through
 * Jackson's FastDoubleParser (correctly rounded, as {@link Double#parseDouble}). What the pass does
 * not take for certain (not an object, malformed, anything unusual) is decided by Jackson's tree
 * model as before ({@link #fromTree}), so dead letters keep their reasons and details.
 */
final class FeatureRecord {
    /** Python's json.loads accepts NaN and Infinity; they are then refused as non-finite values, not as bad JSON. */
    static final ObjectMapper JSON = JsonMapper.builder()
            .enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS)
            .enable(StreamReadFeature.USE_FAST_DOUBLE_PARSER)
            .build();
    /** The fields a score record copies from its input, in {@link ScoreProcessor}'s order. */
    static final List<String> KEPT = List.of("device_id", "seq", "ts", "label", "anomaly", "device_type");
    static final int DEVICE_ID = 0, SEQ = 1, TS = 2, LABEL = 3, ANOMALY = 4, DEVICE_TYPE = 5;
    private static final Map<String, Integer> KEPT_INDEX = index(KEPT);
    private static final JsonNodeFactory NODES = JsonNodeFactory.instance;

    /** A feature's value, when the feature is present: finite within float32 range, or not. */
    private static final byte ABSENT = 0, USABLE = 1, UNUSABLE = 2;

    /** The fields of {@link #KEPT} (null when absent), as the tree model would hold them. */
    final JsonNode[] kept = new JsonNode[KEPT.size()];
    private final double[] values;
    private final byte[] state;

    private FeatureRecord(int features) {
        values = new double[features];
        state = new byte[features];
    }

    /** Field name -> position in {@code names}: made once per feature list, passed to {@link #read}. */
    static Map<String, Integer> index(List<String> names) {
        Map<String, Integer> out = new HashMap<>();
        for (int i = 0; i < names.size(); i++) {
            out.put(names.get(i), i);
        }
        return out;
    }

    /**
     * The record {@code value} with the features {@code features} ({@code index} = {@link #index} of them);
     * throws what Jackson's tree model throws for it, or IllegalArgumentException when it is not an object.
     */
    static FeatureRecord read(byte[] value, List<String> features, Map<String, Integer> index) throws Exception {
        if (value != null) {
            FeatureRecord fast = readStreaming(value, features.size(), index);
            if (fast != null) {
                return fast;
            }
        }
        JsonNode body = value == null ? null : JSON.readTree(value);
        if (body == null || !body.isObject()) {
            throw new IllegalArgumentException("not a JSON object");
        }
        return fromTree(body, features);
    }

    /** The record from Jackson's tree of it. */
    static FeatureRecord fromTree(JsonNode body, List<String> features) {
        FeatureRecord r = new FeatureRecord(features.size());
        for (int i = 0; i < KEPT.size(); i++) {
            r.kept[i] = body.get(KEPT.get(i));
        }
        for (int i = 0; i < features.size(); i++) {
            JsonNode v = body.get(features.get(i));
            if (v != null) {
                r.take(i, v.isNumber(), v.asDouble());
            }
        }
        return r;
    }

    /** Null when anything is unusual: the tree model then decides (and words the dead letter). */
    private static FeatureRecord readStreaming(byte[] value, int features, Map<String, Integer> index) {
        FeatureRecord r = new FeatureRecord(features);
        try (JsonParser p = JSON.getFactory().createParser(value)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            for (String name = p.nextFieldName(); name != null; name = p.nextFieldName()) {
                JsonToken t = p.nextToken();
                Integer feature = index.get(name);
                Integer kept = KEPT_INDEX.get(name);
                if (feature != null) {
                    boolean number = t == JsonToken.VALUE_NUMBER_INT || t == JsonToken.VALUE_NUMBER_FLOAT;
                    if (!number && (t == JsonToken.START_OBJECT || t == JsonToken.START_ARRAY)) {
                        return null;  // the tree's asDouble() of a container: leave it to the tree
                    }
                    r.take(feature, number, number ? p.getDoubleValue() : 0.0);
                    if (t == JsonToken.VALUE_STRING) {
                        p.finishToken();  // decoded as the tree decodes it (and fails as it fails)
                    }
                }
                if (kept != null) {
                    JsonNode node = scalar(p, t);
                    if (node == null) {
                        return null;
                    }
                    r.kept[kept] = node;
                } else if (feature == null) {
                    if (t == JsonToken.START_OBJECT || t == JsonToken.START_ARRAY) {
                        return null;
                    }
                    p.finishToken();
                }
            }
            if (p.currentToken() != JsonToken.END_OBJECT) {
                return null;
            }
        } catch (Exception e) {
            return null;
        }
        return r;
    }

    /** The node JsonNodeDeserializer makes of the scalar at {@code t}; null for a container. */
    private static JsonNode scalar(JsonParser p, JsonToken t) throws Exception {
        return switch (t) {
            case VALUE_STRING -> NODES.textNode(p.getText());
            case VALUE_NUMBER_INT -> switch (p.getNumberType()) {
                case INT -> NODES.numberNode(p.getIntValue());
                case LONG -> NODES.numberNode(p.getLongValue());
                default -> NODES.numberNode(p.getBigIntegerValue());
            };
            case VALUE_NUMBER_FLOAT -> p.getNumberType() == JsonParser.NumberType.DOUBLE
                    ? NODES.numberNode(p.getDoubleValue()) : null;
            case VALUE_TRUE -> NODES.booleanNode(true);
            case VALUE_FALSE -> NODES.booleanNode(false);
            case VALUE_NULL -> NODES.nullNode();
            default -> null;
        };
    }

    private void take(int feature, boolean number, double v) {
        // Finite after the cast to float32 too (3.5e38 is a finite double but an infinite float32).
        state[feature] = number && Double.isFinite(v) && Math.abs(v) <= Float.MAX_VALUE ? USABLE : UNUSABLE;
        values[feature] = v;
    }

    /** The features this record lacks, quoted as Python quotes them in a dead letter's detail; empty when none. */
    String missing(List<String> features) {
        StringBuilder out = null;
        for (int i = 0; i < state.length; i++) {
            if (state[i] == ABSENT) {
                out = out == null ? new StringBuilder() : out.append(", ");
                out.append('\'').append(features.get(i)).append('\'');
            }
        }
        return out == null ? "" : "[" + out + "]";
    }

    /** True when every feature is a finite number within float32 range. */
    boolean usable() {
        for (byte s : state) {
            if (s != USABLE) {
                return false;
            }
        }
        return true;
    }

    /** Writes the features as float32 into {@code x} from {@code offset}. */
    void copyTo(float[] x, int offset) {
        for (int i = 0; i < values.length; i++) {
            x[offset + i] = (float) values[i];
        }
    }
}
