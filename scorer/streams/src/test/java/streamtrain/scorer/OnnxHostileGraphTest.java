package streamtrain.scorer;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;
import org.junit.jupiter.api.Test;

/**
 * Crafted scoring graphs (issue 24, finding 6; src/test/resources/hostile_graphs.json, made by
 * tests/score_streams/hostile_onnx_fixture.py with onnx's own helpers): tensors stored outside the model
 * (a path out of the working directory, ONNX Runtime's in-memory address marker, in an initialiser or a
 * Constant node) are refused before a session is made; a graph whose output has another length than its
 * input's rows is refused at warm-up, never offered, so the previous version keeps serving.
 */
class OnnxHostileGraphTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static JsonNode fixture() throws Exception {
        try (InputStream in = OnnxHostileGraphTest.class.getResourceAsStream("/hostile_graphs.json")) {
            return JSON.readTree(in);
        }
    }

    private static ObjectNode metadata(int version, int features) {
        ObjectNode meta = JSON.createObjectNode();
        meta.put("version", version).put("format", OnnxModel.ARTEFACT_FORMAT).put("threshold", 1.0);
        ObjectNode norm = meta.putObject("normalization");
        for (int i = 0; i < features; i++) {
            meta.withArray("feature_names").add("f" + i);
            norm.withArray("mean").add(0.0);
            norm.withArray("std").add(1.0);
        }
        return meta;
    }

    private static byte[] keras() throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (ZipOutputStream zip = new ZipOutputStream(out)) {
            zip.putNextEntry(new ZipEntry("config.json"));
            zip.write("{}".getBytes(StandardCharsets.UTF_8));
            zip.closeEntry();
        }
        return out.toByteArray();
    }

    /** How the watcher loads a version: refused (the reason) or loaded and warmed (null). */
    private static String load(ModelAssembler.Version mv) {
        OnnxModel model = null;
        try {
            model = OnnxModel.load(mv);
            model.warm();
            return null;
        } catch (ModelRejected e) {
            return e.reason;
        } catch (Exception e) {
            return "load_failed: " + e;
        } finally {
            if (model != null) {
                model.close();
            }
        }
    }

    @Test
    void externalTensorsAreRefusedBeforeASessionAndWrongOutputLengthsAtWarmUp() throws Exception {
        JsonNode f = fixture();
        int features = f.get("features").asInt();
        int cases = 0;
        for (JsonNode c : f.get("cases")) {
            byte[] graph = Base64.getDecoder().decode(c.get("graph").asText());
            ModelAssembler.Version mv = new ModelAssembler.Version(1, metadata(1, features), keras(),
                    Map.of(OnnxModel.ATTACHMENT, graph));
            String expect = c.get("expect").isNull() ? null : c.get("expect").asText();
            assertEquals(expect, load(mv), c.get("name").asText());
            cases++;
        }
        assertEquals(5, cases);
    }

    @Test
    void truncatedOrGarbageGraphsAreRefusedWithoutASession() throws Exception {
        byte[] good = Base64.getDecoder().decode(fixture().get("cases").get(0).get("graph").asText());
        byte[][] bad = {java.util.Arrays.copyOf(good, good.length - 3), {(byte) 0x3a, (byte) 0xff, (byte) 0xff,
            (byte) 0xff, (byte) 0xff, (byte) 0x0f}, {(byte) 0x0b}};
        for (byte[] graph : bad) {
            ModelAssembler.Version mv = new ModelAssembler.Version(1, metadata(1, 4), keras(),
                    Map.of(OnnxModel.ATTACHMENT, graph));
            assertEquals("load_failed", load(mv));
        }
    }

    @Test
    void aGraphRefusedAtWarmUpLeavesThePreviousVersionServing() throws Exception {
        JsonNode f = fixture();
        Map<String, byte[]> graphs = new java.util.HashMap<>();
        for (JsonNode c : f.get("cases")) {
            graphs.put(c.get("name").asText(), Base64.getDecoder().decode(c.get("graph").asText()));
        }
        ModelRegistry registry = new ModelRegistry(false);
        List<String> refused = new ArrayList<>();
        ModelWatcher watcher = new ModelWatcher(Settings.fromEnv(Map.of("STREAMTRAIN_INSTANCE_ID", "hostile")),
                registry, refused::add);
        watcher.catchUp();
        publish(watcher, 1, graphs.get("good"));
        publish(watcher, 2, graphs.get("wrong_length"));
        publish(watcher, 3, graphs.get("external_path"));
        registry.apply();
        assertEquals(1, registry.champion().version);
        assertEquals(List.of("incompatible", "external_data"), refused);
    }

    @Test
    void aVersionDeletedBeforeCatchUpIsNotLoaded() throws Exception {
        byte[] good = Base64.getDecoder().decode(fixture().get("cases").get(0).get("graph").asText());
        ModelRegistry registry = new ModelRegistry(false);
        List<String> refused = new ArrayList<>();
        ModelWatcher watcher = new ModelWatcher(Settings.fromEnv(Map.of("STREAMTRAIN_INSTANCE_ID", "deleted")),
                registry, refused::add);
        publish(watcher, 1, good);
        publish(watcher, 2, good);
        for (String key : new String[] {"model/2/chunk/0", "model/2/chunk/1", "model/2/manifest"}) {
            watcher.accept(key.getBytes(StandardCharsets.UTF_8), null);  // the trainer's tombstones of v2
        }
        watcher.catchUp();
        registry.apply();
        assertEquals(1, registry.champion().version);
        assertEquals(List.of(), refused);
    }

    /** A version's records as the trainer writes them (streamtrain/modelcodec.py encode), fed to the watcher. */
    private static void publish(ModelWatcher watcher, int version, byte[] graph) throws Exception {
        byte[] artefact = keras();
        ObjectNode meta = metadata(version, 4);
        meta.put("sha256", ModelAssembler.sha256(artefact));
        ObjectNode manifest = JSON.createObjectNode();
        manifest.put("codec", 1).put("sha256", ModelAssembler.sha256(artefact)).put("size", artefact.length)
                .put("chunks", 1).set("metadata", meta);
        manifest.putObject("attachments").putObject(OnnxModel.ATTACHMENT).put("first_chunk", 1).put("chunks", 1)
                .put("size", graph.length).put("sha256", ModelAssembler.sha256(graph));
        String prefix = "model/" + version + "/";
        watcher.accept((prefix + "chunk/0").getBytes(StandardCharsets.UTF_8), artefact);
        watcher.accept((prefix + "chunk/1").getBytes(StandardCharsets.UTF_8), graph);
        watcher.accept((prefix + "manifest").getBytes(StandardCharsets.UTF_8), JSON.writeValueAsBytes(manifest));
    }
}
