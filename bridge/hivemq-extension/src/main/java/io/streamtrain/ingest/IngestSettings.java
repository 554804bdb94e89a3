package io.streamtrain.ingest;

import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * Settings of the extension: {@code streamtrain-ingest.properties} in the extension's folder, each key
 * overridable by an environment variable STREAMTRAIN_INGEST_&lt;KEY&gt; (upper case, dots as underscores),
 * e.g. STREAMTRAIN_INGEST_KAFKA_BOOTSTRAP. Keys starting with {@code producer.} go to the Kafka producer
 * as they are (security settings: producer.security.protocol, producer.sasl.jaas.config, ...).
 *
 * <p>How devices publish, with the bridge's variables and meaning (one variable means one thing everywhere):
 * {@code mapping} (STREAMTRAIN_INGEST_MAPPING) a preset of ingest-presets.json (generated from the bridge's
 * PRESETS) or the path of a JSON mapping file (a mapping, or {@code "preset"} plus the fields it overrides; JSON
 * is YAML, so the bridge reads the same file), default {@code streamtrain}; {@code topics}
 * (STREAMTRAIN_INGEST_TOPICS) topic patterns, comma-separated, instead of the mapping's.
 */
record IngestSettings(
        String kafkaBootstrap,
        String topicRaw,
        String topicDeadletter,
        int maxPayloadBytes,
        Set<String> knownDevices,
        int metricsPort,
        String metricsHost,
        int maxInflight,
        boolean deliverToSubscribers,
        int publishTimeoutS,
        String ackMode,
        double sparkplugRebirthIntervalS,
        IngestMapping mapping,
        Properties producer) {

    static final String FILE = "streamtrain-ingest.properties";
    static final String ENV_PREFIX = "STREAMTRAIN_INGEST_";

    static List<String> topics(String commaSeparated) {
        return Arrays.stream(commaSeparated.split(",")).map(String::strip).filter(t -> !t.isEmpty()).toList();
    }

    static String ackMode(String mode) {
        if (!mode.equals("puback") && !mode.equals("async")) {
            throw new IllegalArgumentException("ack.mode must be puback or async, not " + mode);
        }
        return mode;
    }

    /**
     * Whether this broker is configured to ingest: a settings file beside the jar, or the Kafka
     * bootstrap in the environment. An image may carry the extension for brokers that do not ingest.
     */
    static boolean configured(Path folder, Map<String, String> env) {
        return Files.exists(folder.resolve(FILE)) || env.containsKey(ENV_PREFIX + "KAFKA_BOOTSTRAP");
    }

    static IngestSettings load(Path folder, Map<String, String> env) throws IOException {
        Properties p = new Properties();
        Path file = folder.resolve(FILE);
        if (Files.exists(file)) {
            try (Reader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
                p.load(r);
            }
        }
        for (Map.Entry<String, String> e : env.entrySet()) {
            if (e.getKey().startsWith(ENV_PREFIX)) {
                p.setProperty(e.getKey().substring(ENV_PREFIX.length()).toLowerCase(Locale.ROOT).replace('_', '.'),
                        e.getValue());
            }
        }
        Properties producer = new Properties();
        for (String key : p.stringPropertyNames()) {
            if (key.startsWith("producer.")) {
                producer.setProperty(key.substring("producer.".length()), p.getProperty(key));
            }
        }
        String known = p.getProperty("known.devices", "").strip();
        return new IngestSettings(
                p.getProperty("kafka.bootstrap", "127.0.0.1:9092"),
                p.getProperty("topic.raw", "streamtrain.telemetry.raw"),
                p.getProperty("topic.deadletter", "streamtrain.deadletter"),
                Integer.parseInt(p.getProperty("max.payload.bytes", String.valueOf(TelemetryValidator.MAX_PAYLOAD_BYTES))),
                known.isEmpty() ? null : Arrays.stream(known.split(",")).map(String::strip).collect(Collectors.toSet()),
                Integer.parseInt(p.getProperty("metrics.port", "0")),
                p.getProperty("metrics.host", "127.0.0.1"),
                Integer.parseInt(p.getProperty("max.inflight", "20000")),
                Boolean.parseBoolean(p.getProperty("deliver.to.subscribers", "false")),
                Integer.parseInt(p.getProperty("publish.timeout.s", "60")),
                ackMode(p.getProperty("ack.mode", "puback")),
                Double.parseDouble(p.getProperty("sparkplug.rebirth.interval.s", "30")),
                IngestMapping.load(p.getProperty("mapping", "streamtrain").strip(), topics(p.getProperty("topics", ""))),
                producer);
    }
}
