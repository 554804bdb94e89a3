package streamtrain.scorer;

/**
 * Exit codes, the same names and values as streamtrain/exitcodes.py (tests/test_exitcodes.py
 * compares the two files and provokes each code the scorers return with a real failure).
 */
final class ExitCodes {
    /** Done, or stopped cleanly by SIGTERM / SIGINT. */
    static final int OK = 0;
    /** The work failed (the Python programs' generic failure; an uncaught JVM exception exits with it too). */
    static final int FAILED = 1;
    /** Bad settings: nothing was processed, and a restart with the same settings fails again. */
    static final int CONFIG = 2;
    /** No model version arrived within STREAMTRAIN_MODEL_WAIT_S. */
    static final int NO_MODEL = 3;
    /** The model watcher or the stream failed. */
    static final int MODEL_WATCHER = 4;
    /** A fatal Kafka error (the Python programs': a fenced transactional producer). */
    static final int KAFKA = 5;

    private ExitCodes() {}
}
