package io.streamtrain.ingest;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.json.JsonReadFeature;

import java.io.IOException;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The telemetry schema of streamtrain/telemetry.py, check for check and in the same order, with the
 * same reasons and details; a valid reading is written back as Python's {@code Reading.to_json} writes it.
 * The shared vectors in tests/ingest/vectors hold both implementations to that.
 * Known difference: the detail of {@code malformed_json} is Jackson's message, not Python's.
 */
public final class TelemetryValidator {
    // Whole strings, as Python's re.fullmatch: matches(), never lookingAt() with '$', which also matches before
    // a final "\n" and made "dev-1\n" a second identity of "dev-1". The reference for deviceFromTopic and
    // validDeviceId, which match the same by hand per message (TelemetryValidatorTest compares them).
    static final Pattern DEVICE_ID = Pattern.compile("[A-Za-z0-9_.:-]{1,64}");
    static final Pattern TOPIC = Pattern.compile("devices/([^/]+)/telemetry");
    public static final int MAX_PAYLOAD_BYTES = 16 * 1024;
    static final int MAX_CHANNELS = 64;
    static final Set<String> RESERVED = Set.of("device_id", "ts", "seq", "label", "anomaly", "device_type");
    public static final List<String> REASONS = List.of("oversized", "malformed_json", "not_an_object",
            "missing_field", "wrong_type", "non_finite", "bad_topic", "topic_mismatch", "unknown_device",
            "too_many_fields");
    /** Python's json gives up near its recursion limit (1000 frames, less what the caller uses). */
    static final int MAX_NESTING = 900;
    /** Python refuses to convert integers of more digits (sys.get_int_max_str_digits()). */
    static final int MAX_INT_DIGITS = 4300;

    private static final JsonFactory JSON = JsonFactory.builder()
            .enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS)
            .streamReadConstraints(StreamReadConstraints.builder()
                    .maxNestingDepth(MAX_NESTING + 10).maxNumberLength(Integer.MAX_VALUE)
                    .maxStringLength(Integer.MAX_VALUE).build())
            .build();

    /** The outcome: a record for the raw topic, or a rejection. */
    public sealed interface Result permits Accepted, Rejected {
    }

    public record Accepted(String deviceId, byte[] json) implements Result {
    }

    public record Rejected(String reason, String detail) implements Result {
    }

    private static final class Invalid extends Exception {
        final String reason;

        Invalid(String reason, String detail) {
            super(detail, null, false, false);
            this.reason = reason;
        }
    }

    private final int maxBytes;
    private final Set<String> knownDevices;

    public TelemetryValidator(int maxBytes, Set<String> knownDevices) {
        this.maxBytes = maxBytes;
        this.knownDevices = knownDevices;
    }

    /** The device of {@code devices/<id>/telemetry}: {@link #TOPIC}'s group, matched by hand (it runs per message). */
    public static String deviceFromTopic(String topic) {
        if (!topic.startsWith("devices/")) {
            return null;
        }
        int slash = topic.indexOf('/', 8);
        if (slash <= 8) {
            return null;  // no second '/' or an empty id
        }
        boolean tail = topic.length() - slash == 10 && topic.startsWith("/telemetry", slash);
        return tail ? topic.substring(8, slash) : null;
    }

    /** {@link #DEVICE_ID}'s matches(), by hand (it runs per message). */
    static boolean validDeviceId(String id) {
        int n = id.length();
        if (n < 1 || n > 64) {
            return false;
        }
        for (int i = 0; i < n; i++) {
            char c = id.charAt(i);
            boolean ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.'
                    || c == ':' || c == '-';
            if (!ok) {
                return false;
            }
        }
        return true;
    }

    public Result validate(byte[] payload, String topic) {
        if (payload.length > maxBytes) {
            return new Rejected("oversized", payload.length + " bytes > limit " + maxBytes);
        }
        String topicDevice = null;
        if (topic != null) {
            topicDevice = deviceFromTopic(topic);
            if (topicDevice == null) {
                return new Rejected("bad_topic", "topic " + PyFormat.repr(topic) + " is not devices/<id>/telemetry");
            }
        }
        Object doc = decodeObject(payload);
        if (doc instanceof Rejected bad) {
            return bad;
        }
        @SuppressWarnings("unchecked") Map<String, Object> obj = (Map<String, Object>) doc;
        for (String name : new String[]{"device_id", "ts", "seq"}) {
            if (!obj.containsKey(name)) {
                return new Rejected("missing_field", "required field " + PyFormat.repr(name) + " is missing");
            }
        }
        Object deviceId = obj.get("device_id"), ts = obj.get("ts"), seq = obj.get("seq");
        if (!(deviceId instanceof String id) || !validDeviceId(id)) {
            return new Rejected("wrong_type", "device_id must be a string of 1-64 characters [A-Za-z0-9_.:-]");
        }
        if (!isNumber(ts)) {
            return new Rejected("wrong_type", "ts must be a number (epoch seconds)");
        }
        if (!Double.isFinite(asDouble(ts))) {
            return new Rejected("non_finite", "ts is not finite");
        }
        if (seq instanceof Double d && Double.isFinite(d) && d == Math.rint(d)) {
            seq = integer(new java.math.BigDecimal(d).toBigIntegerExact());  // 3.0 is the integer 3 in JSON
        }
        if (!(seq instanceof Long || seq instanceof BigInteger) || signum(seq) < 0) {
            return new Rejected("wrong_type", "seq must be a non-negative integer");
        }
        if (topicDevice != null && !topicDevice.equals(id)) {
            return new Rejected("topic_mismatch", "device_id " + PyFormat.repr(id) + " published on the topic of "
                    + PyFormat.repr(topicDevice));
        }
        if (knownDevices != null && !knownDevices.contains(id)) {
            return new Rejected("unknown_device", "device " + PyFormat.repr(id) + " is not registered");
        }
        int limit = MAX_CHANNELS + RESERVED.size();
        if (obj.size() > limit) {
            return new Rejected("too_many_fields", obj.size() + " fields > limit " + limit);
        }
        StringBuilder channels = new StringBuilder();
        for (Map.Entry<String, Object> e : obj.entrySet()) {
            if (RESERVED.contains(e.getKey())) {
                continue;
            }
            Object v = e.getValue();
            if (!isNumber(v)) {
                return new Rejected("wrong_type", "channel " + PyFormat.repr(e.getKey()) + " must be a number, got "
                        + PyFormat.typeName(v));
            }
            double d = asDouble(v);
            if (!Double.isFinite(d)) {
                return new Rejected("non_finite", "channel " + PyFormat.repr(e.getKey()) + " is not finite");
            }
            channels.append(',');
            PyFormat.appendJsonString(channels, e.getKey());
            channels.append(':');
            PyFormat.appendFloat(channels, d);
        }
        Object label = obj.get("label");
        if (label instanceof Boolean b) {
            label = b ? 1L : 0L;
        }
        if (label != null && !isZeroOrOne(label)) {
            return new Rejected("wrong_type", "label must be 0, 1, true, false or null");
        }
        Object anomaly = obj.get("anomaly");
        if (anomaly != null && !(anomaly instanceof String)) {
            return new Rejected("wrong_type", "anomaly must be a string or null");
        }
        Object deviceType = obj.get("device_type");
        if (deviceType != null && !(deviceType instanceof String)) {
            return new Rejected("wrong_type", "device_type must be a string or null");
        }
        // Reading.to_json: device_id, ts, seq, channels, then device_type, label, anomaly when not None.
        StringBuilder out = new StringBuilder(64 + channels.length());
        out.append("{\"device_id\":");
        PyFormat.appendJsonString(out, id);
        out.append(",\"ts\":");
        PyFormat.appendFloat(out, asDouble(ts));
        out.append(",\"seq\":").append(seq).append(channels);
        if (deviceType != null) {
            out.append(",\"device_type\":");
            PyFormat.appendJsonString(out, (String) deviceType);
        }
        if (label != null) {
            out.append(",\"label\":");
            if (label instanceof Double d) {
                PyFormat.appendFloat(out, d);
            } else {
                out.append(label);
            }
        }
        if (anomaly != null) {
            out.append(",\"anomaly\":");
            PyFormat.appendJsonString(out, (String) anomaly);
        }
        return new Accepted(id, out.append('}').toString().getBytes(StandardCharsets.US_ASCII));
    }

    /** A payload as a JSON object (keys in order), or why it is not one: Python's {@code telemetry.decode_object}. */
    static Object decodeObject(byte[] payload) {
        Object doc;
        try {
            doc = parse(payload);
        } catch (Invalid e) {
            return new Rejected(e.reason, e.getMessage());
        }
        if (!(doc instanceof Map)) {
            return new Rejected("not_an_object", "payload is a JSON " + PyFormat.typeName(doc) + ", not an object");
        }
        return doc;
    }

    /**
     * One value of a one-value-per-topic payload (Python's {@code ingest_mapping._decode_value}): any JSON value,
     * else the text itself; a Rejected for NaN/Infinity, JSON nested too deeply or bytes that are not UTF-8.
     */
    static Object decodeValue(byte[] payload) {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().decode(java.nio.ByteBuffer.wrap(payload)).toString();
        } catch (java.nio.charset.CharacterCodingException e) {
            return new Rejected("malformed_json", "payload is neither JSON nor UTF-8 text");
        }
        try {
            Object value = parse(payload);
            return value == null ? NULL_VALUE : value;
        } catch (Invalid e) {
            if (e.reason.equals("non_finite") || e.getMessage().equals("JSON nested too deeply")) {
                return new Rejected(e.reason, e.getMessage());
            }
            return text;
        }
    }

    /** JSON null as {@link #decodeValue}'s result (null is no value to return). */
    static final Object NULL_VALUE = new Object();

    static Object integer(BigInteger i) {
        return i.bitLength() < 64 ? (Object) i.longValue() : i;
    }

    static boolean isNumber(Object v) {
        return v instanceof Long || v instanceof BigInteger || v instanceof Double;
    }

    /** Python's float(v); an int too large for a double reads as infinite here (Python raises OverflowError). */
    static double asDouble(Object v) {
        if (v instanceof Double d) {
            return d;
        }
        if (v instanceof Long l) {
            return (double) l;
        }
        return ((BigInteger) v).doubleValue();
    }

    static int signum(Object v) {
        return v instanceof Long l ? Long.signum(l) : ((BigInteger) v).signum();
    }

    private static boolean isZeroOrOne(Object v) {
        if (v instanceof Long l) {
            return l == 0 || l == 1;
        }
        if (v instanceof Double d) {
            return d == 0.0 || d == 1.0;
        }
        return false;  // a BigInteger outside long range, a string, a list...
    }

    // ------------------------------------------------------------------ JSON as Python's json.loads reads it
    private static Object parse(byte[] payload) throws Invalid {
        try (JsonParser p = JSON.createParser(payload)) {
            JsonToken first = p.nextToken();
            if (first == null) {
                throw new Invalid("malformed_json", "Expecting value: line 1 column 1 (char 0)");
            }
            Object doc = value(p, first, 0);
            if (p.nextToken() != null) {
                throw new Invalid("malformed_json", "Extra data after the JSON value");
            }
            return doc;
        } catch (IOException e) {
            String msg = String.valueOf(e instanceof com.fasterxml.jackson.core.JsonProcessingException j
                    ? j.getOriginalMessage() : e.getMessage());
            if (msg.contains("nesting depth")) {
                throw new Invalid("malformed_json", "JSON nested too deeply");
            }
            throw new Invalid("malformed_json", msg.length() > 200 ? msg.substring(0, 200) : msg);
        }
    }

    private static Object value(JsonParser p, JsonToken t, int depth) throws IOException, Invalid {
        switch (t) {
            case START_OBJECT: {
                if (depth >= MAX_NESTING) {
                    throw new Invalid("malformed_json", "JSON nested too deeply");
                }
                Map<String, Object> m = new LinkedHashMap<>();
                String key;
                while ((key = p.nextFieldName()) != null) {
                    m.put(key, value(p, p.nextToken(), depth + 1));  // a repeated key keeps its first place, last value
                }
                return m;
            }
            case START_ARRAY: {
                if (depth >= MAX_NESTING) {
                    throw new Invalid("malformed_json", "JSON nested too deeply");
                }
                List<Object> l = new ArrayList<>();
                JsonToken next;
                while ((next = p.nextToken()) != JsonToken.END_ARRAY) {
                    l.add(value(p, next, depth + 1));
                }
                return l;
            }
            case VALUE_STRING:
                return p.getText();
            case VALUE_NUMBER_INT: {
                String text = p.getText();
                int digits = text.length() - (text.charAt(0) == '-' ? 1 : 0);
                if (digits > MAX_INT_DIGITS) {
                    throw new Invalid("malformed_json", "Exceeds the limit (" + MAX_INT_DIGITS
                            + " digits) for integer string conversion: value has " + digits
                            + " digits; use sys.set_int_max_str_digits() to increase the limit");
                }
                return digits <= 18 ? (Object) Long.parseLong(text) : new BigInteger(text);
            }
            case VALUE_NUMBER_FLOAT: {
                String text = p.getText();
                char c = text.charAt(0);
                if ((c == '-' || c == '+') && text.length() > 1) {
                    c = text.charAt(1);
                }
                if (Character.isLetter(c)) {  // a NaN/Infinity token, not a number that overflows
                    if (text.equals("NaN") || text.equals("Infinity") || text.equals("-Infinity")) {
                        throw new Invalid("non_finite", "non-finite number " + text);
                    }
                    throw new Invalid("malformed_json", "Expecting value: " + text);
                }
                return Double.parseDouble(text);
            }
            case VALUE_TRUE:
                return Boolean.TRUE;
            case VALUE_FALSE:
                return Boolean.FALSE;
            case VALUE_NULL:
                return null;
            default:
                throw new Invalid("malformed_json", "Unexpected token " + t);
        }
    }
}
