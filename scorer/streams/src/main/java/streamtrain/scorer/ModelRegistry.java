package streamtrain.scorer;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Hand-over point between the model watcher thread and the stream thread, as in
 * scorer/models.py: the watcher offers fully loaded and warmed versions; the stream thread
 * takes them between two batches, while no processor holds a record (see {@link #held()}), so a
 * record is never scored half by one version and no version is closed while records wait for it.
 *
 * <p>As in scorer/models.py, a version whose training was not healthy (its manifest's
 * {@code training_health.status} is not {@code ok}) is held back while another version serves, and
 * becomes champion only on a promotion request; with nothing else to serve it serves, flagged.
 *
 * <p>A pin ({@code control/pin}) makes one version champion whatever its age or health; versions arriving
 * while pinned are noted ({@code version_not_served}) and not served until an unpin returns to
 * {@link ServingRule}.
 *
 * <p>A version that fails on live input after its load and warm-up passed is marked bad ({@link #fail}): the
 * champion that served before it (kept open for this) takes over, or, with none, the watcher loads the version
 * the rule names without the bad ones ({@link #takeFallbackRequest}); a bad version is never served again.
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
    /** The version a pin request asked for (set when requested, under this object's lock). */
    private Integer pinned;
    private boolean unpinRequested;
    private final List<Integer> notServed = new ArrayList<>();
    private volatile boolean pending;
    private int highestSeen;
    private volatile OnnxModel champion;
    private volatile OnnxModel challenger;
    /** The newest unhealthy version, waiting for a promotion request. */
    private volatile OnnxModel heldBack;
    /** Records held by score processors for their next ONNX call (stream thread only). */
    private int held;
    /** The champion before this one, kept open to take over if this one fails on live input. */
    private volatile OnnxModel previous;
    /** Versions that failed on live input after warm-up: never served again by this process. */
    private final Set<Integer> bad = ConcurrentHashMap.newKeySet();
    private volatile boolean fallbackWanted;

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

    OnnxModel previous() {
        return previous;
    }

    boolean isBad(int version) {
        return bad.contains(version);
    }

    /** Watcher thread: true once after a champion failed with no previous one to take over. */
    boolean takeFallbackRequest() {
        if (!fallbackWanted) {
            return false;
        }
        fallbackWanted = false;
        return true;
    }

    /** Watcher thread: {@code model}, the rule's pick without bad versions, replaces a failed champion. */
    synchronized void fallback(OnnxModel model) {
        offers.add(new Offer(model, "fallback"));
        pending = true;
    }

    /**
     * Stream thread: {@code model} failed on live input. Its version is bad from now on; a failed challenger is
     * dropped; a failed champion gives way to the previous champion. Returns the champion that takes over, or
     * null (a challenger failed, or nothing took over: the bad champion stays only to name the features, its
     * records are dead-lettered, and the watcher is asked for the rule's pick).
     */
    OnnxModel fail(OnnxModel model) {
        bad.add(model.version);
        synchronized (this) {
            if (pinned != null && pinned == model.version) {
                pinned = null;  // the pin cannot be honoured: back to the rule
            }
        }
        if (challenger == model) {
            challenger = null;
            release(model);
            return null;
        }
        if (champion != model) {
            return null;
        }
        OnnxModel successor = previous != null && !bad.contains(previous.version) ? previous : null;
        previous = null;
        if (successor == null) {
            fallbackWanted = true;
            return null;
        }
        champion = successor;
        release(model);
        return successor;
    }

    /** Makes {@code model} champion; the one it replaces (unless bad) is kept as the fallback. */
    private Integer crown(OnnxModel model) {
        OnnxModel old = champion;
        champion = model;
        if (previous == model) {
            previous = null;
        }
        if (old != null && old != model && !bad.contains(old.version)) {
            release(previous);
            previous = old;
        } else if (old != model) {
            release(old);
        }
        return old == null ? null : old.version;
    }

    synchronized int highestSeen() {
        return highestSeen;
    }

    synchronized Integer pinned() {
        return pinned;
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
        if (pinned != null) {
            notServed.add(model.version);
            pending = true;
            return false;  // noted, not served: the caller closes it
        }
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

    /** Serve {@code model} (any age, any health) from the next switch on, and nothing newer until unpinned. */
    synchronized void pin(OnnxModel model) {
        pinned = model.version;
        highestSeen = Math.max(highestSeen, model.version);
        offers.add(new Offer(model, "pinned"));
        pending = true;
    }

    /** Back to the rule: serve {@code model} (the version the rule names), or keep the champion when null. */
    synchronized void unpin(OnnxModel model) {
        pinned = null;
        if (model == null) {
            unpinRequested = true;
            // A pin not applied yet is what this unpin undoes: the champion the watcher saw stays.
            offers.removeIf(o -> {
                if (o.role().equals("pinned")) {
                    o.model().close();
                    return true;
                }
                return false;
            });
        } else {
            highestSeen = Math.max(highestSeen, model.version);
            offers.add(new Offer(model, "unpinned"));
        }
        pending = true;
    }

    /** Stream thread, between records: takes pending offers and promotion requests. */
    List<Event> apply() {
        if (!pending) {
            return List.of();
        }
        List<Offer> taken;
        Integer promoteVersion;
        Integer pinnedNow;
        List<Integer> noted;
        boolean unpinned;
        synchronized (this) {
            taken = new ArrayList<>(offers);
            offers.clear();
            promoteVersion = promote;
            promote = null;
            pinnedNow = pinned;
            noted = new ArrayList<>(notServed);
            notServed.clear();
            unpinned = unpinRequested;
            unpinRequested = false;
            pending = false;
        }
        List<Event> events = new ArrayList<>();
        for (Offer offer : taken) {
            if (bad.contains(offer.model.version)) {
                LOG.warning("version_refused", "version", offer.model.version, "reason", "failed after warm-up",
                        "role", offer.role);
                events.add(new Event("version_refused", champion == null ? null : champion.version,
                        offer.model.version));
                release(offer.model);
            } else if (offer.role.equals("fallback")) {
                if (champion == null || bad.contains(champion.version)) {
                    Integer old = crown(offer.model);
                    events.add(new Event("champion_switched", old, offer.model.version));
                } else {
                    release(offer.model);  // another version took over meanwhile
                }
            } else if (offer.role.equals("pinned") || offer.role.equals("unpinned")) {
                Integer old = crown(offer.model);
                events.add(new Event(offer.role, old, offer.model.version));
                if (offer.role.equals("pinned")) {
                    release(challenger);  // a pin serves one version: no shadow beside it
                    challenger = null;
                }
                if (heldBack != null && heldBack.version <= offer.model.version) {
                    release(heldBack);
                    heldBack = null;
                }
            } else if (offer.role.equals("held") && champion != null) {
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
                Integer old = crown(offer.model);
                events.add(new Event("champion_switched", old, offer.model.version));
                if (heldBack != null && heldBack.version < offer.model.version) {
                    release(heldBack);  // a newer version serves: the held one is no longer the candidate
                    heldBack = null;
                }
            }
        }
        if (unpinned && champion != null) {
            events.add(new Event("unpinned", champion.version, champion.version));
        }
        for (int version : noted) {
            events.add(new Event("version_not_served", pinnedNow, version));
        }
        if (promoteVersion != null) {
            if (bad.contains(promoteVersion)) {
                LOG.warning("promotion_refused", "version", promoteVersion, "reason", "failed after warm-up");
                events.add(new Event("version_refused", champion == null ? null : champion.version, promoteVersion));
            } else if (pinnedNow != null) {
                LOG.warning("promotion_refused", "version", promoteVersion, "reason", "pinned", "pinned", pinnedNow);
            } else if (challenger != null && challenger.version == promoteVersion) {
                events.add(promote());
            } else if (heldBack != null && heldBack.version == promoteVersion) {
                OnnxModel promoted = heldBack;
                heldBack = null;
                events.add(new Event("held_promoted", crown(promoted), promoted.version));
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
        OnnxModel promoted = challenger;
        challenger = null;
        return new Event("challenger_promoted", crown(promoted), promoted.version);
    }

    /** Only the stream thread scores, and it has switched already: the old session can go. */
    private static void release(OnnxModel old) {
        if (old != null) {
            old.close();
        }
    }
}
