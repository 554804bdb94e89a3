package streamtrain.scorer;

import java.util.ArrayList;
import java.util.List;

/**
 * Hand-over point between the model watcher thread and the stream thread, as in
 * scorer/models.py: the watcher offers fully loaded and warmed versions; the stream thread
 * takes them between two batches, while no processor holds a record (see {@link #held()}), so a
 * record is never scored half by one version and no version is closed while records wait for it.
 */
final class ModelRegistry {
    record Event(String name, Integer oldVersion, int newVersion) {}

    private record Offer(OnnxModel model, String role) {}

    private static final Log LOG = new Log("scorer.models");
    private final boolean challengerMode;
    private final List<Offer> offers = new ArrayList<>();
    private Integer promote;
    private volatile boolean pending;
    private int highestSeen;
    private volatile OnnxModel champion;
    private volatile OnnxModel challenger;
    /** Records held by score processors for their next ONNX call (stream thread only). */
    private int held;

    ModelRegistry(boolean challengerMode) {
        this.challengerMode = challengerMode;
    }

    OnnxModel champion() {
        return champion;
    }

    OnnxModel challenger() {
        return challenger;
    }

    /** Stream thread: {@code n} more records wait to be scored by the current models. */
    void hold(int n) {
        held += n;
    }

    /** Stream thread: {@code n} held records were scored (or dropped with their task). */
    void letGo(int n) {
        held -= n;
    }

    /** Records waiting for the current models: models switch only when none do. */
    int held() {
        return held;
    }

    synchronized int highestSeen() {
        return highestSeen;
    }

    // watcher thread
    synchronized boolean offer(OnnxModel model) {
        if (model.version <= highestSeen) {
            LOG.info("model_ignored", "version", model.version, "reason", "not newer than " + highestSeen);
            return false;
        }
        highestSeen = model.version;
        boolean hasChampion = champion != null || offers.stream().anyMatch(o -> o.role.equals("champion"));
        offers.add(new Offer(model, challengerMode && hasChampion ? "challenger" : "champion"));
        pending = true;
        return true;
    }

    synchronized void requestPromotion(int version) {
        promote = version;
        pending = true;
    }

    /** Stream thread, between records: takes pending offers and promotion requests. */
    List<Event> apply() {
        if (!pending) {
            return List.of();
        }
        List<Offer> taken;
        Integer promoteVersion;
        synchronized (this) {
            taken = new ArrayList<>(offers);
            offers.clear();
            promoteVersion = promote;
            promote = null;
            pending = false;
        }
        List<Event> events = new ArrayList<>();
        for (Offer offer : taken) {
            if (offer.role.equals("champion") || champion == null) {
                OnnxModel old = champion;
                champion = offer.model;
                events.add(new Event("champion_switched", old == null ? null : old.version, offer.model.version));
                release(old);
            } else {
                OnnxModel old = challenger;
                challenger = offer.model;
                events.add(new Event("challenger_loaded", old == null ? null : old.version, offer.model.version));
                release(old);
            }
        }
        if (promoteVersion != null) {
            if (challenger != null && challenger.version == promoteVersion) {
                events.add(promote());
            } else {
                LOG.warning("promotion_refused", "version", promoteVersion, "reason", "not the current challenger",
                        "challenger", challenger == null ? null : challenger.version);
            }
        }
        return events;
    }

    Event promote() {
        OnnxModel old = champion;
        champion = challenger;
        challenger = null;
        release(old);
        return new Event("challenger_promoted", old == null ? null : old.version, champion.version);
    }

    /** Only the stream thread scores, and it has switched already: the old session can go. */
    private static void release(OnnxModel old) {
        if (old != null) {
            old.close();
        }
    }
}
