"""Where a consumer group starts: ``committed``, ``earliest`` or ``latest``.

``committed`` (the default) resumes from the group's committed offsets; partitions the group never
committed start at the oldest record. ``earliest`` and ``latest`` move the group's committed offsets
to the oldest / newest record of every partition *before* it joins, from a snapshot of the offsets
taken when the program started, so a scorer started with ``latest`` scores exactly what arrives after
it started; from then on it commits as usual (a later restart with ``committed`` resumes where it
stopped). Kafka refuses to move the offsets of a group that has running members: then nothing is
moved, the program joins them and resumes from the committed offsets, and says so in its log.
"""

from __future__ import annotations

from typing import Literal

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streamtrain import logs
from streamtrain.kafka import READER_GROUP, client_config, watermarks

log = logs.get("start_position")

StartAt = Literal["committed", "earliest", "latest"]
START_AT_HELP = (
    "Where the consumer group starts: committed (default: resume from its committed offsets; "
    "partitions it never committed start at the oldest record), earliest (the oldest retained "
    "record, ignoring committed offsets) or latest (only records that arrive after this start). "
    "earliest/latest move the group's offsets before joining and are refused (logged) while "
    "other members of the group run."
)


def snapshot(bootstrap: str, topics: list[str], start_at: StartAt) -> dict[str, list[TopicPartition]]:
    """The offsets ``start_at`` means for each existing topic, read now: {topic: [TopicPartition]}."""
    if start_at == "committed":
        return {}
    from confluent_kafka import Consumer  # noqa: PLC0415

    consumer = Consumer(client_config(bootstrap, **{"group.id": READER_GROUP, "enable.auto.commit": False}))
    try:
        md = consumer.list_topics(timeout=10).topics
        out = {}
        for topic in topics:
            if topic not in md or md[topic].error is not None:
                continue
            offsets = []
            for p in sorted(md[topic].partitions):
                low, high = watermarks(consumer, TopicPartition(topic, p))
                offsets.append(TopicPartition(topic, p, low if start_at == "earliest" else high))
            out[topic] = offsets
        return out
    finally:
        consumer.close()


def apply(
    bootstrap: str,
    group: str,
    topic: str,
    start_at: StartAt,
    taken: dict[str, list[TopicPartition]],
    new_group_only: bool = False,
) -> bool:
    """Move ``group``'s committed offsets on ``topic`` to the snapshot ``taken`` (see ``snapshot``).
    With ``new_group_only``, only if the group has committed nothing on ``topic`` yet (a long-running
    service whose restarts must resume, not skip). Returns whether they moved; logs how many offsets
    (records and transaction markers) are skipped or read again."""
    if start_at == "committed":
        log.info("start_position", group=group, topic=topic, start_at=start_at)
        return False
    offsets = taken.get(topic)
    if offsets is None:  # the topic did not exist at the snapshot: everything on it is new
        offsets = snapshot(bootstrap, [topic], "earliest").get(topic, [])
    admin = AdminClient(client_config(bootstrap))
    before = committed(admin, group, topic)
    if new_group_only and before:
        log.info(
            "start_position",
            group=group,
            topic=topic,
            start_at="committed",
            asked=start_at,
            why="the group has committed offsets: a restart resumes (start_at_once)",
        )
        return False
    try:
        future = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)])[group]
        future.result(timeout=30)
    except KafkaException as exc:
        log.warning(
            "start_position_not_applied",
            group=group,
            topic=topic,
            start_at=start_at,
            error=str(exc.args[0]),
            action="joining the group's running members at its committed offsets",
        )
        return False
    moved = {tp.partition: tp.offset for tp in offsets}
    skipped = sum(max(0, moved[p] - before.get(p, 0)) for p in moved)
    again = sum(max(0, before[p] - moved[p]) for p in moved if p in before)
    log.info(
        "start_position",
        group=group,
        topic=topic,
        start_at=start_at,
        offsets=moved,
        offsets_skipped=skipped,
        offsets_to_read_again=again,
    )
    return True


def committed(admin: AdminClient, group: str, topic: str) -> dict[int, int]:
    """The offsets ``group`` has committed on ``topic``, by partition (empty when the broker cannot say)."""
    try:
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=30)
    except KafkaException:
        return {}
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.topic == topic and tp.offset >= 0}
