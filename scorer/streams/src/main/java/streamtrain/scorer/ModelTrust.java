package streamtrain.scorer;

import java.nio.charset.StandardCharsets;
import java.security.KeyFactory;
import java.security.MessageDigest;
import java.security.PublicKey;
import java.security.Signature;
import java.security.spec.X509EncodedKeySpec;
import java.util.Base64;
import java.util.HexFormat;
import java.util.Map;
import java.util.TreeMap;

/**
 * The JVM reader's half of streamtrain/modelsign.py: which model versions may be served. A version
 * numbered above {@code STREAMTRAIN_MODEL_MAX_VERSION} is refused; with verification keys
 * ({@code STREAMTRAIN_MODEL_VERIFY_KEYS}: base64 of 32-byte Ed25519 public keys, comma-separated), so is
 * one whose manifest record lacks the {@code streamtrain.signature} header
 * ({@code ed25519:<key id>:<base64 signature>}), names a key not listed, or does not verify. The bytes
 * verified are the manifest record's value as read, after a fixed domain prefix; Ed25519 is the JDK's
 * own (JCA, Java 15+), no library added.
 */
final class ModelTrust {
    static final String SIGNATURE_HEADER = "streamtrain.signature";
    static final byte[] DOMAIN = "streamtrain.model.manifest.v1\n".getBytes(StandardCharsets.US_ASCII);
    /** The key pattern allows 9 digits; the trainer numbers max + 1, which must stay inside it. */
    static final int KEY_PATTERN_MAX = 999_999_999;
    static final int DEFAULT_MAX_VERSION = 99_999_999;
    /** DER of an Ed25519 SubjectPublicKeyInfo up to the 32 raw key bytes (RFC 8410). */
    private static final byte[] X509_PREFIX = HexFormat.of().parseHex("302a300506032b6570032100");

    private final Map<String, PublicKey> keys;
    final int maxVersion;

    ModelTrust(Map<String, PublicKey> keys, int maxVersion) {
        this.keys = Map.copyOf(keys);
        this.maxVersion = maxVersion;
    }

    static ModelTrust none() {
        return new ModelTrust(Map.of(), DEFAULT_MAX_VERSION);
    }

    /** From the same variables as the Python programs; IllegalArgumentException for an invalid one. */
    static ModelTrust fromSettings(String verifyKeys, String maxVersion) {
        int max = Integer.parseInt(maxVersion);
        if (max < 1 || max >= KEY_PATTERN_MAX) {
            throw new IllegalArgumentException("STREAMTRAIN_MODEL_MAX_VERSION must be 1.." + (KEY_PATTERN_MAX - 1)
                    + ": " + max);
        }
        return new ModelTrust(parseKeys(verifyKeys), max);
    }

    boolean checksSignatures() {
        return !keys.isEmpty();
    }

    static Map<String, PublicKey> parseKeys(String text) {
        Map<String, PublicKey> out = new TreeMap<>();
        String[] items = text.split(",");
        for (int i = 0; i < items.length; i++) {
            String item = items[i].strip();
            if (item.isEmpty()) {
                continue;
            }
            byte[] raw;
            PublicKey key;
            try {
                raw = Base64.getDecoder().decode(item);
                if (raw.length != 32) {
                    throw new IllegalArgumentException("not 32 bytes");
                }
                byte[] der = new byte[X509_PREFIX.length + 32];
                System.arraycopy(X509_PREFIX, 0, der, 0, X509_PREFIX.length);
                System.arraycopy(raw, 0, der, X509_PREFIX.length, 32);
                key = KeyFactory.getInstance("Ed25519").generatePublic(new X509EncodedKeySpec(der));
            } catch (Exception e) {
                throw new IllegalArgumentException("STREAMTRAIN_MODEL_VERIFY_KEYS: verification key #" + (i + 1)
                        + " is not the base64 of a 32-byte Ed25519 public key");
            }
            out.put(keyId(raw), key);
        }
        return out;
    }

    /** First 8 bytes of the sha256 of the raw public key, hex (as streamtrain/modelsign.py key_id). */
    static String keyId(byte[] raw) {
        return ModelAssembler.sha256(raw).substring(0, 16);
    }

    /** Throws if the version whose manifest record this is must not be served. */
    void check(int version, byte[] manifest, byte[] signatureHeader) throws ModelRejected {
        if (version > maxVersion) {
            throw new ModelRejected("version_out_of_range", "v" + version + " > model_max_version " + maxVersion);
        }
        if (keys.isEmpty()) {
            return;
        }
        if (signatureHeader == null) {
            throw new ModelRejected("unsigned", "v" + version + ": manifest has no " + SIGNATURE_HEADER + " header");
        }
        String[] parts = new String(signatureHeader, StandardCharsets.US_ASCII).split(":", 3);
        byte[] signature;
        try {
            if (parts.length != 3) {
                throw new IllegalArgumentException("not three parts");
            }
            signature = Base64.getDecoder().decode(parts[2]);
        } catch (IllegalArgumentException e) {
            throw new ModelRejected("bad_signature", "v" + version + ": " + SIGNATURE_HEADER
                    + " header is not ed25519:<key id>:<base64>");
        }
        if (!parts[0].equals("ed25519")) {
            throw new ModelRejected("bad_signature", "v" + version + ": algorithm '"
                    + parts[0].substring(0, Math.min(20, parts[0].length())) + "', only ed25519 is accepted");
        }
        PublicKey key = keys.get(parts[1]);
        if (key == null) {
            throw new ModelRejected("unknown_key", "v" + version + ": signed by key '"
                    + parts[1].substring(0, Math.min(16, parts[1].length())) + "', not one of " + keys.keySet());
        }
        boolean valid;
        try {
            Signature verifier = Signature.getInstance("Ed25519");
            verifier.initVerify(key);
            verifier.update(DOMAIN);
            verifier.update(manifest);
            valid = verifier.verify(signature);
        } catch (Exception e) {  // SignatureException: a signature of the wrong length
            valid = false;
        }
        if (!valid) {
            throw new ModelRejected("bad_signature", "v" + version + ": signature by key " + parts[1]
                    + " does not match the manifest");
        }
    }
}
