package streamtrain.scorer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.Signature;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Signed model versions on the JVM reader (issue 24, findings 4 and 5): the fixture's versions, signed
 * by the Python trainer's code (src/test/resources/signed_versions.json, made by
 * tests/score_streams/signing_fixture.py and checked there by the Python reader too), are served or
 * refused for the same reasons; a refused version never reaches the registry, so the previous one keeps
 * serving; settings from the same variables as the Python programs.
 */
class ModelTrustTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static JsonNode fixture() throws Exception {
        try (InputStream in = ModelTrustTest.class.getResourceAsStream("/signed_versions.json")) {
            return JSON.readTree(in);
        }
    }

    private static byte[] b64(JsonNode n) {
        return n == null || n.isNull() ? null : Base64.getDecoder().decode(n.asText());
    }

    private static ModelTrust fixtureTrust(JsonNode f) {
        return ModelTrust.fromSettings(f.get("verify_keys").asText(), f.get("max_version").asText());
    }

    @Test
    void theJvmReaderServesOrRefusesEachFixtureVersionAsThePythonReaderDoes() throws Exception {
        JsonNode f = fixture();
        int cases = 0;
        for (JsonNode c : f.get("cases")) {
            ModelAssembler asm = new ModelAssembler(fixtureTrust(f));
            List<Integer> served = new ArrayList<>();
            String reason = null;
            for (JsonNode r : c.get("records")) {
                try {
                    ModelAssembler.Version v = asm.add(r.get("key").asText().getBytes(StandardCharsets.UTF_8),
                            b64(r.get("value")), b64(r.get("signature")));
                    if (v != null) {
                        served.add(v.version());
                    }
                } catch (ModelRejected e) {
                    reason = e.reason;
                }
            }
            String expect = c.get("expect").isNull() ? null : c.get("expect").asText();
            assertEquals(expect, reason, "v" + c.get("version"));
            assertEquals(expect == null ? List.of(c.get("version").asInt()) : List.of(), served);
            cases++;
        }
        assertEquals(5, cases);
    }

    @Test
    void withoutVerificationKeysSignaturesAreNotCheckedButTheBoundIs() throws Exception {
        JsonNode f = fixture();
        for (JsonNode c : f.get("cases")) {
            ModelAssembler asm = new ModelAssembler(ModelTrust.fromSettings("", "1000"));
            String reason = null;
            for (JsonNode r : c.get("records")) {
                try {
                    asm.add(r.get("key").asText().getBytes(StandardCharsets.UTF_8), b64(r.get("value")), null);
                } catch (ModelRejected e) {
                    reason = e.reason;
                }
            }
            String expect = c.get("expect").asText();
            if (c.get("version").asInt() > 1000) {
                assertEquals("version_out_of_range", reason);
            } else if (expect.equals("bad_signature")) {
                assertNull(reason);  // tampered, but its checksums still hold: only a signature can tell
            } else {
                assertNull(reason, expect);
            }
        }
    }

    @Test
    void rotationAcceptsEveryListedKeyAndTheDefaultBoundRefuses999999999() throws Exception {
        KeyPair oldKey = KeyPairGenerator.getInstance("Ed25519").generateKeyPair();
        KeyPair newKey = KeyPairGenerator.getInstance("Ed25519").generateKeyPair();
        ModelTrust trust = ModelTrust.fromSettings(raw(oldKey) + ", " + raw(newKey), "99999999");
        byte[] manifest = "{\"any\": \"bytes\"}".getBytes(StandardCharsets.UTF_8);
        trust.check(7, manifest, header(newKey, manifest));
        trust.check(7, manifest, header(oldKey, manifest));
        ModelRejected unsigned = assertThrows(ModelRejected.class, () -> trust.check(7, manifest, null));
        assertEquals("unsigned", unsigned.reason);
        ModelRejected huge = assertThrows(ModelRejected.class,
                () -> ModelTrust.none().check(999_999_999, manifest, null));
        assertEquals("version_out_of_range", huge.reason);
    }

    @Test
    void aRefusedVersionNeverReachesTheRegistrySoThePreviousKeepsServing() throws Exception {
        JsonNode f = fixture();
        Settings s = Settings.fromEnv(Map.of("STREAMTRAIN_INSTANCE_ID", "trust-test",
                "STREAMTRAIN_MODEL_VERIFY_KEYS", f.get("verify_keys").asText(),
                "STREAMTRAIN_MODEL_MAX_VERSION", f.get("max_version").asText()));
        ModelRegistry registry = new ModelRegistry(false);
        List<String> refused = new ArrayList<>();
        ModelWatcher watcher = new ModelWatcher(s, registry, refused::add);
        // Before catching up, a complete version goes to the backlog; none of the refused ones may get there.
        for (JsonNode c : f.get("cases")) {
            for (JsonNode r : c.get("records")) {
                watcher.accept(r.get("key").asText().getBytes(StandardCharsets.UTF_8), b64(r.get("value")),
                        b64(r.get("signature")));
            }
        }
        assertEquals(List.of("unsigned", "unknown_key", "bad_signature", "version_out_of_range"), refused);
        assertEquals(0, registry.highestSeen(), "nothing is offered before catch-up");
    }

    @Test
    void invalidSettingsAreConfigErrorsThatNameNoKeyMaterial() {
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> Settings.fromEnv(Map.of("STREAMTRAIN_MODEL_VERIFY_KEYS", "c2VjcmV0")));
        assertTrue(bad.getMessage().contains("verification key #1"), bad.getMessage());
        assertTrue(!bad.getMessage().contains("c2VjcmV0"), bad.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> Settings.fromEnv(Map.of("STREAMTRAIN_MODEL_MAX_VERSION", "999999999")));
    }

    private static String raw(KeyPair kp) {
        byte[] der = kp.getPublic().getEncoded();
        return Base64.getEncoder().encodeToString(Arrays.copyOfRange(der, der.length - 32, der.length));
    }

    private static byte[] header(KeyPair kp, byte[] manifest) throws Exception {
        Signature signer = Signature.getInstance("Ed25519");
        signer.initSign(kp.getPrivate());
        signer.update(ModelTrust.DOMAIN);
        signer.update(manifest);
        byte[] der = kp.getPublic().getEncoded();
        String kid = ModelTrust.keyId(Arrays.copyOfRange(der, der.length - 32, der.length));
        return ("ed25519:" + kid + ":" + Base64.getEncoder().encodeToString(signer.sign()))
                .getBytes(StandardCharsets.US_ASCII);
    }
}
