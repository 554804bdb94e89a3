package streamtrain.scorer;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;

/**
 * Hand-over point between the model watcher thread and the stream thread, as in
 * scorer/models.py: the watcher offers fully loaded and warmed versions; the stream thread
 * takes them between two batches, while no processor holds a record (see {@link #held()}), so a
 * record is never scored half by one version and no version is closed while records wait for it.
 *
 * <p>As in scorer/models.py, a version whose training was not healthy (its manifest's
 * {@code training_health.status} is not {@code ok}) is held back while another version serves, and
 * becomes champion only on a promotion request; with nothing else to serve it serves, flagged.
 */
final class ModelRegistry {
    record Event(String name, Integer oldVersion, int newVersion) {}

    private record Offer(OnnxModel model, String role) {}

    /** {@code training_health.status} values the trainer writes for an unhealthy run (others: "unhealthy"). */
    static final List<String> HEALTH_PROBLEMS = List.of("not_converged", "no_better_than_constant");

    /** Why a version's training was not healthy, from its manifest; null when ok or absent (older trainers). */
    static String unhealthyReason(JsonNode metadata) {
        JsonNode status = metadata == null ? null : metadata.path("training_health").get("status");
        if (status == null || !status.isTextual() || status.asText().equals("ok") || status.asText().equals("unknown")) {
            return null;
        }
        return HEALTH_PROBLEMS.contains(status.asText()) ? status.asText() : "unhealthy";
    }

    private static final Log LOG = new Log("scorer.models");
    private final boolean challengerMode;
    private final List<Offer> offers = new ArrayList<>();
    private Integer promote;
    private volatile boolean pending;
    private int highestSeen;
    private volatile OnnxModel champion;
    private volatile OnnxModel challenger;
    /** The newest unhealthy version, waiting for a promotion request. */
    private volatile OnnxModel heldBack;
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

    OnnxModel heldBack() {
        return heldBack;
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
        return offer(model, false);
    }

    /** {@code forced}: a promotion request named this version, so an unhealthy one is not held back. */
    synchronized boolean offer(OnnxModel model, boolean forced) {
        if (model.version <= highestSeen) {
            LOG.info("model_ignored", "version", model.version, "reason", "not newer than " + highestSeen);
            return false;
        }
        highestSeen = model.version;
        boolean hasChampion = champion != null || offers.stream().anyMatch(o -> o.role.equals("champion"));
        String role;
        if (hasChampion && !forced && model.unhealthy != null) {
            role = "held";
        } else if (challengerMode && hasChampion && !forced) {
            role = "challenger";
        } else {
            role = "champion";
        }
        offers.add(new Offer(model, role));
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
            if (offer.role.equals("held") && champion != null) {
                OnnxModel old = heldBack;
                heldBack = offer.model;
                events.add(new Event("version_held", champion.version, offer.model.version));
                release(old);
            } else if (offer.role.equals("challenger") && champion != null) {
                OnnxModel old = challenger;
                challenger = offer.model;
                events.add(new Event("challenger_loaded", old == null ? null : old.version, offer.model.version));
                release(old);
            } else {
                OnnxModel old = champion;
                champion = offer.model;
                events.add(new Event("champion_switched", old == null ? null : old.version, offer.model.version));
                release(old);
                if (heldBack != null && heldBack.version < offer.model.version) {
                    release(heldBack);  // a newer version serves: the held one is no longer the candidate
                    heldBack = null;
                }
            }
        }
        if (promoteVersion != null) {
            if (challenger != null && challenger.version == promoteVersion) {
                events.add(promote());
            } else if (heldBack != null && heldBack.version == promoteVersion) {
                OnnxModel old = champion;
                champion = heldBack;
                heldBack = null;
                release(old);
                events.add(new Event("held_promoted", old == null ? null : old.version, champion.version));
            } else {
                LOG.warning("promotion_refused", "version", promoteVersion,
                        "reason", "neither the current challenger nor a held version",
                        "challenger", challenger == null ? null : challenger.version,
                        "held", heldBack == null ? null : heldBack.version);
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
