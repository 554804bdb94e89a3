package streamtrain.scorer;

import java.io.IOException;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The Python scorer's settings (env prefix STREAMTRAIN_, same names and defaults), so one
 * environment runs either engine.
 */
record Settings(
        String kafkaBootstrap,
        String topicFeatures,
        String topicScores,
        String topicModels,
        String topicDeadletter,
        String groupId,
        String instanceId,
        boolean challenger,
        long promoteAfter,
        double promoteMinAgreement,
        double modelWaitS,
        int metricsPort,
        String logLevel,
        String guarantee,
        long transactionIntervalMs,
        long transactionTimeoutMs,
        String startAt,
        boolean startAtOnce,
        Map<String, String> kafkaSecurity,
        ModelTrust modelTrust) {

    static Settings fromEnv(Map<String, String> env) {
        return new Settings(
                get(env, "KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                get(env, "TOPIC_FEATURES", "streamtrain.telemetry.features"),
                get(env, "TOPIC_SCORES", "streamtrain.scores"),
                get(env, "TOPIC_MODELS", "streamtrain.models"),
                get(env, "TOPIC_DEADLETTER", "streamtrain.deadletter"),
                get(env, "GROUP_ID", "streamtrain-scorer"),
                get(env, "INSTANCE_ID", hostname()),
                bool(get(env, "CHALLENGER", "false")),
                Long.parseLong(get(env, "PROMOTE_AFTER", "0")),
                Double.parseDouble(get(env, "PROMOTE_MIN_AGREEMENT", "0.95")),
                Double.parseDouble(get(env, "MODEL_WAIT_S", "0")),
                Integer.parseInt(get(env, "METRICS_PORT", "0")),
                get(env, "LOG_LEVEL", "INFO"),
                oneOf(get(env, "GUARANTEE", "exactly_once"), "exactly_once", "at_least_once"),
                Long.parseLong(get(env, "TRANSACTION_INTERVAL_MS", "100")),
                Long.parseLong(get(env, "TRANSACTION_TIMEOUT_MS", "30000")),
                oneOf(get(env, "START_AT", "committed"), "committed", "earliest", "latest"),
                bool(get(env, "START_AT_ONCE", "false")),
                kafkaSecurity(env),
                ModelTrust.fromSettings(get(env, "MODEL_VERIFY_KEYS", ""),
                        get(env, "MODEL_MAX_VERSION", String.valueOf(ModelTrust.DEFAULT_MAX_VERSION))));
    }

    /**
     * Client security from the same STREAMTRAIN_KAFKA_* variables as the Python programs
     * (streamtrain/kafka.py KafkaSecurity): SASL/SCRAM with the password read from a file (a mounted
     * Secret), TLS trusting a PEM CA file. Applied to every client Streams and the model watcher make.
     */
    static Map<String, String> kafkaSecurity(Map<String, String> env) {
        String protocol = oneOf(get(env, "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
                "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL");
        Map<String, String> out = new LinkedHashMap<>();
        out.put("security.protocol", protocol);
        if (protocol.startsWith("SASL")) {
            String mechanism = oneOf(get(env, "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"), "SCRAM-SHA-512", "SCRAM-SHA-256");
            String user = get(env, "KAFKA_USERNAME", "");
            String passwordFile = get(env, "KAFKA_PASSWORD_FILE", "");
            if (user.isEmpty() || passwordFile.isEmpty()) {
                throw new IllegalArgumentException("STREAMTRAIN_KAFKA_SECURITY_PROTOCOL=" + protocol
                        + " needs STREAMTRAIN_KAFKA_USERNAME and STREAMTRAIN_KAFKA_PASSWORD_FILE");
            }
            String password;
            try {
                password = Files.readString(Path.of(passwordFile)).strip();
            } catch (IOException e) {
                throw new IllegalArgumentException("Kafka password file " + passwordFile + " cannot be read: " + e);
            }
            out.put("sasl.mechanism", mechanism);
            out.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
                    + jaasQuote(user) + "\" password=\"" + jaasQuote(password) + "\";");
        }
        String ca = get(env, "KAFKA_CA_FILE", "");
        if (protocol.endsWith("SSL") && !ca.isEmpty()) {
            if (!Files.isRegularFile(Path.of(ca))) {
                throw new IllegalArgumentException("Kafka CA file " + ca + " does not exist or is not a file");
            }
            out.put("ssl.truststore.type", "PEM");
            out.put("ssl.truststore.location", ca);
        }
        return out;
    }

    private static String jaasQuote(String v) {
        return v.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    boolean exactlyOnce() {
        return guarantee.equals("exactly_once");
    }

    private static String oneOf(String v, String... allowed) {
        for (String a : allowed) {
            if (a.equals(v)) {
                return v;
            }
        }
        throw new IllegalArgumentException("must be one of " + String.join(", ", allowed) + ": " + v);
    }

    private static String get(Map<String, String> env, String name, String fallback) {
        String v = env.get("STREAMTRAIN_" + name);
        return v == null || v.isBlank() ? fallback : v.trim();
    }

    private static boolean bool(String v) {
        return switch (v.toLowerCase()) {
            case "1", "true", "yes", "on" -> true;
            case "0", "false", "no", "off" -> false;
            default -> throw new IllegalArgumentException("not a boolean: " + v);
        };
    }

    private static String hostname() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (Exception e) {
            return "kafka-streams-scorer";
        }
    }
}
