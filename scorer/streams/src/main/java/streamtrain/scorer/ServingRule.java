package streamtrain.scorer;

import java.util.Map;

/**
 * Which version the scorers serve, as streamtrain/modelcontrol.py {@code serving_version} says (the CLI reports
 * it; tests/serving_rule_cases.json holds the cases both sides' tests check): a pin wins; otherwise the newest
 * healthy version, or a promoted one if newer; with no healthy version at all, the oldest.
 */
final class ServingRule {
    private ServingRule() {}

    /** {@code healthy}: version to "its training was healthy", for the versions this scorer accepts. */
    static Integer servingVersion(Map<Integer, Boolean> healthy, Integer promoted, Integer pinned) {
        if (pinned != null && healthy.containsKey(pinned)) {
            return pinned;
        }
        Integer best = null;
        for (Map.Entry<Integer, Boolean> e : healthy.entrySet()) {
            if (e.getValue() && (best == null || e.getKey() > best)) {
                best = e.getKey();
            }
        }
        if (promoted != null && healthy.containsKey(promoted) && (best == null || promoted > best)) {
            best = promoted;
        }
        if (best != null) {
            return best;
        }
        return healthy.keySet().stream().min(Integer::compare).orElse(null);
    }

    /** The newest healthy version older than the one served now; null when there is none. */
    static Integer rollbackTarget(Map<Integer, Boolean> healthy, Integer promoted, Integer pinned) {
        Integer serving = servingVersion(healthy, promoted, pinned);
        if (serving == null) {
            return null;
        }
        Integer best = null;
        for (Map.Entry<Integer, Boolean> e : healthy.entrySet()) {
            if (e.getValue() && e.getKey() < serving && (best == null || e.getKey() > best)) {
                best = e.getKey();
            }
        }
        return best;
    }
}
