package streamtrain.scorer;

import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

/**
 * streamtrain/start_position.py for the Kafka Streams scorer (its application id is the group):
 * {@code earliest}/{@code latest} move the group's committed offsets on the features topic to the
 * offsets read when the scorer started, before Streams joins; {@code committed} resumes. With
 * {@code startAtOnce} only a group that has committed nothing on the topic is moved (restarts resume).
 * Kafka refuses to move a group with running members: then it joins them at the committed offsets.
 */
final class StartPosition {
    private static final Log LOG = new Log("start_position");

    private StartPosition() {}

    /** The offsets {@code startAt} means for the topic's partitions, read now (empty for committed). */
    static Map<TopicPartition, Long> snapshot(Settings s) throws Exception {
        if (s.startAt().equals("committed")) {
            return Map.of();
        }
        try (Admin admin = Admin.create(config(s))) {
            java.util.List<org.apache.kafka.common.TopicPartitionInfo> partitions;
            try {
                partitions = admin.describeTopics(java.util.List.of(s.topicFeatures())).allTopicNames().get()
                        .get(s.topicFeatures()).partitions();
            } catch (ExecutionException e) {  // no topic yet: whatever arrives on it is new
                LOG.info("start_position_snapshot", "topic", s.topicFeatures(), "error", String.valueOf(e.getCause()));
                return Map.of();
            }
            OffsetSpec spec = s.startAt().equals("earliest") ? OffsetSpec.earliest() : OffsetSpec.latest();
            Map<TopicPartition, OffsetSpec> ask = new HashMap<>();
            partitions.forEach(p -> ask.put(new TopicPartition(s.topicFeatures(), p.partition()), spec));
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> got = admin.listOffsets(ask).all().get();
            return got.entrySet().stream().collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
        }
    }

    static void apply(Settings s, Map<TopicPartition, Long> offsets) throws Exception {
        if (s.startAt().equals("committed") || offsets.isEmpty()) {
            LOG.info("start_position", "group", s.groupId(), "topic", s.topicFeatures(), "start_at", s.startAt());
            return;
        }
        try (Admin admin = Admin.create(config(s))) {
            Map<TopicPartition, OffsetAndMetadata> before = admin.listConsumerGroupOffsets(s.groupId())
                    .partitionsToOffsetAndMetadata().get();
            boolean committed = before.keySet().stream().anyMatch(tp -> tp.topic().equals(s.topicFeatures()));
            if (s.startAtOnce() && committed) {
                LOG.info("start_position", "group", s.groupId(), "topic", s.topicFeatures(), "start_at", "committed",
                        "asked", s.startAt(), "why", "the group has committed offsets: a restart resumes (start_at_once)");
                return;
            }
            Map<TopicPartition, OffsetAndMetadata> target = new HashMap<>();
            offsets.forEach((tp, o) -> target.put(tp, new OffsetAndMetadata(o)));
            try {
                admin.alterConsumerGroupOffsets(s.groupId(), target).all().get();
            } catch (ExecutionException e) {
                LOG.warning("start_position_not_applied", "group", s.groupId(), "topic", s.topicFeatures(),
                        "start_at", s.startAt(), "error", String.valueOf(e.getCause()),
                        "action", "joining the group's running members at its committed offsets");
                return;
            }
            long skipped = 0;
            long again = 0;
            for (var e : offsets.entrySet()) {
                OffsetAndMetadata b = before.get(e.getKey());
                long was = b == null ? 0 : b.offset();
                skipped += Math.max(0, e.getValue() - was);
                again += b == null ? 0 : Math.max(0, was - e.getValue());
            }
            LOG.info("start_position", "group", s.groupId(), "topic", s.topicFeatures(), "start_at", s.startAt(),
                    "offsets_skipped", skipped, "offsets_to_read_again", again);
        }
    }

    private static Properties config(Settings s) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, s.kafkaBootstrap());
        p.putAll(s.kafkaSecurity());
        return p;
    }
}
