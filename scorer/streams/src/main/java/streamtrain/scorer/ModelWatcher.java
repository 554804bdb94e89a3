package streamtrain.scorer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Consumer;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Tails the compacted models topic (one partition, from the start, no consumer group) like
 * scorer/models.py ModelWatcher: assembles versions, loads and warms each fully, then offers
 * it. At start only the newest loadable version of the backlog is loaded. Promotion and pin requests
 * arrive as control records; every assembled version is kept so that a pin can load an older one.
 */
final class ModelWatcher extends Thread {
    private static final Log LOG = new Log("scorer.models");
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Settings settings;
    private final ModelRegistry registry;
    private final Consumer<String> onRefused;
    private final ModelAssembler assembler;
    /** Versions read before the watcher caught up with the topic's end: only the newest loadable is loaded. */
    private final List<ModelAssembler.Version> backlog = new ArrayList<>();
    private volatile boolean stopping;
    private volatile boolean caughtUp;
    /** The version the newest promotion request names (a promotion outlives restarts). */
    private Integer promoted;
    /** The version the newest pin request names; null when none or unpinned (a pin outlives restarts). */
    private Integer pinned;
    /** Every version assembled and not deleted since. */
    private final Map<Integer, ModelAssembler.Version> available = new TreeMap<>();
    /** Versions that failed to load: a pin cannot name them. */
    private final Set<Integer> refusedVersions = new HashSet<>();
    volatile Exception error;

    ModelWatcher(Settings settings, ModelRegistry registry, Consumer<String> onRefused) {
        super("model-watcher");
        setDaemon(true);
        this.settings = settings;
        this.registry = registry;
        this.onRefused = onRefused;
        this.assembler = new ModelAssembler(settings.modelTrust());
    }

    boolean caughtUp() {
        return caughtUp;
    }

    void shutdown() {
        stopping = true;
    }

    @Override
    public void run() {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, settings.kafkaBootstrap());
        p.putAll(settings.kafkaSecurity());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, String.valueOf(4 * 1024 * 1024));
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, settings.instanceId() + "-model-watcher");
        try (KafkaConsumer<byte[], byte[]> consumer =
                     new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            TopicPartition tp = new TopicPartition(settings.topicModels(), 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long end = consumer.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp);
            if (end == 0) {
                catchUp();
            }
            while (!stopping) {
                for (ConsumerRecord<byte[], byte[]> rec : consumer.poll(Duration.ofMillis(200))) {
                    Header signature = rec.headers().lastHeader(ModelTrust.SIGNATURE_HEADER);
                    accept(rec.key(), rec.value(), signature == null ? null : signature.value());
                }
                if (!caughtUp && consumer.position(tp) >= end) {
                    catchUp();
                }
                serveFallbackIfAsked();
            }
        } catch (Exception e) {
            error = e;
            LOG.error("model_watcher_failed", "error", String.valueOf(e));
        }
    }

    void accept(byte[] key, byte[] value) {
        accept(key, value, null);
    }

    /** One record of the models topic, in topic order: a control request, or part of a model version. */
    void accept(byte[] key, byte[] value, byte[] signature) {
        String k = new String(key == null ? new byte[0] : key, StandardCharsets.UTF_8);
        if (k.startsWith("control/")) {
            control(k, value);
            return;
        }
        ModelAssembler.Version mv = null;
        try {
            mv = assembler.add(key, value, signature);
        } catch (ModelRejected e) {
            refuse(null, e.reason, e.detail);
        }
        if (mv == null) {
            if (value == null && k.endsWith("/manifest")) {
                // A deleted version (the trainer keeps the newest few): not worth holding until catch-up.
                backlog.removeIf(b -> k.equals("model/" + b.version() + "/manifest"));
                available.keySet().removeIf(v -> k.equals("model/" + v + "/manifest"));
            }
            return;
        }
        available.put(mv.version(), mv);
        if (!caughtUp) {
            backlog.add(mv);
            return;
        }
        OnnxModel model = load(mv);
        if (model != null && !registry.offer(model)) {
            model.close();
        }
    }

    /**
     * The backlog is read: load its newest loadable version; later versions load as they arrive. When the
     * newest is unhealthy, the newest healthy one before it serves and the unhealthy one is held, unless the
     * topic's promotion request names it.
     */
    void catchUp() {
        OnnxModel pinnedModel = pinned == null ? null : pinnedModel();
        if (pinnedModel != null) {
            registry.pin(pinnedModel);  // the pin outlives the restart; nothing else needs loading
            backlog.clear();
        }
        backlog.sort(Comparator.comparingInt(ModelAssembler.Version::version).reversed());
        OnnxModel newest = null;
        for (ModelAssembler.Version mv : backlog) {
            OnnxModel model = load(mv);
            if (model == null) {
                continue;
            }
            boolean asked = promoted != null && promoted == model.version;
            if (newest == null && model.unhealthy != null && !asked) {
                newest = model;  // offered after a healthy predecessor, if there is one
                continue;
            }
            if (!registry.offer(model, asked)) {
                model.close();
            }
            break;
        }
        if (newest != null && !registry.offer(newest)) {
            newest.close();
        }
        backlog.clear();
        caughtUp = true;
        int champion = registry.highestSeen();
        LOG.info("models_caught_up", "champion", champion == 0 ? null : champion);
    }

    private OnnxModel load(ModelAssembler.Version mv) {
        long t0 = System.nanoTime();
        OnnxModel model = null;
        try {
            model = OnnxModel.load(mv);
            model.unhealthy = ModelRegistry.unhealthyReason(mv.metadata());
            model.warm();
        } catch (ModelRejected e) {
            if (model != null) {  // refused at warm-up: its session goes
                model.close();
            }
            refusedVersions.add(mv.version());
            refuse(mv.version(), e.reason, e.detail);
            return null;
        } catch (Exception e) {
            if (model != null) {
                model.close();
            }
            refusedVersions.add(mv.version());
            refuse(mv.version(), "load_failed", String.valueOf(e));
            return null;
        }
        LOG.info("model_loaded", "version", model.version, "features", model.featureNames,
                "threshold", model.threshold, "load_ms", Math.round((System.nanoTime() - t0) / 1e5) / 10.0,
                "engine", "onnxruntime");
        return model;
    }

    private void refuse(Integer version, String reason, String detail) {
        LOG.error("model_refused", "version", version, "reason", reason, "detail", detail);
        onRefused.accept(reason);
    }

    /** A promotion or pin request (streamtrain/modelcontrol.py); before catch-up only the newest of each counts. */
    private void control(String key, byte[] value) {
        Integer version;
        try {
            JsonNode body = JSON.readTree(value == null ? "{}".getBytes(StandardCharsets.UTF_8) : value);
            JsonNode v = body == null || !body.isObject() ? null : body.get("version");
            if (v == null) {
                throw new IllegalArgumentException("no 'version'");
            }
            if (v.isNull() && key.equals("control/pin")) {
                version = null;  // unpin
            } else if (v.isIntegralNumber() && v.canConvertToInt() && v.asInt() >= 1) {
                version = v.asInt();
            } else {
                throw new IllegalArgumentException("version " + v + " is not a positive integer");
            }
        } catch (Exception e) {
            refuse(null, "bad_control", key + ": " + e.getMessage());
            return;
        }
        if (key.equals("control/promote")) {
            promoted = version;
            if (caughtUp) {
                LOG.info("promotion_requested", "version", version);
                registry.requestPromotion(version);
            }
        } else if (key.equals("control/pin")) {
            pinned = version;
            if (!caughtUp) {
                return;
            }
            if (version != null) {
                LOG.info("pin_requested", "version", version);
                OnnxModel model = pinnedModel();
                if (model != null) {
                    registry.pin(model);
                }
            } else {
                LOG.info("unpin_requested");
                unpin();
            }
        }
    }

    /** {version: healthy} of the versions this watcher could serve (the rule's input). */
    Map<Integer, Boolean> healthy() {
        Map<Integer, Boolean> out = new TreeMap<>();
        for (ModelAssembler.Version mv : available.values()) {
            if (!refusedVersions.contains(mv.version()) && !registry.isBad(mv.version())) {
                out.put(mv.version(), ModelRegistry.unhealthyReason(mv.metadata()) == null);
            }
        }
        return out;
    }

    /**
     * The pinned version loaded and warmed; null (refused, logged, counted) when it is not on the topic or
     * cannot be served: the scorer keeps serving what it served.
     */
    private OnnxModel pinnedModel() {
        Integer version = pinned;
        ModelAssembler.Version mv = available.get(version);
        if (registry.isBad(version)) {
            refuse(version, "pin_refused", "version " + version + " failed on live input after warm-up");
            return null;
        }
        if (mv == null || refusedVersions.contains(version)) {
            String why = refusedVersions.contains(version) ? "refused when it arrived" : "not on the topic";
            refuse(version, "pin_refused", "version " + version + " is " + why + " (versions: " + healthy().keySet() + ")");
            return null;
        }
        OnnxModel model = load(mv);
        if (model == null) {
            refuse(version, "pin_refused", "version " + version + " cannot be loaded");
        }
        return model;
    }

    /** After a champion failed with no previous one: load the version the rule names without the bad ones. */
    void serveFallbackIfAsked() {
        if (!caughtUp || !registry.takeFallbackRequest()) {
            return;
        }
        Integer target = ServingRule.servingVersion(healthy(), promoted, null);
        OnnxModel model = target == null ? null : load(available.get(target));
        if (model == null) {
            LOG.error("no_version_to_serve", "reason", "every version failed or was refused", "versions",
                    available.keySet());
            return;
        }
        registry.fallback(model);
    }

    /** Back to the rule: load the version it names unless it already serves. */
    private void unpin() {
        Integer target = ServingRule.servingVersion(healthy(), promoted, null);
        OnnxModel champion = registry.champion();
        if (target == null || (champion != null && champion.version == target)) {
            registry.unpin(null);
            return;
        }
        registry.unpin(load(available.get(target)));  // null when it failed to load (refused, counted)
    }
}
