"""The pipeline's topics, named after the steps a message takes:
device -> MQTT -> bridge -> raw -> preprocess -> features -> trainer -> models -> scorer -> scores."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamtrain.settings import CommonSettings

HOUR_MS = 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    #: -1: the cluster's default.replication.factor
    replication_factor: int = -1


#: Stream topics keep their records for the retention *from when each record arrived*: the broker
#: stamps records with its own clock (LogAppendTime), so a replayed recording from years ago is not
#: deleted at the next retention check. The reading's event time travels in its ``ts`` field
#: (windows, ksqlDB's TIMESTAMP column and the trainer use that).
ARRIVAL_TIME = {"message.timestamp.type": "LogAppendTime"}
#: Header of a features or sequences record: when its raw reading reached Kafka (epoch ms), so the
#: scorer can tell processing lag (now minus this) from the reading's age (now minus ``ts``).
ARRIVED_HEADER = "streamtrain.arrived_ms"


def pipeline_topics(settings: CommonSettings, partitions: int = 6, retention_hours: int = 72) -> list[TopicSpec]:
    """Every topic the pipeline needs, with partitions and retention suited to its role."""
    stream = {"retention.ms": str(retention_hours * HOUR_MS), "cleanup.policy": "delete", **ARRIVAL_TIME}
    return [
        TopicSpec(settings.topic_raw, partitions, stream),
        TopicSpec(settings.topic_features, partitions, stream),
        TopicSpec(settings.topic_windows, partitions, stream),
        TopicSpec(settings.topic_sequences, partitions, stream),
        TopicSpec(settings.topic_scores, partitions, stream),
        # Dead letters are kept longer: someone has to look at them.
        TopicSpec(
            settings.topic_deadletter,
            3,
            {"retention.ms": str(14 * 24 * HOUR_MS), "cleanup.policy": "delete", **ARRIVAL_TIME},
        ),
        # One partition keeps versions in order; compaction keeps the newest record per key forever.
        TopicSpec(
            settings.topic_models,
            1,
            {
                "cleanup.policy": "compact",
                "retention.ms": "-1",
                "max.message.bytes": str(2 * 1024 * 1024),
                "min.cleanable.dirty.ratio": "0.5",
            },
        ),
    ]
