package io.streamtrain.ingest;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Where the settings come from: the file beside the jar (local stack), the environment (a Pod). */
class IngestSettingsTest {
    @Test
    void anExtensionWithoutSettingsIsNotConfigured(@TempDir Path folder) {
        assertFalse(IngestSettings.configured(folder, Map.of("STREAMTRAIN_INGEST_TOPIC_RAW", "raw")));
    }

    @Test
    void theFileOrTheBootstrapInTheEnvironmentConfiguresIt(@TempDir Path folder) throws IOException {
        assertTrue(IngestSettings.configured(folder, Map.of("STREAMTRAIN_INGEST_KAFKA_BOOTSTRAP", "k:9092")));
        Files.writeString(folder.resolve(IngestSettings.FILE), "topic.raw=a\n");
        assertTrue(IngestSettings.configured(folder, Map.of()));
    }

    @Test
    void theEnvironmentOverridesTheFile(@TempDir Path folder) throws IOException {
        Files.writeString(folder.resolve(IngestSettings.FILE), "kafka.bootstrap=file:9092\ntopic.raw=a\n");
        IngestSettings s = IngestSettings.load(folder, Map.of(
                "STREAMTRAIN_INGEST_KAFKA_BOOTSTRAP", "env:9092",
                "STREAMTRAIN_INGEST_METRICS_PORT", "9400",
                "STREAMTRAIN_INGEST_PRODUCER_LINGER_MS", "5"));
        assertEquals("env:9092", s.kafkaBootstrap());
        assertEquals("a", s.topicRaw());
        assertEquals(9400, s.metricsPort());
        assertEquals("5", s.producer().getProperty("linger.ms"));
    }

    @Test
    void theMappingIsTheBridgesVariables(@TempDir Path folder) throws IOException {
        IngestSettings s = IngestSettings.load(folder, Map.of());
        assertEquals("streamtrain", s.mapping().name);
        s = IngestSettings.load(folder, Map.of("STREAMTRAIN_INGEST_MAPPING", "tasmota",
                "STREAMTRAIN_INGEST_TOPICS", "plant/{device_id}/SENSOR, ,x/{device_id}"));
        assertEquals("tasmota", s.mapping().name);
        assertEquals(java.util.List.of("plant/{device_id}/SENSOR", "x/{device_id}"), s.mapping().topics);
    }
}
