// Starts HiveMQ CE (embedded edition) with the given config/data/extensions folders
// and stops it cleanly on SIGTERM. Run without a build (the local stack; needs a JDK's jdk.compiler):
//   java -cp "<jars>/*" HiveMQLauncher.java CONF DATA EXT [USERS_FILE]
// or compiled (images/hivemq.Dockerfile): java -cp "<classes>:<jars>/*" HiveMQLauncher CONF DATA EXT [USERS_FILE]
// With USERS_FILE, an embedded extension authenticates every client against it and authorizes
// what each may do: a device publishes only to devices/<its user name>/telemetry and subscribes
// to nothing; a bridge subscribes to device telemetry and publishes nothing. Refusals are logged
// as JSON lines with running counts.
//
// USERS_FILE: one "user:role:pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>" per line (role
// device or bridge; '#' starts a comment), written by `streamtrain stack passwd`.
import com.hivemq.embedded.EmbeddedExtension;
import com.hivemq.embedded.EmbeddedHiveMQ;
import com.hivemq.embedded.EmbeddedHiveMQBuilder;
import com.hivemq.extension.sdk.api.ExtensionMain;
import com.hivemq.extension.sdk.api.auth.PublishAuthorizer;
import com.hivemq.extension.sdk.api.auth.SimpleAuthenticator;
import com.hivemq.extension.sdk.api.auth.SubscriptionAuthorizer;
import com.hivemq.extension.sdk.api.auth.parameter.PublishAuthorizerInput;
import com.hivemq.extension.sdk.api.auth.parameter.PublishAuthorizerOutput;
import com.hivemq.extension.sdk.api.auth.parameter.SimpleAuthInput;
import com.hivemq.extension.sdk.api.auth.parameter.SimpleAuthOutput;
import com.hivemq.extension.sdk.api.auth.parameter.SubscriptionAuthorizerInput;
import com.hivemq.extension.sdk.api.auth.parameter.SubscriptionAuthorizerOutput;
import com.hivemq.extension.sdk.api.packets.connect.ConnackReasonCode;
import com.hivemq.extension.sdk.api.packets.publish.AckReasonCode;
import com.hivemq.extension.sdk.api.packets.subscribe.SubackReasonCode;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartOutput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopOutput;
import com.hivemq.extension.sdk.api.services.Services;

import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Pattern;

public class HiveMQLauncher {
    public static void main(String[] args) throws Exception {
        String usage = "usage: HiveMQLauncher <config-folder> <data-folder> <extensions-folder> [users-file]\n"
                + "Starts HiveMQ CE with the config.xml of <config-folder>; with [users-file] (`streamtrain stack passwd`)\n"
                + "every client must authenticate and devices publish only to devices/<user>/telemetry. SIGTERM stops it.";
        if (Arrays.asList(args).contains("--help")) {
            System.out.println(usage);
            return;
        }
        if (args.length != 3 && args.length != 4) {
            System.err.println(usage);
            System.exit(2);
        }
        String refused = refusedWrite(Path.of(args[1]));
        if (refused != null) {  // HiveMQ would fail later with a stack trace (AccessDeniedException data.lock)
            log("hivemq_data_folder_not_writable", "folder", args[1], "user", System.getProperty("user.name"),
                    "error", refused, "fix", "mount a folder this user can write there (Kubernetes: an emptyDir; "
                            + "podman: --tmpfs " + args[1] + " or a volume)");
            System.exit(2);
        }
        EmbeddedHiveMQBuilder builder = EmbeddedHiveMQ.builder()
                .withConfigurationFolder(Path.of(args[0]))
                .withDataFolder(Path.of(args[1]))
                .withExtensionsFolder(Path.of(args[2]));
        if (args.length == 4) {
            Map<String, User> users = User.load(Path.of(args[3]));
            log("mqtt_auth_enabled", "users", String.valueOf(users.size()), "file", args[3]);
            builder.withEmbeddedExtension(EmbeddedExtension.builder()
                    .withId("streamtrain-auth").withName("StreamTrain authentication and authorization")
                    .withVersion("1").withAuthor("StreamTrain").withPriority(1000).withStartPriority(1000)
                    .withExtensionMain(new AuthExtension(users)).build());
        }
        EmbeddedHiveMQ hivemq = builder.build();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("{\"event\":\"hivemq_stopping\"}");
            try {
                hivemq.stop().get(30, TimeUnit.SECONDS);
                hivemq.close();
            } catch (Exception e) {
                System.err.println("{\"event\":\"hivemq_stop_failed\",\"error\":\"" + e + "\"}");
            }
            stopped.countDown();
        }));
        hivemq.start().join();
        System.out.println("{\"event\":\"hivemq_started\"}");
        BrokerMetrics.serve(hivemq.getMetricRegistry(), System.getenv());
        stopped.await();
    }

    /**
     * The broker's own counters in Prometheus text on /metrics, when STREAMTRAIN_BROKER_METRICS_PORT is set
     * (host: STREAMTRAIN_BROKER_METRICS_HOST, default 0.0.0.0): messages HiveMQ dropped (a client's queue
     * full, a packet above a client's maximum, ...; HiveMQ counts no reason, its event log names it),
     * publishes received and sent, and the open connections. A drop is a message accepted from a device that reaches no subscriber
     * (the bridge): the alert StreamTrainBrokerDroppedMessages fires on any.
     */
    static final class BrokerMetrics {
        static final String DROPPED = "com.hivemq.messages.dropped.count";

        static void serve(com.codahale.metrics.MetricRegistry registry, Map<String, String> env) throws java.io.IOException {
            String port = env.getOrDefault("STREAMTRAIN_BROKER_METRICS_PORT", "0");
            if (port.isBlank() || port.equals("0")) {
                return;
            }
            String host = env.getOrDefault("STREAMTRAIN_BROKER_METRICS_HOST", "0.0.0.0");
            com.sun.net.httpserver.HttpServer server =
                    com.sun.net.httpserver.HttpServer.create(new java.net.InetSocketAddress(host, Integer.parseInt(port)), 0);
            server.createContext("/metrics", exchange -> {
                byte[] body = text(registry).getBytes(StandardCharsets.UTF_8);
                exchange.getResponseHeaders().set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
                exchange.sendResponseHeaders(200, body.length);
                try (var out = exchange.getResponseBody()) {
                    out.write(body);
                }
            });
            server.setExecutor(null);
            server.start();
            log("broker_metrics_serving", "host", host, "port", port);
        }

        static long count(com.codahale.metrics.MetricRegistry registry, String name) {
            com.codahale.metrics.Counter c = registry.getCounters().get(name);
            return c == null ? 0 : c.getCount();
        }

        static String text(com.codahale.metrics.MetricRegistry registry) {
            StringBuilder sb = new StringBuilder();
            metric(sb, "streamtrain_broker_messages_dropped_total", "counter",
                    "Messages HiveMQ dropped instead of delivering (every reason)", count(registry, DROPPED));
            metric(sb, "streamtrain_broker_publishes_received_total", "counter", "PUBLISH packets clients sent the broker",
                    count(registry, "com.hivemq.messages.incoming.publish.count"));
            metric(sb, "streamtrain_broker_publishes_sent_total", "counter", "PUBLISH packets the broker sent subscribers",
                    count(registry, "com.hivemq.messages.outgoing.publish.count"));
            com.codahale.metrics.Gauge<?> connections = registry.getGauges().get("com.hivemq.networking.connections.current");
            Object open = connections == null ? null : connections.getValue();
            metric(sb, "streamtrain_broker_connections", "gauge", "Open MQTT connections",
                    open instanceof Number n ? n.longValue() : 0);
            return sb.toString();
        }

        static void metric(StringBuilder sb, String name, String type, String help, long value) {
            sb.append("# HELP ").append(name).append(' ').append(help).append('\n')
                    .append("# TYPE ").append(name).append(' ').append(type).append('\n')
                    .append(name).append(' ').append(value).append('\n');
        }
    }

    /** Why this user cannot create files in the data folder (HiveMQ locks data.lock there), or null. */
    static String refusedWrite(Path folder) {
        try {
            Files.createDirectories(folder);
            Files.delete(Files.createTempFile(folder, ".write-check", ".tmp"));
            return null;
        } catch (Exception e) {
            String state = "";
            try {
                state = " (owner " + Files.getOwner(folder).getName() + ", mode "
                        + PosixFilePermissions.toString(Files.getPosixFilePermissions(folder)) + ")";
            } catch (Exception ignored) {
                // the folder may not exist at all: the error says so
            }
            return e + state;
        }
    }

    /** One JSON line on stdout (the broker's log file): event, then key/value pairs. */
    static void log(String event, String... kv) {
        StringBuilder sb = new StringBuilder("{\"event\":\"").append(event).append('"');
        for (int i = 0; i + 1 < kv.length; i += 2) {
            sb.append(",\"").append(kv[i]).append("\":\"").append(escape(kv[i + 1])).append('"');
        }
        System.out.println(sb.append('}'));
    }

    static String escape(String s) {
        StringBuilder sb = new StringBuilder();
        for (char c : (s == null ? "" : s).toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.toString();
    }

    /** A credential: role plus a PBKDF2-SHA256 hash of the password (never the password). */
    record User(String name, String role, int iterations, byte[] salt, byte[] hash) {
        static final Set<String> ROLES = Set.of("device", "bridge");
        static final Pattern NAME = Pattern.compile("^[A-Za-z0-9_.:-]{1,64}$");

        static Map<String, User> load(Path file) throws Exception {
            Map<String, User> users = new HashMap<>();
            int lineNo = 0;
            for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                lineNo++;
                line = line.strip();
                if (line.isEmpty() || line.startsWith("#")) continue;
                String[] f = line.split(":", 3);
                String[] h = f.length == 3 ? f[2].split("\\$") : new String[0];
                if (f.length != 3 || !NAME.matcher(f[0]).matches() || !ROLES.contains(f[1]) || h.length != 4
                        || !h[0].equals("pbkdf2_sha256")) {
                    throw new IllegalArgumentException(file + ":" + lineNo + ": expected user:role:pbkdf2_sha256$n$salt$hash");
                }
                Base64.Decoder b64 = Base64.getDecoder();
                users.put(f[0], new User(f[0], f[1], Integer.parseInt(h[1]), b64.decode(h[2]), b64.decode(h[3])));
            }
            return users;
        }

        boolean verify(byte[] password) throws Exception {
            char[] chars = StandardCharsets.UTF_8.decode(ByteBuffer.wrap(password)).array();
            PBEKeySpec spec = new PBEKeySpec(chars, salt, iterations, hash.length * 8);
            byte[] got = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(spec).getEncoded();
            return MessageDigest.isEqual(got, hash);
        }
    }

    static class AuthExtension implements ExtensionMain {
        final Map<String, User> users;
        final AtomicLong refusedConnects = new AtomicLong();
        final AtomicLong refusedPublishes = new AtomicLong();
        final AtomicLong refusedSubscribes = new AtomicLong();
        // Password checks are deliberately slow (PBKDF2); a reconnect with the same password is not.
        final Set<String> verified = ConcurrentHashMap.newKeySet();

        AuthExtension(Map<String, User> users) {
            this.users = users;
        }

        @Override
        public void extensionStart(ExtensionStartInput in, ExtensionStartOutput out) {
            Services.securityRegistry().setAuthenticatorProvider(input -> (SimpleAuthenticator) this::authenticate);
            Services.securityRegistry().setAuthorizerProvider(input -> new Authorizer());
        }

        @Override
        public void extensionStop(ExtensionStopInput in, ExtensionStopOutput out) {
        }

        void authenticate(SimpleAuthInput input, SimpleAuthOutput output) {
            String clientId = input.getClientInformation().getClientId();
            String name = input.getConnectPacket().getUserName().orElse(null);
            byte[] password = input.getConnectPacket().getPassword().map(b -> {
                byte[] bytes = new byte[b.remaining()];
                b.duplicate().get(bytes);
                return bytes;
            }).orElse(null);
            User user = name == null ? null : users.get(name);
            String why = null;
            try {
                if (name == null || password == null) why = "no credentials";
                else if (user == null) why = "unknown user";
                else {
                    String key = name + ":" + Base64.getEncoder().encodeToString(
                            MessageDigest.getInstance("SHA-256").digest(password));
                    if (!verified.contains(key)) {
                        if (!user.verify(password)) why = "wrong password";
                        else verified.add(key);
                    }
                }
            } catch (Exception e) {
                why = "verification failed: " + e;
            }
            if (why != null) {
                long n = refusedConnects.incrementAndGet();
                log("mqtt_auth_refused", "client_id", clientId, "username", name, "reason", why,
                        "refused_connects_total", String.valueOf(n));
                output.failAuthentication(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD, "authentication failed");
                return;
            }
            input.getConnectionInformation().getConnectionAttributeStore().putAsString("streamtrain.user", user.name());
            input.getConnectionInformation().getConnectionAttributeStore().putAsString("streamtrain.role", user.role());
            output.authenticateSuccessfully();
        }

        class Authorizer implements PublishAuthorizer, SubscriptionAuthorizer {
            @Override
            public void authorizePublish(PublishAuthorizerInput input, PublishAuthorizerOutput output) {
                var attrs = input.getConnectionInformation().getConnectionAttributeStore();
                String user = attrs.getAsString("streamtrain.user").orElse("");
                String role = attrs.getAsString("streamtrain.role").orElse("");
                String topic = input.getPublishPacket().getTopic();
                if (role.equals("device") && topic.equals("devices/" + user + "/telemetry")) {
                    output.authorizeSuccessfully();
                    return;
                }
                long n = refusedPublishes.incrementAndGet();
                log("mqtt_publish_refused", "client_id", input.getClientInformation().getClientId(), "username", user,
                        "role", role, "topic", topic, "refused_publishes_total", String.valueOf(n));
                // MQTT 5: a PUBACK with "not authorized"; MQTT 3.1.1 has no such code, the client is disconnected.
                output.failAuthorization(AckReasonCode.NOT_AUTHORIZED, "devices publish only to their own topic");
            }

            @Override
            public void authorizeSubscribe(SubscriptionAuthorizerInput input, SubscriptionAuthorizerOutput output) {
                var attrs = input.getConnectionInformation().getConnectionAttributeStore();
                String role = attrs.getAsString("streamtrain.role").orElse("");
                String filter = input.getSubscription().getTopicFilter();
                String plain = filter.startsWith("$share/") ? filter.substring(filter.indexOf('/', 7) + 1) : filter;
                if (role.equals("bridge") && plain.startsWith("devices/")) {
                    output.authorizeSuccessfully();
                    return;
                }
                long n = refusedSubscribes.incrementAndGet();
                log("mqtt_subscribe_refused", "client_id", input.getClientInformation().getClientId(),
                        "username", attrs.getAsString("streamtrain.user").orElse(""), "role", role, "filter", filter,
                        "refused_subscribes_total", String.valueOf(n));
                output.failAuthorization(SubackReasonCode.NOT_AUTHORIZED, "only bridges subscribe to device telemetry");
            }
        }
    }
}
