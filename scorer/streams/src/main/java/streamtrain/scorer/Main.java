package streamtrain.scorer;

import java.nio.file.Files;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import sun.misc.Signal;

/**
 * The Kafka Streams scorer: features topic -> champion model (ONNX Runtime) -> scores topic,
 * exactly once (exactly_once_v2: scores, dead letters and input offsets commit in one
 * transaction). Models come from the models topic through {@link ModelWatcher} and switch
 * between batches (records are scored many per ONNX call, {@link ScoreProcessor}). Exit codes as
 * the Python scorer ({@link ExitCodes}): OK stopped by SIGTERM/SIGINT, CONFIG invalid settings,
 * NO_MODEL no model arrived within STREAMTRAIN_MODEL_WAIT_S, MODEL_WATCHER the model watcher or the
 * stream failed.
 */
public final class Main {
    private static final Log LOG = new Log("scorer");

    private Main() {}

    static Topology topology(Settings s, ModelRegistry registry, ScorerMetrics metrics) {
        return topology(s, registry, metrics, Batching.DEFAULT);
    }

    static Topology topology(Settings s, ModelRegistry registry, ScorerMetrics metrics, Batching batching) {
        Topology t = new Topology();
        t.addSource("features", Serdes.ByteArray().deserializer(), Serdes.ByteArray().deserializer(), s.topicFeatures());
        t.addProcessor("score", () -> new ScoreProcessor(s, registry, metrics, batching), "features");
        // Tells each processor "commit ahead": it forwards the records held for its next ONNX call first.
        t.addStateStore(FlushBeforeCommit.builder(), "score");
        t.addSink(ScoreProcessor.SCORES_SINK, s.topicScores(), Serdes.ByteArray().serializer(),
                Serdes.ByteArray().serializer(), new SameAsPythonPartitioner(), "score");
        t.addSink(ScoreProcessor.DEADLETTER_SINK, s.topicDeadletter(), Serdes.ByteArray().serializer(),
                Serdes.ByteArray().serializer(), new SameAsPythonPartitioner(), "score");
        return t;
    }

    static Properties streamsConfig(Settings s) throws Exception {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, s.groupId());
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, s.kafkaBootstrap());
        p.putAll(s.kafkaSecurity());
        // The Python scorer's guarantee setting: exactly_once (default) or at_least_once; its
        // transaction interval is how often Streams commits (one transaction per commit).
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                s.exactlyOnce() ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, String.valueOf(s.transactionIntervalMs()));
        p.put(StreamsConfig.producerPrefix(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG),
                String.valueOf(s.transactionTimeoutMs()));
        p.put(StreamsConfig.CLIENT_ID_CONFIG, s.instanceId());
        // One stream thread: a replaced model's native session is released as soon as the switch is made.
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "1");
        p.put(StreamsConfig.STATE_DIR_CONFIG, Files.createTempDirectory("streamtrain-streams-").toString());
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), "10000");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), "1000");
        // Produce batches of up to 1 MiB per partition (the client's 16 KiB held ~45 score records): the broker's
        // CPU per record fell from 39 to 15 us, the scorer's from 63 to 38 us (linger stays Streams' 100 ms; 10 ms
        // cost the broker more). More records per poll: fewer poll rounds between two commits.
        // bench/profiles/streams-scorer-2026-12-07.txt has the profile and the runs.
        p.put(StreamsConfig.producerPrefix(ProducerConfig.BATCH_SIZE_CONFIG), String.valueOf(1 << 20));
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), "5000");
        return p;
    }

    public static void main(String[] args) throws Exception {
        Settings s;
        try {
            s = Settings.fromEnv(System.getenv());
        } catch (IllegalArgumentException e) {  // NumberFormatException included
            LOG.error("settings_invalid", "error", String.valueOf(e.getMessage()),
                    "fix", "set the STREAMTRAIN_ variable to a valid value");
            System.exit(ExitCodes.CONFIG);
            return;
        }
        Log.setLevel(s.logLevel());
        System.exit(run(s));
    }

    static int run(Settings s) throws Exception {
        CountDownLatch stop = new CountDownLatch(1);
        String[] signal = {null};
        for (String name : new String[] {"TERM", "INT"}) {
            Signal.handle(new Signal(name), sig -> {
                signal[0] = "SIG" + sig.getName();
                stop.countDown();
            });
        }
        ScorerMetrics metrics = new ScorerMetrics();
        ModelRegistry registry = new ModelRegistry(s.challenger());
        ModelWatcher watcher = new ModelWatcher(s, registry, reason -> metrics.refused.labelValues(reason).inc());
        KafkaStreams[] streams = {null};
        Integer port = null;
        if (s.metricsPort() > 0) {
            port = metrics.serve(s.metricsPort(), () -> streams[0] != null
                    && streams[0].state() == KafkaStreams.State.RUNNING && watcher.isAlive());
        }
        watcher.start();
        // Offsets STREAMTRAIN_START_AT means are read now: latest scores what arrives after this start.
        Map<TopicPartition, Long> startOffsets = StartPosition.snapshot(s);
        LOG.info("scorer_started", "features_topic", s.topicFeatures(), "scores_topic", s.topicScores(),
                "models_topic", s.topicModels(), "signed_models_only", s.modelTrust().checksSignatures(),
                "model_max_version", s.modelTrust().maxVersion, "group", s.groupId(), "challenger_mode", s.challenger(),
                "metrics_port", port, "engine", "kafka-streams", "guarantee", s.guarantee());
        int rc = ExitCodes.OK;
        try {
            Integer waited = waitForModel(s, registry, watcher, stop);
            if (waited != null) {
                return waited;
            }
            // The first champion is taken here, before any record; later switches happen between batches.
            for (ModelRegistry.Event e : registry.apply()) {
                LOG.info(e.name(), "old_version", e.oldVersion(), "new_version", e.newVersion());
            }
            metrics.modelVersion.set(registry.champion().version);
            StartPosition.apply(s, startOffsets);
            streams[0] = new KafkaStreams(topology(s, registry, metrics, Batching.fromEnv(System.getenv())),
                    streamsConfig(s));
            streams[0].setStateListener((now, before) -> LOG.info("streams_state", "state", now.name(),
                    "previous", before.name()));
            String[] failure = {null};
            streams[0].setUncaughtExceptionHandler(exc -> {
                failure[0] = String.valueOf(exc);
                LOG.error("stream_failed", "error", failure[0]);
                stop.countDown();
                return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            streams[0].start();
            while (!stop.await(200, TimeUnit.MILLISECONDS)) {
                if (watcher.error != null) {
                    LOG.error("scorer_exiting", "reason", "model watcher failed: " + watcher.error);
                    return rc = ExitCodes.MODEL_WATCHER;
                }
                if (streams[0].state() == KafkaStreams.State.ERROR) {
                    return rc = ExitCodes.MODEL_WATCHER;
                }
            }
            return rc = failure[0] != null ? ExitCodes.MODEL_WATCHER : ExitCodes.OK;
        } finally {
            LOG.info("scorer_stopping", "reason", signal[0] != null ? signal[0] : "stop requested");
            if (streams[0] != null) {
                // Finishes the open transaction (or aborts it, to be redone by the next owner) and leaves the group.
                streams[0].close(new KafkaStreams.CloseOptions().leaveGroup(true).timeout(Duration.ofSeconds(30)));
            }
            watcher.shutdown();
            watcher.join(5000);
            metrics.stop();
            LOG.info("scorer_stopped", "exit_code", rc);
        }
    }

    /** Null once a champion is waiting to be taken; otherwise the exit code. */
    private static Integer waitForModel(Settings s, ModelRegistry registry, ModelWatcher watcher,
                                        CountDownLatch stop) throws Exception {
        long t0 = System.nanoTime();
        double logged = 0;
        while (registry.highestSeen() == 0) {
            if (watcher.error != null) {
                LOG.error("scorer_exiting", "reason", "model watcher failed: " + watcher.error);
                return ExitCodes.MODEL_WATCHER;
            }
            double waited = (System.nanoTime() - t0) / 1e9;
            if (s.modelWaitS() > 0 && waited > s.modelWaitS()) {
                LOG.error("no_model", "waited_s", Math.round(waited), "topic", s.topicModels());
                return ExitCodes.NO_MODEL;
            }
            if (waited - logged >= 10) {
                logged = waited;
                LOG.info("waiting_for_model", "topic", s.topicModels(), "waited_s", Math.round(waited));
            }
            if (stop.await(100, TimeUnit.MILLISECONDS)) {
                return ExitCodes.OK;
            }
        }
        return null;
    }

}
