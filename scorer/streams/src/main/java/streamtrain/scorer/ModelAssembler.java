package streamtrain.scorer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The JVM reader of streamtrain/modelcodec.py: feed it every record of the models topic in
 * order; it returns each version it completes, checked the same way (chunk count, size,
 * sha256, required metadata, attachments).
 */
final class ModelAssembler {
    static final int FORMAT_VERSION = 1;
    static final long MAX_ARTEFACT_BYTES = 256L * 1024 * 1024;
    static final long CHUNK_BYTES = 900 * 1024;
    private static final Pattern KEY = Pattern.compile("^model/(\\d{1,9})/(manifest|chunk/(\\d{1,6}))$");
    private static final String[] REQUIRED = {"version", "feature_names", "threshold", "format"};
    private static final ObjectMapper JSON = new ObjectMapper();

    record Version(int version, JsonNode metadata, byte[] artefact, Map<String, byte[]> attachments) {}

    private final Map<Integer, Map<Integer, byte[]>> chunks = new HashMap<>();
    private final ModelTrust trust;

    ModelAssembler() {
        this(ModelTrust.none());
    }

    /** Versions {@code trust} refuses (unsigned, wrongly signed, numbered out of range) are refused. */
    ModelAssembler(ModelTrust trust) {
        this.trust = trust;
    }

    Version add(byte[] key, byte[] value) throws ModelRejected {
        return add(key, value, null);
    }

    /** {@code signature}: the record's streamtrain.signature header (null if it has none). */
    Version add(byte[] key, byte[] value, byte[] signature) throws ModelRejected {
        if (key == null) {
            throw new ModelRejected("bad_key", "record without a key on the models topic");
        }
        String k = new String(key, StandardCharsets.UTF_8);
        Matcher m = KEY.matcher(k);
        if (!m.matches()) {
            throw new ModelRejected("bad_key", "unexpected key " + k.substring(0, Math.min(80, k.length())));
        }
        int version = Integer.parseInt(m.group(1));
        if (value == null) {
            chunks.remove(version);  // tombstone: the version was deleted
            return null;
        }
        if (!m.group(2).equals("manifest")) {
            if (version > trust.maxVersion) {
                return null;  // not kept: its manifest, if it comes, is refused and logged as out of range
            }
            Map<Integer, byte[]> parts = chunks.computeIfAbsent(version, v -> new HashMap<>());
            parts.put(Integer.parseInt(m.group(3)), value);
            long total = parts.values().stream().mapToLong(p -> p.length).sum();
            if (total > MAX_ARTEFACT_BYTES) {
                chunks.remove(version);
                throw new ModelRejected("too_large", "v" + version + " exceeds " + MAX_ARTEFACT_BYTES + " bytes");
            }
            return null;
        }
        Map<Integer, byte[]> parts = chunks.remove(version);
        if (parts == null) {
            parts = Map.of();
        }
        // Before the manifest is even parsed: an unsigned or out-of-range version is not read at all.
        trust.check(version, value, signature);
        JsonNode manifest;
        long count;
        long size;
        String digest;
        JsonNode metadata;
        try {
            manifest = JSON.readTree(value);
            if (manifest == null || !manifest.isObject()) {
                throw new IllegalArgumentException("manifest is not a JSON object");
            }
            count = required(manifest, "chunks").asLong();
            size = required(manifest, "size").asLong();
            digest = required(manifest, "sha256").asText();
            metadata = required(manifest, "metadata");
            if (!metadata.isObject()) {
                throw new IllegalArgumentException("metadata is not a JSON object");
            }
        } catch (Exception e) {
            throw new ModelRejected("bad_metadata", "v" + version + ": " + e.getMessage());
        }
        JsonNode codec = manifest.get("codec");
        if (codec == null || !codec.isIntegralNumber() || codec.asInt() != FORMAT_VERSION) {
            throw new ModelRejected("incompatible", "v" + version + ": codec " + codec + ", expected " + FORMAT_VERSION);
        }
        // Checked before anything loops over them: a manifest claiming 10^9 chunks must not stall the reader.
        if (size < 0 || size > MAX_ARTEFACT_BYTES) {
            throw new ModelRejected(size > 0 ? "too_large" : "bad_metadata", "v" + version + ": size " + size);
        }
        if (count < 0 || count > MAX_ARTEFACT_BYTES / CHUNK_BYTES + 1) {
            throw new ModelRejected("bad_metadata", "v" + version + ": " + count + " chunks");
        }
        byte[] artefact = join(version, "artefact", parts, 0, (int) count);
        if (artefact.length != size) {
            throw new ModelRejected("truncated", "v" + version + ": " + artefact.length + " bytes, manifest says " + size);
        }
        if (!sha256(artefact).equals(digest)) {
            throw new ModelRejected("checksum", "v" + version + ": sha256 mismatch");
        }
        List<String> absent = new ArrayList<>();
        for (String field : REQUIRED) {
            if (!metadata.has(field)) {
                absent.add(field);
            }
        }
        if (!absent.isEmpty()) {
            throw new ModelRejected("bad_metadata", "v" + version + ": metadata lacks " + absent);
        }
        JsonNode mv = metadata.get("version");
        if (!mv.isIntegralNumber() || mv.asLong() != version) {
            throw new ModelRejected("bad_metadata", "key says v" + version + ", metadata says " + mv);
        }
        return new Version(version, metadata, artefact, attachments(version, manifest, parts, (int) count));
    }

    private static Map<String, byte[]> attachments(int version, JsonNode manifest, Map<Integer, byte[]> parts,
                                                   int artefactChunks) throws ModelRejected {
        Map<String, byte[]> out = new TreeMap<>();
        JsonNode listed = manifest.get("attachments");
        if (listed == null || listed.isNull()) {
            return out;
        }
        if (!listed.isObject()) {
            throw new ModelRejected("bad_metadata", "v" + version + ": attachments is not a JSON object");
        }
        for (Iterator<Map.Entry<String, JsonNode>> it = listed.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            String name = e.getKey();
            JsonNode info = e.getValue();
            long first, count;
            long size;
            String digest;
            try {
                first = required(info, "first_chunk").asLong();
                count = required(info, "chunks").asLong();
                size = required(info, "size").asLong();
                digest = required(info, "sha256").asText();
            } catch (Exception ex) {
                throw new ModelRejected("bad_metadata", "v" + version + ": attachment '" + name + "': " + ex.getMessage());
            }
            if (first < artefactChunks || first > Integer.MAX_VALUE / 2 || count < 1
                    || count > MAX_ARTEFACT_BYTES / CHUNK_BYTES + 1
                    || size < 0 || size > MAX_ARTEFACT_BYTES) {
                throw new ModelRejected("bad_metadata", "v" + version + ": attachment '" + name + "' overlaps the artefact's chunks");
            }
            byte[] data = join(version, "attachment '" + name + "'", parts, (int) first, (int) count);
            if (data.length != size) {
                throw new ModelRejected("truncated", "v" + version + ": attachment '" + name + "' has " + data.length
                        + " bytes, manifest says " + size);
            }
            if (!sha256(data).equals(digest)) {
                throw new ModelRejected("checksum", "v" + version + ": attachment '" + name + "' sha256 mismatch");
            }
            out.put(name, data);
        }
        return out;
    }

    private static JsonNode required(JsonNode node, String field) {
        JsonNode v = node.get(field);
        if (v == null || v.isNull()) {
            throw new IllegalArgumentException("missing '" + field + "'");
        }
        return v;
    }

    private static byte[] join(int version, String what, Map<Integer, byte[]> parts, int first, int count)
            throws ModelRejected {
        List<Integer> missing = new ArrayList<>();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (int i = first; i < first + count; i++) {
            byte[] p = parts.get(i);
            if (p == null) {
                missing.add(i);
            } else {
                out.writeBytes(p);
            }
        }
        if (!missing.isEmpty()) {
            throw new ModelRejected("truncated", "v" + version + ": " + what + " chunks "
                    + missing.subList(0, Math.min(5, missing.size())) + " of " + count + " missing");
        }
        return out.toByteArray();
    }

    static String sha256(byte[] data) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(data));
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }
}
