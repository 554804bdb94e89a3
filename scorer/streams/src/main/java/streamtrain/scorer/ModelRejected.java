package streamtrain.scorer;

/** A model version (or a record claiming to be part of one) that must not be served. */
final class ModelRejected extends Exception {
    final String reason;
    final String detail;

    ModelRejected(String reason, String detail) {
        super(reason + ": " + detail);
        this.reason = reason;
        this.detail = detail;
    }
}
