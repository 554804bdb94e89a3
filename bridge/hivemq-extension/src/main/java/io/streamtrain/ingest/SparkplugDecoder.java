package io.streamtrain.ingest;

import com.google.protobuf.InvalidProtocolBufferException;
import org.eclipse.tahu.protobuf.SparkplugBProto;
import org.eclipse.tahu.protobuf.SparkplugBProto.Payload.Metric;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * Sparkplug B edge nodes' protobuf payloads as readings: Python's {@code streamtrain.sparkplug.SparkplugDecoder},
 * rule for rule, with the same reasons and the same raw-record bytes (tests/ingest/vectors/sparkplug.json holds
 * both to that). The payload is parsed by Eclipse Tahu's generated classes ({@code SparkplugBProto}, tahu-core):
 * the raw protobuf message, not Tahu's {@code SparkplugBPayloadDecoder} model, because the rules need what the
 * wire says (a field present or not, {@code int_value} or {@code long_value}, a metric without a datatype) and
 * the model fills in or refuses those.
 *
 * <p>Births, seqs and rebirth requests are kept per edge node. {@link #apply} may be called on several threads:
 * the messages of one edge node are applied one at a time (a lock per node stripe), in the order they come,
 * which is HiveMQ's order for the edge node's one connection.
 */
final class SparkplugDecoder {
    static final String NAMESPACE = "spBv1.0";
    static final Set<String> DEVICE_TYPES = Set.of("DBIRTH", "DDATA", "DDEATH", "DCMD");
    static final Set<String> NODE_TYPES = Set.of("NBIRTH", "NDATA", "NDEATH", "NCMD");
    /** Dead-letter reasons of Sparkplug B beside TelemetryValidator.REASONS (Python's sparkplug.REASONS). */
    static final List<String> REASONS = List.of("malformed_protobuf", "unknown_alias");
    static final String REBIRTH_METRIC = "Node Control/Rebirth";
    static final String BD_SEQ_METRIC = "bdSeq";
    static final int SEQ_MODULO = 256;
    /** A ms timestamp past this (the year 2248) is no time a device keeps (Python's MAX_TIMESTAMP_MS). */
    static final long MAX_TIMESTAMP_MS = 1L << 43;
    private static final int STRIPES = 64;

    // SparkplugBProto.DataType numbers (the Sparkplug specification's).
    private static final int INT8 = 1;
    private static final int INT16 = 2;
    private static final int INT32 = 3;
    private static final int INT64 = 4;
    private static final int UINT64 = 8;
    private static final int FLOAT = 9;
    private static final int DOUBLE = 10;
    private static final int BOOLEAN = 11;

    /** {@code spBv1.0/<group>/<type>/<edge node>[/<device>]}; device null for node messages. */
    record Topic(String group, String messageType, String edgeNode, String device) {
        String node() {
            return group + "\u0000" + edgeNode;
        }

        String nodeName() {
            return group + ":" + edgeNode;
        }

        /** The reading's device id: {@code group:edge node[:device]}. */
        String deviceId() {
            return device == null ? group + ":" + edgeNode : group + ":" + edgeNode + ":" + device;
        }

        String name() {
            return device == null ? group + "/" + edgeNode : group + "/" + edgeNode + "/" + device;
        }
    }

    /** What one MQTT message is: readings, or a refusal; the events to log; a rebirth to request. */
    static final class Outcome {
        Topic topic;
        final List<TelemetryValidator.Accepted> readings = new ArrayList<>();
        TelemetryValidator.Rejected rejection;
        /** Each: the event's name, then its fields as key, value pairs (as Log.event takes them). */
        final List<String[]> events = new ArrayList<>();
        String rebirthTopic;
        byte[] rebirthPayload;
        boolean seqGap;

        String messageType() {
            if (topic != null) {
                return topic.messageType;
            }
            return rejection == null ? "STATE" : "invalid";
        }

        /** The dead letter's key: the topic's device id when it is a valid one. */
        String deviceId() {
            if (topic == null) {
                return null;
            }
            String device = topic.deviceId();
            return TelemetryValidator.validDeviceId(device) ? device : null;
        }

        private void event(String... nameAndFields) {
            events.add(nameAndFields);
        }
    }

    /** What a birth certificate defines: aliases to names, names to datatypes. */
    private static final class Birth {
        final Map<Long, String> names = new HashMap<>();
        final Map<String, Integer> types = new HashMap<>();

        static Birth of(SparkplugBProto.Payload payload) {
            Birth birth = new Birth();
            for (Metric m : payload.getMetricsList()) {
                if (!m.hasName()) {
                    continue;
                }
                if (m.hasAlias()) {
                    birth.names.put(m.getAlias(), m.getName());
                }
                if (m.hasDatatype()) {
                    birth.types.put(m.getName(), m.getDatatype());
                }
            }
            return birth;
        }
    }

    private static final class EdgeNode {
        Long bdSeq;
        Long seq;
        Birth birth;  // null until its NBIRTH is seen
        final Map<String, Birth> devices = new HashMap<>();
        double rebirthRequested = Double.NEGATIVE_INFINITY;
    }

    private final IngestMapping mapping;
    private final double rebirthIntervalS;
    /** Least recently seen first; beyond maxNodes the least recent edge node is forgotten. */
    private final Map<String, EdgeNode> nodes;
    private final Object[] stripes = new Object[STRIPES];

    SparkplugDecoder(IngestMapping mapping, double rebirthIntervalS, int maxNodes) {
        this.mapping = mapping;
        this.rebirthIntervalS = rebirthIntervalS;
        this.nodes = Collections.synchronizedMap(new LinkedHashMap<>(16, 0.75f, true) {
            @Override
            protected boolean removeEldestEntry(Map.Entry<String, EdgeNode> eldest) {
                return size() > maxNodes;
            }
        });
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new Object();
        }
    }

    static Object parseTopic(String topic) {
        String[] parts = topic.split("/", -1);
        boolean levels = parts.length == 4 || parts.length == 5;
        for (String p : parts) {
            levels &= !p.isEmpty();
        }
        if (!levels || !parts[0].equals(NAMESPACE)) {
            return new TelemetryValidator.Rejected("bad_topic", "topic " + PyFormat.repr(topic) + " is not "
                    + NAMESPACE + "/<group>/<type>/<edge node>[/<device>]");
        }
        String kind = parts[2];
        boolean device = DEVICE_TYPES.contains(kind);
        if (!device && !NODE_TYPES.contains(kind)) {
            return new TelemetryValidator.Rejected("bad_topic", "topic " + PyFormat.repr(topic) + ": "
                    + PyFormat.repr(kind) + " is not a Sparkplug B message type");
        }
        if ((parts.length == 5) != device) {
            return new TelemetryValidator.Rejected("bad_topic", "topic " + PyFormat.repr(topic) + ": " + kind
                    + " takes " + (device ? "a" : "no") + " device level");
        }
        return new Topic(parts[1], kind, parts[3], parts.length == 5 ? parts[4] : null);
    }

    /** The NCMD topic and payload asking an edge node to publish its NBIRTH and DBIRTHs again. */
    static byte[] rebirthPayload(long nowMs) {
        return SparkplugBProto.Payload.newBuilder().setTimestamp(nowMs)
                .addMetrics(Metric.newBuilder().setName(REBIRTH_METRIC).setDatatype(BOOLEAN).setBooleanValue(true))
                .build().toByteArray();
    }

    static String rebirthTopic(String group, String edgeNode) {
        return NAMESPACE + "/" + group + "/NCMD/" + edgeNode;
    }

    /** Never throws on bad input: every refusal is an {@code Outcome.rejection} with a reason. */
    Outcome apply(String topic, byte[] payload, double arrived, int maxBytes, Set<String> knownDevices) {
        Outcome out = new Outcome();
        if (topic.startsWith(NAMESPACE + "/STATE/")) {  // a host application's own state (retained), no device's
            out.event("sparkplug_host_state_ignored", "topic", topic);
            return out;
        }
        if (mapping.matchTopic(topic) == null) {
            out.rejection = new TelemetryValidator.Rejected("bad_topic", "topic " + PyFormat.repr(topic)
                    + " matches no pattern of mapping " + mapping.name + " (" + reprList(mapping.topics) + ")");
            return out;
        }
        Object parsed = parseTopic(topic);
        if (parsed instanceof TelemetryValidator.Rejected bad) {
            out.rejection = bad;
            return out;
        }
        Topic t = (Topic) parsed;
        out.topic = t;
        if (payload.length > maxBytes) {
            out.rejection = new TelemetryValidator.Rejected("oversized", payload.length + " bytes > limit " + maxBytes);
            return out;
        }
        if (t.messageType.equals("NCMD") || t.messageType.equals("DCMD")) {
            out.event("sparkplug_command_ignored", "topic", topic);  // to the edge node, not from it
            return out;
        }
        if (!TelemetryValidator.validDeviceId(t.deviceId())) {
            String id = t.deviceId();
            out.rejection = new TelemetryValidator.Rejected("bad_topic", "device id "
                    + PyFormat.repr(id.substring(0, id.offsetByCodePoints(0, Math.min(80, id.codePointCount(0, id.length())))))
                    + " (group:edge node[:device]) is not 1-64 characters [A-Za-z0-9_.:-]");
            return out;
        }
        SparkplugBProto.Payload message;
        try {
            message = SparkplugBProto.Payload.parseFrom(payload);
        } catch (InvalidProtocolBufferException e) {
            out.rejection = new TelemetryValidator.Rejected("malformed_protobuf",
                    KafkaIngestInterceptor.firstCodePoints("not a Sparkplug B payload: " + e.getMessage(), 200));
            return out;
        }
        synchronized (stripes[Math.floorMod(t.node().hashCode(), STRIPES)]) {
            applyToNode(out, t, message, arrived, knownDevices);
        }
        return out;
    }

    private void applyToNode(Outcome out, Topic t, SparkplugBProto.Payload message, double arrived,
                             Set<String> knownDevices) {
        EdgeNode node = nodes.get(t.node());  // an access: the node becomes the most recent
        switch (t.messageType) {
            case "NBIRTH" -> nbirth(out, message);
            case "NDEATH" -> ndeath(out, node, message);
            default -> {
                checkSeq(out, node, message, arrived);
                node = nodes.get(t.node());  // asking for a rebirth may have started its state
                if (t.messageType.equals("DBIRTH")) {
                    if (node == null) {
                        node = newNode(t.node());
                    }
                    node.devices.put(t.device, Birth.of(message));
                    out.event("sparkplug_birth", "device", t.deviceId(), "metrics",
                            String.valueOf(message.getMetricsCount()));
                } else if (t.messageType.equals("DDEATH")) {
                    if (node != null) {
                        node.devices.remove(t.device);
                    }
                    out.event("sparkplug_death", "device", t.deviceId());
                } else {
                    data(out, node, message, arrived, knownDevices);
                }
            }
        }
    }

    // ------------------------------------------------------------------ state
    private EdgeNode newNode(String key) {
        EdgeNode node = new EdgeNode();
        nodes.put(key, node);
        return node;
    }

    private void requestRebirth(Outcome out, EdgeNode node, double arrived, String why) {
        if (node == null) {
            node = newNode(out.topic.node());
        }
        if (rebirthIntervalS == 0 || arrived - node.rebirthRequested < rebirthIntervalS) {
            return;
        }
        node.rebirthRequested = arrived;
        out.rebirthTopic = rebirthTopic(out.topic.group, out.topic.edgeNode);
        out.rebirthPayload = rebirthPayload((long) (arrived * 1000));
        out.event("sparkplug_rebirth_requested", "node", out.topic.nodeName(), "why", why);
    }

    private static Long bdSeq(SparkplugBProto.Payload message) {
        Long bdSeq = null;
        for (Metric m : message.getMetricsList()) {
            if (m.getName().equals(BD_SEQ_METRIC)) {
                if (m.getValueCase() == Metric.ValueCase.INT_VALUE) {
                    bdSeq = Integer.toUnsignedLong(m.getIntValue());
                } else if (m.getValueCase() == Metric.ValueCase.LONG_VALUE) {
                    bdSeq = m.getLongValue();
                }
            }
        }
        return bdSeq;
    }

    private static String unsigned(Long v) {
        return v == null ? "None" : Long.toUnsignedString(v);
    }

    private void nbirth(Outcome out, SparkplugBProto.Payload message) {
        EdgeNode last = nodes.get(out.topic.node());
        EdgeNode node = newNode(out.topic.node());  // a new session: the device births of the last one are gone
        if (last != null) {
            node.rebirthRequested = last.rebirthRequested;  // a birth answering a request opens no new interval
        }
        node.birth = Birth.of(message);
        node.seq = message.hasSeq() ? message.getSeq() : null;
        node.bdSeq = bdSeq(message);
        out.event("sparkplug_birth", "node", out.topic.deviceId(), "bd_seq", unsigned(node.bdSeq), "metrics",
                String.valueOf(message.getMetricsCount()));
    }

    private void ndeath(Outcome out, EdgeNode node, SparkplugBProto.Payload message) {
        Long bdSeq = bdSeq(message);
        // An NDEATH is the broker's will of a session: one whose bdSeq is not the current birth's is an old one's.
        boolean current = node != null && (node.bdSeq == null || bdSeq == null || bdSeq.equals(node.bdSeq));
        if (current) {
            nodes.remove(out.topic.node());
        }
        out.event("sparkplug_death", "node", out.topic.deviceId(), "bd_seq", unsigned(bdSeq), "current",
                current ? "True" : "False");
    }

    private void checkSeq(Outcome out, EdgeNode node, SparkplugBProto.Payload message, double arrived) {
        Long seq = message.hasSeq() ? message.getSeq() : null;
        if (node == null || node.birth == null) {
            out.event("sparkplug_no_birth", "node", out.topic.nodeName(), "type", out.topic.messageType);
            requestRebirth(out, node, arrived, "no NBIRTH seen");
            if (node != null) {
                node.seq = seq;
            }
            return;
        }
        if (node.seq != null) {
            long expected = Long.remainderUnsigned(node.seq + 1, SEQ_MODULO);
            if (seq == null || seq != expected) {
                out.seqGap = true;
                out.event("sparkplug_seq_gap", "node", out.topic.nodeName(), "expected", String.valueOf(expected),
                        "got", unsigned(seq), "type", out.topic.messageType);
                requestRebirth(out, node, arrived, "seq " + unsigned(seq) + " after " + unsigned(node.seq));
            }
        }
        node.seq = seq;
    }

    // ------------------------------------------------------------------ data
    private void data(Outcome out, EdgeNode node, SparkplugBProto.Payload message, double arrived,
                      Set<String> knownDevices) {
        Topic topic = out.topic;
        String device = topic.deviceId();
        if (knownDevices != null && !knownDevices.contains(device)) {
            out.rejection = rejected("unknown_device", "device " + PyFormat.repr(device) + " is not registered");
            return;
        }
        Birth birth = node == null ? null : topic.device == null ? node.birth : node.devices.get(topic.device);
        // Ms timestamps in unsigned order (all are below MAX_TIMESTAMP_MS once checked), channels in first-seen order.
        TreeMap<Long, LinkedHashMap<String, Double>> byTs = new TreeMap<>();
        for (Metric m : message.getMetricsList()) {
            String name;
            if (m.hasName()) {
                name = m.getName();
            } else if (m.hasAlias() && birth != null && birth.names.containsKey(m.getAlias())) {
                name = birth.names.get(m.getAlias());
            } else {
                String what = m.hasAlias() ? "alias " + Long.toUnsignedString(m.getAlias())
                        : "a metric with neither name nor alias";
                out.rejection = rejected("unknown_alias", what + ": no " + (topic.device == null ? "NBIRTH" : "DBIRTH")
                        + " of " + topic.name() + " seen defines it");
                requestRebirth(out, node, arrived, "unknown alias");
                return;
            }
            long tsMs;
            if (m.hasTimestamp()) {
                tsMs = m.getTimestamp();
            } else if (message.hasTimestamp()) {
                tsMs = message.getTimestamp();
            } else {
                out.rejection = rejected("missing_field", "metric " + PyFormat.repr(name)
                        + ": no timestamp, nor one for the payload");
                return;
            }
            if (Long.compareUnsigned(tsMs, MAX_TIMESTAMP_MS) > 0) {
                out.rejection = rejected("wrong_type", "metric " + PyFormat.repr(name) + ": timestamp "
                        + Long.toUnsignedString(tsMs) + " ms is past the year 2248");
                return;
            }
            if (m.getIsNull() || m.getValueCase() == Metric.ValueCase.VALUE_NOT_SET) {
                continue;
            }
            Integer datatype = m.hasDatatype() ? (Integer) m.getDatatype() : birth == null ? null : birth.types.get(name);
            if (datatype == null) {
                out.rejection = rejected("wrong_type", "metric " + PyFormat.repr(name)
                        + " has no datatype, and no birth certificate seen gives one");
                requestRebirth(out, node, arrived, "metric without datatype");
                return;
            }
            Object value = number(m, datatype);
            if (value instanceof TelemetryValidator.Rejected bad) {
                out.rejection = bad;
                return;
            }
            if (value == null) {
                continue;
            }
            String channel = mapping.channelName(name);
            if (channel == null) {
                continue;
            }
            double v = (Double) value;
            if (!Double.isFinite(v)) {
                out.rejection = rejected("non_finite", "metric " + PyFormat.repr(name) + " is not finite");
                return;
            }
            if (TelemetryValidator.RESERVED.contains(channel)) {
                out.rejection = rejected("wrong_type", "metric " + PyFormat.repr(name) + " would be named "
                        + PyFormat.repr(channel) + ", a reserved field: rename it");
                return;
            }
            byTs.computeIfAbsent(tsMs, k -> new LinkedHashMap<>()).put(channel, v);
        }
        if (byTs.isEmpty()) {
            out.rejection = rejected("missing_field", "no numeric metric in the payload");
            return;
        }
        for (Map.Entry<Long, LinkedHashMap<String, Double>> e : byTs.entrySet()) {
            if (e.getValue().size() > TelemetryValidator.MAX_CHANNELS) {
                out.readings.clear();
                out.rejection = rejected("too_many_fields", e.getValue().size() + " channels > limit "
                        + TelemetryValidator.MAX_CHANNELS);
                return;
            }
            out.readings.add(reading(device, e.getKey(), e.getValue()));
        }
    }

    /** Python's {@code Reading(device, ts_ms / 1000.0, ts_ms, channels).to_json()}. */
    private static TelemetryValidator.Accepted reading(String device, long tsMs, Map<String, Double> channels) {
        return IngestMapping.record(device, tsMs / 1000.0, tsMs, channels);
    }

    /** Python's repr of a list of strings. */
    static String reprList(List<String> items) {
        StringBuilder out = new StringBuilder("[");
        for (String item : items) {
            out.append(out.length() > 1 ? ", " : "").append(PyFormat.repr(item));
        }
        return out.append(']').toString();
    }

    private static TelemetryValidator.Rejected rejected(String reason, String detail) {
        return new TelemetryValidator.Rejected(reason, detail);
    }

    private static String dataTypeName(int datatype) {
        SparkplugBProto.DataType d = SparkplugBProto.DataType.forNumber(datatype);
        return d == null ? "datatype " + Integer.toUnsignedString(datatype) : d.name();
    }

    private static String metricName(Metric m) {
        return m.getName().isEmpty() ? Long.toUnsignedString(m.getAlias()) : PyFormat.repr(m.getName());
    }

    /** The metric's value as a channel (a Double); null when it is left out; a Rejected when it is refused. */
    private Object number(Metric m, int datatype) {
        Metric.ValueCase field = m.getValueCase();
        String fieldName = field.name().toLowerCase(java.util.Locale.ROOT);
        if (datatype >= INT8 && datatype <= UINT64) {
            if (field != Metric.ValueCase.INT_VALUE && field != Metric.ValueCase.LONG_VALUE) {
                return rejected("wrong_type", "metric " + metricName(m) + ": " + dataTypeName(datatype) + " sent as "
                        + fieldName);
            }
            int bits = switch (datatype) {
                case INT8 -> 8;
                case INT16 -> 16;
                case INT32 -> 32;
                case INT64 -> 64;
                default -> 0;
            };
            if (field == Metric.ValueCase.INT_VALUE) {
                long raw = Integer.toUnsignedLong(m.getIntValue());
                if (bits != 0) {
                    // Two's complement: Tahu sign-extends into the 32/64-bit field, others use the type's own width.
                    if (raw >= 1L << 31) {
                        raw -= 1L << 32;
                    } else if (bits < 32 && raw >= 1L << (bits - 1) && raw < 1L << bits) {
                        raw -= 1L << bits;
                    }
                }
                return (double) raw;
            }
            long raw = m.getLongValue();  // unsigned on the wire
            if (bits != 0) {
                if (raw < 0) {
                    return (double) raw;  // >= 2**63 as unsigned: minus 2**64 is the signed long itself
                }
                if (bits < 64 && raw >= 1L << (bits - 1) && raw < 1L << bits) {
                    raw -= 1L << bits;
                }
                return (double) raw;
            }
            // Python's float() of the unsigned value: correctly rounded, as BigInteger.doubleValue rounds.
            return raw >= 0 ? (double) raw : new java.math.BigInteger(Long.toUnsignedString(raw)).doubleValue();
        }
        if (datatype == FLOAT || datatype == DOUBLE) {
            if (field == Metric.ValueCase.FLOAT_VALUE) {
                return (double) m.getFloatValue();
            }
            if (field == Metric.ValueCase.DOUBLE_VALUE) {
                return m.getDoubleValue();
            }
            return rejected("wrong_type", "metric " + metricName(m) + ": " + dataTypeName(datatype) + " sent as "
                    + fieldName);
        }
        if (datatype == BOOLEAN && field == Metric.ValueCase.BOOLEAN_VALUE) {
            return mapping.skipBooleans ? null : (Double) (m.getBooleanValue() ? 1.0 : 0.0);
        }
        if (!mapping.refuseNonNumeric) {
            return null;
        }
        return rejected("wrong_type", "metric " + metricName(m) + " is " + dataTypeName(datatype) + ", not a number");
    }
}
