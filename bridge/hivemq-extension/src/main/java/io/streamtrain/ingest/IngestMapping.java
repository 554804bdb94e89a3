package io.streamtrain.ingest;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.DateTimeException;
import java.time.LocalDateTime;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * How devices publish: streamtrain/ingest_mapping.py's {@code IngestMapping} and its {@code apply()}, check for
 * check and in the same order, with the same reasons (details may be worded differently). The presets come from
 * the generated resource {@code ingest-presets.json} (make ingest-presets), never written here; the shared vectors
 * tests/ingest/vectors/mappings.json hold both implementations to the same readings.
 *
 * <p>Format {@code sparkplug_b} is not applied here: its births and aliases need the bridge.
 *
 * <p>Known differences: ISO 8601 timestamps are read in the forms devices send (calendar dates, extended or
 * basic, with a time to the hour, minute, second or its fraction, and a zone {@code Z} or {@code ±hh[:mm[:ss]]});
 * Python 3.11's {@code datetime.fromisoformat} also reads week dates ({@code 2026-W49-7}), which are refused
 * here as {@code wrong_type}. A channel's name is lower-cased with {@link Locale#ROOT} as Python's
 * {@code str.lower()} does for every character a device is likely to send.
 */
final class IngestMapping {
    static final String RESOURCE = "/ingest-presets.json";
    private static final Pattern LEVEL = Pattern.compile("\\{([A-Za-z_][A-Za-z0-9_]*)\\}");
    private static final Pattern CAMEL = Pattern.compile("(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])");
    private static final Pattern NOT_SNAKE = Pattern.compile("[^a-z0-9]+");
    /** datetime.fromisoformat's common forms: a date, then a time to the second or its fraction, then a zone. */
    private static final Pattern ISO = Pattern.compile("(\\d{4})(-?)(\\d{2})\\2(\\d{2})(?:.(\\d{2})(?::?(\\d{2})"
            + "(?::?(\\d{2})(?:[.,](\\d+))?)?)?(Z|[+-]\\d{2}(?::?\\d{2}(?::?\\d{2}(?:\\.\\d{1,6})?)?)?)?)?");
    private static final Set<String> FIELDS = Set.of("name", "format", "topics", "device_id_path", "ts_path",
            "ts_format", "ts_timezone", "seq_path", "channels_root", "separator", "include", "exclude", "rename",
            "names", "booleans", "non_numeric", "hold_s");
    /** A channel name the include/exclude patterns leave out (a cache value; compared by identity). */
    private static final String LEFT_OUT = new String("\0left out");
    private static final int NAME_CACHE = 65536;

    final String name;
    final String format;
    final List<String> topics;
    final String deviceIdPath;
    final String tsPath;
    final String tsFormat;
    final ZoneId tsZone;
    final String seqPath;
    final String channelsRoot;
    final String separator;
    final List<Pattern> include;
    final List<Pattern> exclude;
    final Map<String, String> rename;
    final boolean snakeCase;
    final boolean skipBooleans;
    final boolean refuseNonNumeric;
    /** One value per topic: how long (s) a channel's last value stays part of its device's readings. */
    final double holdS;
    private final List<TopicPattern> patterns = new ArrayList<>();
    private final List<List<String>> consumed = new ArrayList<>();
    private final Map<String, String> names = new ConcurrentHashMap<>();

    /** One topic pattern: levels literal, {@code +} or {@code {name}} (any non-empty level, kept under its name). */
    record TopicPattern(String text, String[] literals, String[] names) {
        static TopicPattern of(String text) {
            String[] levels = text.split("/", -1);
            String[] literals = new String[levels.length];
            String[] names = new String[levels.length];
            for (int i = 0; i < levels.length; i++) {
                String level = levels[i];
                Matcher named = LEVEL.matcher(level);
                if (named.matches()) {
                    names[i] = named.group(1);
                } else if (!level.equals("+")) {
                    if (level.contains("{") || level.contains("}") || level.contains("#") || level.contains("+")) {
                        throw new IllegalArgumentException("topic pattern " + PyFormat.repr(text) + ": level "
                                + PyFormat.repr(level) + " must be literal, '+' or a whole '{name}'");
                    }
                    literals[i] = level;
                }
            }
            return new TopicPattern(text, literals, names);
        }

        /** The MQTT filter of this pattern ('+' for every wildcard level) matches the topic's levels. */
        boolean subscribed(String[] parts) {
            if (parts.length != literals.length) {
                return false;
            }
            for (int i = 0; i < parts.length; i++) {
                if (literals[i] != null && !literals[i].equals(parts[i])) {
                    return false;
                }
            }
            return true;
        }

        /** The named levels, or null when the topic does not match (an empty wildcard level names nothing). */
        Map<String, String> match(String[] parts) {
            if (!subscribed(parts)) {
                return null;
            }
            Map<String, String> named = new LinkedHashMap<>(4);
            for (int i = 0; i < parts.length; i++) {
                if (literals[i] == null) {
                    if (parts[i].isEmpty()) {
                        return null;
                    }
                    if (names[i] != null) {
                        named.put(names[i], parts[i]);
                    }
                }
            }
            return named;
        }

        boolean names(String level) {
            for (String n : names) {
                if (level.equals(n)) {
                    return true;
                }
            }
            return false;
        }
    }

    /** Per-device seqs from arrival times in ms, strictly increasing even within one ms (Python's ArrivalSeq). */
    static final class ArrivalSeq {
        private final LinkedHashMap<String, Long> last;

        ArrivalSeq(int maxDevices) {
            this.last = new LinkedHashMap<>(1024, 0.75f, true) {
                @Override
                protected boolean removeEldestEntry(Map.Entry<String, Long> eldest) {
                    return size() > maxDevices;
                }
            };
        }

        synchronized long next(String device, long tsMs) {
            Long previous = last.get(device);
            long seq = previous == null ? tsMs : Math.max(tsMs, previous + 1);
            last.put(device, seq);
            return seq;
        }
    }

    /**
     * One value per topic (Python's HeldValues): the last value of each channel of each device and when it came,
     * so that a message makes a reading with every channel its device published within {@code holdS}.
     */
    static final class HeldValues {
        private final double holdS;
        private final LinkedHashMap<String, LinkedHashMap<String, double[]>> devices;  // name -> {value, ts}

        HeldValues(double holdS, int maxDevices) {
            this.holdS = holdS;
            this.devices = new LinkedHashMap<>(1024, 0.75f, true) {
                @Override
                protected boolean removeEldestEntry(Map.Entry<String, LinkedHashMap<String, double[]>> eldest) {
                    return size() > maxDevices;
                }
            };
        }

        /** The reading's channels, or why it is refused (then nothing is kept). */
        synchronized Object merge(String device, double ts, Map<String, Double> channels) {
            LinkedHashMap<String, double[]> merged = new LinkedHashMap<>();
            LinkedHashMap<String, double[]> held = devices.get(device);
            if (held != null) {
                held.forEach((k, v) -> {
                    if (ts - v[1] <= holdS) {
                        merged.put(k, v);
                    }
                });
            }
            channels.forEach((k, v) -> merged.put(k, new double[]{v, ts}));
            if (merged.size() > TelemetryValidator.MAX_CHANNELS) {
                return rejected("too_many_fields", merged.size() + " channels held > limit "
                        + TelemetryValidator.MAX_CHANNELS);
            }
            devices.remove(device);
            devices.put(device, merged);
            Map<String, Double> out = new LinkedHashMap<>();
            merged.forEach((k, v) -> out.put(k, v[0]));
            return out;
        }
    }

    @SuppressWarnings("unchecked")
    private IngestMapping(Map<String, Object> f) {
        for (String key : f.keySet()) {
            if (!FIELDS.contains(key)) {
                throw new IllegalArgumentException("ingest mapping: unknown field " + PyFormat.repr(key));
            }
        }
        name = string(f, "name", false);
        format = oneOf(f, "format", "streamtrain", "json", "sparkplug_b");
        Object t = f.get("topics");
        if (!(t instanceof List<?> list) || list.isEmpty() || !list.stream().allMatch(String.class::isInstance)) {
            throw new IllegalArgumentException("ingest mapping: topics must be a non-empty list of strings");
        }
        topics = List.copyOf((List<String>) t);
        for (String topic : topics) {
            patterns.add(TopicPattern.of(topic));
        }
        deviceIdPath = string(f, "device_id_path", true);
        tsPath = string(f, "ts_path", true);
        tsFormat = oneOf(f, "ts_format", "s", "ms", "iso8601");
        try {
            tsZone = ZoneId.of(string(f, "ts_timezone", false));
        } catch (DateTimeException e) {
            throw new IllegalArgumentException("ingest mapping: unknown time zone " + PyFormat.repr(
                    String.valueOf(f.get("ts_timezone"))));
        }
        seqPath = string(f, "seq_path", true);
        channelsRoot = string(f, "channels_root", true);
        separator = string(f, "separator", false);
        include = globs(f, "include");
        exclude = globs(f, "exclude");
        Object r = f.get("rename");
        if (!(r instanceof Map<?, ?> m) || !m.values().stream().allMatch(String.class::isInstance)) {
            throw new IllegalArgumentException("ingest mapping: rename must map names to names");
        }
        rename = Map.copyOf((Map<String, String>) r);
        snakeCase = oneOf(f, "names", "snake_case", "keep").equals("snake_case");
        skipBooleans = oneOf(f, "booleans", "number", "skip").equals("skip");
        refuseNonNumeric = oneOf(f, "non_numeric", "skip", "refuse").equals("refuse");
        if (!(f.get("hold_s") instanceof Number hold) || !(hold.doubleValue() > 0)) {
            throw new IllegalArgumentException("ingest mapping: hold_s must be a number of seconds > 0");
        }
        holdS = hold.doubleValue();
        for (String p : new String[]{deviceIdPath, tsPath, seqPath}) {
            if (p != null) {
                consumed.add(List.of(p.split("\\.", -1)));
            }
        }
        if (format.equals("streamtrain") && !topics.equals(List.of("devices/{device_id}/telemetry"))) {
            throw new IllegalArgumentException("format streamtrain takes the topic devices/{device_id}/telemetry only");
        }
        if (format.equals("json") && deviceIdPath == null) {
            for (TopicPattern p : patterns) {
                if (!p.names("device_id")) {
                    throw new IllegalArgumentException("topic pattern " + PyFormat.repr(p.text())
                            + " has no {device_id} level and device_id_path is not set");
                }
            }
        }
        if (oneValuePerTopic()) {
            String[][] paths = {{"device_id_path", deviceIdPath}, {"ts_path", tsPath}, {"seq_path", seqPath},
                {"channels_root", channelsRoot}};
            for (String[] p : paths) {
                if (p[1] != null) {
                    throw new IllegalArgumentException("topics with a {channel} level carry one value each and take no "
                            + p[0] + ": the device comes from the topic, the time is the arrival");
                }
            }
        }
    }

    /** Some topic pattern has a {@code {channel}} level: one value per topic, merged into readings by time. */
    boolean oneValuePerTopic() {
        return patterns.stream().anyMatch(p -> p.names("channel"));
    }

    // ------------------------------------------------------------------ loading
    /** The generated resource: {"defaults": {...}, "presets": {name: {...}}}. */
    @SuppressWarnings("unchecked")
    static Map<String, Object> resource() {
        try (InputStream in = IngestMapping.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException(RESOURCE + " is missing from the jar");
            }
            return (Map<String, Object>) json(in.readAllBytes(), RESOURCE);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read " + RESOURCE + ": " + e);
        }
    }

    @SuppressWarnings("unchecked")
    static Map<String, Map<String, Object>> presets() {
        return (Map<String, Map<String, Object>>) resource().get("presets");
    }

    /** A mapping from all of its fields (a preset of the resource, or a vector's mapping). */
    static IngestMapping of(Map<String, Object> fields) {
        return new IngestMapping(fields);
    }

    /**
     * A preset by name, or a JSON file (a mapping, or {@code "preset": <name>} plus fields that override it;
     * JSON is YAML, so the bridge reads the same file); with {@code topics}, those patterns instead of its own.
     * Python's {@code load_mapping}.
     */
    @SuppressWarnings("unchecked")
    static IngestMapping load(String spec, List<String> topics) throws IOException {
        Map<String, Object> resource = resource();
        Map<String, Map<String, Object>> presets = (Map<String, Map<String, Object>>) resource.get("presets");
        Map<String, Object> fields;
        if (presets.containsKey(spec)) {
            fields = new LinkedHashMap<>(presets.get(spec));
        } else {
            // Inline JSON: how the operator hands a StreamingTraining's spec.ingest.mapping over (Python's too).
            boolean inline = spec.strip().startsWith("{");
            Path path = inline ? null : Path.of(spec);
            if (!inline && !Files.isRegularFile(path)) {
                throw new IllegalArgumentException("ingest mapping " + PyFormat.repr(spec) + " is neither a preset ("
                        + String.join(", ", presets.keySet()) + "), a file nor an inline JSON object");
            }
            String where = inline ? "(inline)" : spec;
            Object doc = json(inline ? spec.getBytes(StandardCharsets.UTF_8) : Files.readAllBytes(path), where);
            if (!(doc instanceof Map)) {
                throw new IllegalArgumentException("ingest mapping " + where + ": a JSON object is expected");
            }
            Map<String, Object> data = new LinkedHashMap<>((Map<String, Object>) doc);
            Object base = data.remove("preset");
            if (base != null && !presets.containsKey(String.valueOf(base))) {
                throw new IllegalArgumentException("ingest mapping " + where + ": unknown preset "
                        + PyFormat.repr(String.valueOf(base)));
            }
            fields = new LinkedHashMap<>(base == null ? (Map<String, Object>) resource.get("defaults")
                    : presets.get(String.valueOf(base)));
            if (base == null) {
                String stem = inline ? "inline" : path.getFileName().toString();
                fields.put("name", stem.contains(".") ? stem.substring(0, stem.lastIndexOf('.')) : stem);
            }
            fields.putAll(data);
        }
        if (topics != null && !topics.isEmpty()) {
            fields.put("topics", List.copyOf(topics));
        }
        return new IngestMapping(fields);
    }

    private static Object json(byte[] bytes, String where) {
        Object doc = TelemetryValidator.decodeObject(bytes);
        if (doc instanceof TelemetryValidator.Rejected bad) {
            throw new IllegalArgumentException(where + ": " + bad.detail());
        }
        return doc;
    }

    private static String string(Map<String, Object> f, String key, boolean nullable) {
        Object v = f.get(key);
        if (v instanceof String s) {
            return s;
        }
        if (v == null && nullable) {
            return null;
        }
        throw new IllegalArgumentException("ingest mapping: " + key + " must be a string" + (nullable ? " or null" : ""));
    }

    private static String oneOf(Map<String, Object> f, String key, String... allowed) {
        Object v = f.get(key);
        for (String a : allowed) {
            if (a.equals(v)) {
                return a;
            }
        }
        throw new IllegalArgumentException("ingest mapping: " + key + " must be one of " + String.join(", ", allowed)
                + ", not " + v);
    }

    private static List<Pattern> globs(Map<String, Object> f, String key) {
        Object v = f.get(key);
        if (!(v instanceof List<?> list) || !list.stream().allMatch(String.class::isInstance)) {
            throw new IllegalArgumentException("ingest mapping: " + key + " must be a list of shell-style patterns");
        }
        List<Pattern> out = new ArrayList<>();
        for (Object p : list) {
            out.add(glob((String) p));
        }
        return List.copyOf(out);
    }

    /** Python's fnmatch.translate: {@code *}, {@code ?}, {@code [seq]} and {@code [!seq]}, case-sensitive. */
    static Pattern glob(String p) {
        StringBuilder re = new StringBuilder();
        int i = 0;
        int n = p.length();
        while (i < n) {
            char c = p.charAt(i++);
            if (c == '*') {
                re.append(".*");
            } else if (c == '?') {
                re.append('.');
            } else if (c == '[') {
                int j = i;
                if (j < n && p.charAt(j) == '!') {
                    j++;
                }
                if (j < n && p.charAt(j) == ']') {
                    j++;
                }
                while (j < n && p.charAt(j) != ']') {
                    j++;
                }
                if (j >= n) {
                    re.append("\\[");
                } else {
                    String set = p.substring(i, j);
                    i = j + 1;
                    re.append('[');
                    int k = 0;
                    if (set.startsWith("!")) {
                        re.append('^');
                        k = 1;
                    }
                    for (; k < set.length(); k++) {
                        char d = set.charAt(k);
                        if (d == '\\' || d == '[' || d == ']' || d == '&' || d == '^') {
                            re.append('\\');
                        }
                        re.append(d);
                    }
                    re.append(']');
                }
            } else {
                re.append(Pattern.quote(String.valueOf(c)));
            }
        }
        return Pattern.compile(re.toString(), Pattern.DOTALL);
    }

    // ------------------------------------------------------------------ derived
    /** The topic is one the bridge's subscriptions (each pattern with '+' for its wildcards) would deliver. */
    boolean subscribed(String topic) {
        String[] parts = topic.split("/", -1);
        for (TopicPattern p : patterns) {
            if (p.subscribed(parts)) {
                return true;
            }
        }
        return false;
    }

    Map<String, String> matchTopic(String topic) {
        String[] parts = topic.split("/", -1);
        for (TopicPattern p : patterns) {
            Map<String, String> named = p.match(parts);
            if (named != null) {
                return named;
            }
        }
        return null;
    }

    /** The dead letter's key: the device of the topic, when it names a valid one. */
    String deviceFromTopic(String topic) {
        if (format.equals("streamtrain")) {
            return TelemetryValidator.deviceFromTopic(topic);
        }
        Map<String, String> named = matchTopic(topic);
        String device = named == null ? null : named.get("device_id");
        return device != null && TelemetryValidator.validDeviceId(device) ? device : null;
    }

    static String snakeCase(String name) {
        String s = NOT_SNAKE.matcher(CAMEL.matcher(name).replaceAll("_").toLowerCase(Locale.ROOT)).replaceAll("_");
        int a = 0;
        int b = s.length();
        while (a < b && s.charAt(a) == '_') {
            a++;
        }
        while (b > a && s.charAt(b - 1) == '_') {
            b--;
        }
        return s.substring(a, b);
    }

    /** The reading's name of the flattened key, null when include/exclude leave it out. */
    String channelName(String flat) {
        String cached = names.get(flat);
        if (cached == null) {
            cached = LEFT_OUT;
            if (include.stream().anyMatch(p -> p.matcher(flat).matches())
                    && exclude.stream().noneMatch(p -> p.matcher(flat).matches())) {
                String renamed = rename.get(flat);
                cached = renamed != null && !renamed.isEmpty() ? renamed : snakeCase ? snakeCase(flat) : flat;
            }
            if (names.size() >= NAME_CACHE) {
                names.clear();  // bounded all the same: payload keys are few per kind of device
            }
            names.put(flat, cached);
        }
        return cached == LEFT_OUT ? null : cached;
    }

    // ------------------------------------------------------------------ applying
    /**
     * One MQTT message as a raw record (the bytes Python's {@code Reading.to_json} writes), or the reason it is
     * refused; never throws on bad input. {@code arrived}: epoch seconds.
     */
    @SuppressWarnings("unchecked")
    TelemetryValidator.Result apply(String topic, byte[] payload, double arrived, int maxBytes, Set<String> known,
                                    ArrivalSeq arrivalSeq, HeldValues held) {
        if (format.equals("sparkplug_b")) {
            throw new IllegalStateException("sparkplug_b messages go through SparkplugDecoder (births per edge node)");
        }
        if (format.equals("streamtrain")) {
            return new TelemetryValidator(maxBytes, known).validate(payload, topic);
        }
        if (payload.length > maxBytes) {
            return rejected("oversized", payload.length + " bytes > limit " + maxBytes);
        }
        Map<String, String> named = matchTopic(topic);
        if (named == null) {
            return rejected("bad_topic", "topic " + PyFormat.repr(topic) + " matches no pattern of mapping " + name
                    + " (" + topics + ")");
        }
        String channel = named.get("channel");
        if (channel != null) {
            return oneValue(named.get("device_id"), channel, payload, arrived, known, arrivalSeq, held);
        }
        Object doc = TelemetryValidator.decodeObject(payload);
        if (doc instanceof TelemetryValidator.Rejected bad) {
            return bad;
        }
        Map<String, Object> obj = (Map<String, Object>) doc;
        String topicDevice = named.get("device_id");
        if (topicDevice != null && !TelemetryValidator.validDeviceId(topicDevice)) {
            return rejected("bad_topic", "the topic's device level is not a device id (1-64 characters [A-Za-z0-9_.:-])");
        }
        String device = topicDevice;
        if (deviceIdPath != null) {
            Object[] found = path(obj, deviceIdPath);
            if (found == null) {
                return rejected("missing_field", "required field " + PyFormat.repr(deviceIdPath) + " is missing");
            }
            if (!(found[0] instanceof String id) || !TelemetryValidator.validDeviceId(id)) {
                return rejected("wrong_type", deviceIdPath + " must be a string of 1-64 characters [A-Za-z0-9_.:-]");
            }
            if (topicDevice != null && !id.equals(topicDevice)) {
                return rejected("topic_mismatch", "device id " + PyFormat.repr(id) + " published on the topic of "
                        + PyFormat.repr(topicDevice));
            }
            device = id;
        }
        if (known != null && !known.contains(device)) {
            return rejected("unknown_device", "device " + PyFormat.repr(device) + " is not registered");
        }
        double ts;
        if (tsPath == null) {
            ts = arrived;
        } else {
            Object[] found = path(obj, tsPath);
            if (found == null) {
                return rejected("missing_field", "required field " + PyFormat.repr(tsPath) + " is missing");
            }
            Object stamp = timestamp(found[0]);
            if (stamp instanceof TelemetryValidator.Rejected bad) {
                return bad;
            }
            ts = (Double) stamp;
        }
        if (ts < 0) {
            return rejected("wrong_type", "timestamp " + ts + " is before 1970");
        }
        Object seq;
        if (seqPath != null) {
            Object[] found = path(obj, seqPath);
            if (found == null) {
                return rejected("missing_field", "required field " + PyFormat.repr(seqPath) + " is missing");
            }
            seq = found[0];
            if (seq instanceof Double d && Double.isFinite(d) && d == Math.rint(d)) {
                seq = TelemetryValidator.integer(new java.math.BigDecimal(d).toBigIntegerExact());
            }
            if (!(seq instanceof Long || seq instanceof java.math.BigInteger) || TelemetryValidator.signum(seq) < 0) {
                return rejected("wrong_type", seqPath + " must be a non-negative integer");
            }
        } else {
            double ms = Math.rint(ts * 1000);  // Python's round(): half to even, an int however large
            Object tsMs = Math.abs(ms) < 0x1p62 ? (Object) (long) ms
                    : TelemetryValidator.integer(new java.math.BigDecimal(ms).toBigIntegerExact());
            seq = tsPath == null && arrivalSeq != null && tsMs instanceof Long l ? (Object) arrivalSeq.next(device, l)
                    : tsMs;
        }
        Object channels = channels(obj);
        if (channels instanceof TelemetryValidator.Rejected bad) {
            return bad;
        }
        return record(device, ts, seq, (Map<String, Double>) channels);
    }

    /** A message on a topic with a {@code {channel}} level: its payload is that channel's value. */
    @SuppressWarnings("unchecked")
    private TelemetryValidator.Result oneValue(String device, String channel, byte[] payload, double arrived,
                                               Set<String> known, ArrivalSeq arrivalSeq, HeldValues held) {
        if (!TelemetryValidator.validDeviceId(device)) {
            return rejected("bad_topic", "the topic's device level is not a device id (1-64 characters [A-Za-z0-9_.:-])");
        }
        if (known != null && !known.contains(device)) {
            return rejected("unknown_device", "device " + PyFormat.repr(device) + " is not registered");
        }
        Object value = TelemetryValidator.decodeValue(payload);
        if (value instanceof TelemetryValidator.Rejected bad) {
            return bad;
        }
        Map<String, Object> obj = new LinkedHashMap<>();
        obj.put(channel, value == TelemetryValidator.NULL_VALUE ? null : value);
        Object channels = channels(obj);
        if (channels instanceof TelemetryValidator.Rejected bad) {
            return bad;
        }
        long ms = (long) Math.rint(arrived * 1000);
        long seq = arrivalSeq != null ? arrivalSeq.next(device, ms) : ms;
        if (held != null) {
            channels = held.merge(device, arrived, (Map<String, Double>) channels);
            if (channels instanceof TelemetryValidator.Rejected bad) {
                return bad;
            }
        }
        return record(device, arrived, seq, (Map<String, Double>) channels);
    }

    /** The raw record Python's {@code Reading.to_json} writes: device_id, ts, seq, then the channels in order. */
    static TelemetryValidator.Accepted record(String device, double ts, Object seq, Map<String, Double> channels) {
        StringBuilder out = new StringBuilder(256).append("{\"device_id\":");
        PyFormat.appendJsonString(out, device);
        out.append(",\"ts\":");
        PyFormat.appendFloat(out, ts);
        out.append(",\"seq\":").append(seq);
        for (Map.Entry<String, Double> c : channels.entrySet()) {
            out.append(',');
            PyFormat.appendJsonString(out, c.getKey());
            out.append(':');
            PyFormat.appendFloat(out, c.getValue());
        }
        return new TelemetryValidator.Accepted(device, out.append('}').toString().getBytes(StandardCharsets.US_ASCII));
    }

    private static TelemetryValidator.Rejected rejected(String reason, String detail) {
        return new TelemetryValidator.Rejected(reason, detail);
    }

    /** {value} at the dotted path, or null when a key on the way is missing or not an object. */
    @SuppressWarnings("unchecked")
    private static Object[] path(Map<String, Object> obj, String path) {
        Object node = obj;
        for (String key : path.split("\\.", -1)) {
            if (!(node instanceof Map<?, ?> m) || !m.containsKey(key)) {
                return null;
            }
            node = ((Map<String, Object>) m).get(key);
        }
        return new Object[]{node};
    }

    /** Epoch seconds (a Double), or a rejection. */
    private Object timestamp(Object value) {
        if (tsFormat.equals("iso8601")) {
            if (!(value instanceof String text)) {
                return rejected("wrong_type", tsPath + " must be an ISO 8601 string");
            }
            Double when = iso8601(text, tsZone);
            if (when == null) {
                String head = text.codePointCount(0, text.length()) > 40 ? text.substring(0, text.offsetByCodePoints(0, 40))
                        : text;
                return rejected("wrong_type", tsPath + " " + PyFormat.repr(head) + " is not ISO 8601");
            }
            return when;
        }
        if (!TelemetryValidator.isNumber(value)) {
            return rejected("wrong_type", tsPath + " must be a number (epoch " + tsFormat + ")");
        }
        double ts = TelemetryValidator.asDouble(value);
        if (!Double.isFinite(ts)) {
            return rejected("non_finite", tsPath + " is not finite");
        }
        return tsFormat.equals("ms") ? ts / 1000.0 : ts;
    }

    /** datetime.fromisoformat(text), in {@code zone} when it names none, as epoch seconds; null when not ISO 8601. */
    static Double iso8601(String text, ZoneId zone) {
        Matcher m = ISO.matcher(text);
        if (!m.matches()) {
            return null;
        }
        try {
            int micros = 0;
            if (m.group(8) != null) {
                micros = Integer.parseInt((m.group(8) + "00000").substring(0, 6));  // more digits are cut, as Python does
            }
            LocalDateTime local = LocalDateTime.of(Integer.parseInt(m.group(1)), Integer.parseInt(m.group(3)),
                    Integer.parseInt(m.group(4)), m.group(5) == null ? 0 : Integer.parseInt(m.group(5)),
                    m.group(6) == null ? 0 : Integer.parseInt(m.group(6)),
                    m.group(7) == null ? 0 : Integer.parseInt(m.group(7)), micros * 1000);
            String z = m.group(9);
            long epochS;
            if (z == null) {
                epochS = ZonedDateTime.ofLocal(local, zone, null).toEpochSecond();  // fold=0: the earlier offset
            } else if (z.equals("Z")) {
                epochS = local.toEpochSecond(ZoneOffset.UTC);
            } else {
                String[] whole = z.substring(1).replace(":", "").split("\\.");
                String digits = whole[0];
                long offsetMicros = (Integer.parseInt(digits.substring(0, 2)) * 3600L
                        + (digits.length() >= 4 ? Integer.parseInt(digits.substring(2, 4)) * 60L : 0)
                        + (digits.length() >= 6 ? Integer.parseInt(digits.substring(4, 6)) : 0)) * 1_000_000L
                        + (whole.length > 1 ? Integer.parseInt((whole[1] + "00000").substring(0, 6)) : 0);
                if (offsetMicros >= 86_400_000_000L) {
                    return null;
                }
                long total = local.toEpochSecond(ZoneOffset.UTC) * 1_000_000L + micros
                        - (z.charAt(0) == '-' ? -offsetMicros : offsetMicros);
                return (double) total / 1e6;
            }
            // timedelta.total_seconds(): whole microseconds / 10**6, one correctly rounded division.
            return (double) (epochS * 1_000_000L + micros) / 1e6;
        } catch (DateTimeException | NumberFormatException e) {
            return null;
        }
    }

    private static void flatten(Map<String, Object> node, List<String> prefix, List<Map.Entry<List<String>, Object>> out,
                                int depth) {
        for (Map.Entry<String, Object> e : node.entrySet()) {
            List<String> path = new ArrayList<>(prefix.size() + 1);
            path.addAll(prefix);
            path.add(e.getKey());
            if (e.getValue() instanceof Map<?, ?> child && depth < 8) {
                @SuppressWarnings("unchecked") Map<String, Object> c = (Map<String, Object>) child;
                flatten(c, path, out, depth + 1);
            } else {
                out.add(Map.entry(path, e.getValue() == null ? NULL : e.getValue()));
            }
        }
    }

    /** Map.entry takes no null value: JSON null among the leaves. */
    private static final Object NULL = new Object();

    /** The channels (name to value, in the payload's order), or why the payload is refused. */
    @SuppressWarnings("unchecked")
    private Object channels(Map<String, Object> obj) {
        Object root = obj;
        List<String> prefix = List.of();
        if (channelsRoot != null) {
            Object[] found = path(obj, channelsRoot);
            if (found == null || !(found[0] instanceof Map)) {
                return rejected("missing_field", "required object " + PyFormat.repr(channelsRoot) + " is missing");
            }
            root = found[0];
            prefix = List.of(channelsRoot.split("\\.", -1));
        }
        List<Map.Entry<List<String>, Object>> leaves = new ArrayList<>();
        flatten((Map<String, Object>) root, prefix, leaves, 0);
        Map<String, Double> channels = new LinkedHashMap<>();
        for (Map.Entry<List<String>, Object> leaf : leaves) {
            List<String> path = leaf.getKey();
            if (consumed.contains(path)) {
                continue;
            }
            String flat = String.join(separator, path.subList(prefix.size(), path.size()));
            String channel = channelName(flat);
            if (channel == null) {
                continue;
            }
            Object value = leaf.getValue() == NULL ? null : leaf.getValue();
            if (value instanceof Boolean b) {
                if (skipBooleans) {
                    continue;
                }
                value = b ? 1L : 0L;
            }
            if (!TelemetryValidator.isNumber(value)) {
                if (!refuseNonNumeric) {
                    continue;
                }
                return rejected("wrong_type", "channel " + PyFormat.repr(flat) + " must be a number, got "
                        + PyFormat.typeName(value));
            }
            double d = TelemetryValidator.asDouble(value);
            if (!Double.isFinite(d)) {
                return rejected("non_finite", "channel " + PyFormat.repr(flat) + " is not finite");
            }
            if (TelemetryValidator.RESERVED.contains(channel)) {
                return rejected("wrong_type", "channel " + PyFormat.repr(flat) + " would be named "
                        + PyFormat.repr(channel) + ", a reserved field: rename it");
            }
            channels.put(channel, d);
        }
        if (channels.isEmpty()) {
            return rejected("missing_field", "no numeric channel in the payload");
        }
        if (channels.size() > TelemetryValidator.MAX_CHANNELS) {
            return rejected("too_many_fields", channels.size() + " channels > limit " + TelemetryValidator.MAX_CHANNELS);
        }
        return channels;
    }
}
