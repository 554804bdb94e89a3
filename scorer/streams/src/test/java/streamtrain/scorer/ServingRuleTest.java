package streamtrain.scorer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;

/** The serving rule against the cases the Python rule is tested with (tests/serving_rule_cases.json). */
class ServingRuleTest {
    private static Integer intOrNull(JsonNode node) {
        return node == null || node.isNull() ? null : node.asInt();
    }

    @Test
    void theRuleAgreesWithThePythonCases() throws Exception {
        Path cases = Path.of(System.getProperty("user.dir")).resolve("../../tests/serving_rule_cases.json");
        JsonNode all = new ObjectMapper().readTree(Files.readAllBytes(cases));
        assertTrue(all.size() > 5, "the shared cases are read");
        for (JsonNode c : all) {
            Map<Integer, Boolean> healthy = new TreeMap<>();
            for (Iterator<Map.Entry<String, JsonNode>> it = c.path("healthy").fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                healthy.put(Integer.parseInt(e.getKey()), e.getValue().asBoolean());
            }
            Integer promoted = intOrNull(c.get("promoted"));
            Integer pinned = intOrNull(c.get("pinned"));
            String name = c.path("name").asText();
            assertEquals(intOrNull(c.get("serves")), ServingRule.servingVersion(healthy, promoted, pinned), name);
            assertEquals(intOrNull(c.get("rollback")), ServingRule.rollbackTarget(healthy, promoted, pinned), name);
        }
    }
}
