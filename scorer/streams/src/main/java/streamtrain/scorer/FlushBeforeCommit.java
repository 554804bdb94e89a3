package streamtrain.scorer;

import java.util.Map;
import org.apache.kafka.streams.processor.StateStore;
import org.apache.kafka.streams.processor.StateStoreContext;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.internals.CacheFlushListener;
import org.apache.kafka.streams.state.internals.CachedStateStore;

/**
 * A state store that stores nothing: its only job is to be told "a commit is about to happen" so
 * that {@link ScoreProcessor} forwards the records it holds for its next ONNX call first.
 *
 * <p>Why: under exactly_once_v2 a commit takes the offsets of every record the task has processed.
 * A processor that held records back past a commit would have their offsets committed without
 * their scores. Kafka Streams (3.9) flushes the caches of a task's stores before it commits
 * ({@code StreamTask.prepareCommit} -> {@code ProcessorStateManager.flushCache}), precisely so that
 * what a cache holds back is forwarded inside the same transaction; this store takes part in that
 * step. {@link CachedStateStore} is an internal interface, so a Kafka upgrade must keep the
 * TopologyTestDriver and end-to-end tests green (they fail if held records are not forwarded).
 */
final class FlushBeforeCommit implements StateStore, CachedStateStore<Object, Object> {
    static final String NAME = "score-batch";

    private Runnable beforeCommit = () -> { };
    private boolean open;

    /** Runs {@code hook} on the stream thread before each commit of this store's task. */
    void beforeCommit(Runnable hook) {
        this.beforeCommit = hook;
    }

    @Override
    public void flushCache() {
        beforeCommit.run();
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public void init(StateStoreContext context, StateStore root) {
        context.register(root, (key, value) -> { });  // no changelog: nothing to restore
        open = true;
    }

    @Override
    @Deprecated
    public void init(org.apache.kafka.streams.processor.ProcessorContext context, StateStore root) {
        context.register(root, (key, value) -> { });
        open = true;
    }

    @Override
    public void flush() {
        // the records are forwarded by flushCache(); nothing is stored
    }

    @Override
    public void close() {
        open = false;
    }

    @Override
    public boolean persistent() {
        return false;
    }

    @Override
    public boolean isOpen() {
        return open;
    }

    @Override
    public boolean setFlushListener(CacheFlushListener<Object, Object> listener, boolean sendOldValues) {
        return false;
    }

    @Override
    public void clearCache() {
        // holds no cache entries
    }

    static StoreBuilder<FlushBeforeCommit> builder() {
        return new StoreBuilder<>() {
            @Override
            public StoreBuilder<FlushBeforeCommit> withCachingEnabled() {
                return this;
            }

            @Override
            public StoreBuilder<FlushBeforeCommit> withCachingDisabled() {
                return this;
            }

            @Override
            public StoreBuilder<FlushBeforeCommit> withLoggingEnabled(Map<String, String> config) {
                throw new UnsupportedOperationException("the score batch has no changelog");
            }

            @Override
            public StoreBuilder<FlushBeforeCommit> withLoggingDisabled() {
                return this;
            }

            @Override
            public FlushBeforeCommit build() {
                return new FlushBeforeCommit();
            }

            @Override
            public Map<String, String> logConfig() {
                return Map.of();
            }

            @Override
            public boolean loggingEnabled() {
                return false;
            }

            @Override
            public String name() {
                return NAME;
            }
        };
    }
}
