"""Topics: create the missing ones with the pipeline's settings, or say which command creates them."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamtrain import exitcodes, logs
from streamtrain.kafka.config import client_config
from streamtrain.topics import TopicSpec, pipeline_topics

log = logs.get("kafka")


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout: float = 30.0, **client) -> list[str]:
    """Create missing topics; existing ones are left alone. Returns the names created.

    Replicas: the spec's, or the cluster's ``default.replication.factor`` (one on a single broker,
    three on the local 3-broker stack or a production cluster)."""
    admin = AdminClient(client_config(bootstrap, **client))
    md = admin.list_topics(timeout=timeout)
    existing = set(md.topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config)
            for s in missing
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    # Metadata reaches each broker on its own: wait until every broker shows every topic with leaders, so
    # the next request finds them whichever broker it goes to (DescribeConfigs once met "unknown topic").
    deadline = time.monotonic() + timeout
    names = {s.name for s in missing}
    if len(md.brokers) > 1:
        for b in md.brokers.values():
            # A client that knows one broker only sends its first metadata request there.
            conf = client_config(f"{b.host}:{b.port}", **client)
            _wait_visible(functools.partial(AdminClient, conf), names, deadline, b.id)
    else:
        _wait_visible(lambda: admin, names, deadline)
    for name in created:
        log.info("topic_created", topic=name)
    return created


def _visible(admin: AdminClient, names: set[str], timeout: float) -> bool:
    md = admin.list_topics(timeout=timeout)
    return all(
        n in md.topics and md.topics[n].error is None and all(p.leader >= 0 for p in md.topics[n].partitions.values())
        for n in names
    )


def _wait_visible(
    admin: Callable[[], AdminClient], names: set[str], deadline: float, broker: int | None = None
) -> None:
    """Ask ``admin()`` (a fresh client each time, for one broker) until ``names`` all show with leaders."""
    error = None
    while True:
        try:
            if _visible(admin(), names, max(1.0, min(5.0, deadline - time.monotonic()))):
                return
        except KafkaException as exc:
            error = str(exc)
        if time.monotonic() > deadline:
            log.warning("topics_not_visible", broker=broker, topics=sorted(names), error=error)
            return
        time.sleep(0.1)


class TopicsMissing(RuntimeError):
    """A topic the program needs does not exist and could not be created."""


def create_missing_topics(settings, names: Iterable[str], **client) -> list[str]:
    """Create those of ``names`` (the program's topics) that do not exist yet, with the pipeline's settings
    for their role (``pipeline_topics``; stream topics get as many partitions as the raw topic has), so a
    custom topic name works on first use. Returns the names created; raises TopicsMissing naming the
    command that creates them when Kafka refuses (e.g. no CreateTopics right under ACLs)."""
    wanted = set(names)
    admin = AdminClient(client_config(settings.kafka_bootstrap, **client))
    md = admin.list_topics(timeout=30).topics
    if not wanted - set(md):
        return []
    raw = md.get(settings.topic_raw)
    partitions = len(raw.partitions) if raw is not None and raw.error is None and raw.partitions else 6
    specs = [t for t in pipeline_topics(settings, partitions=partitions) if t.name in wanted]
    try:
        return ensure_topics(settings.kafka_bootstrap, specs, **client)
    except KafkaException as exc:
        missing = sorted(wanted - set(md))
        env = " ".join(
            f"STREAMTRAIN_{f.upper()}={getattr(settings, f)}"
            for f in type(settings).model_fields
            if f.startswith("topic_") and getattr(settings, f) in missing
        )
        raise TopicsMissing(
            f"topic(s) {', '.join(missing)} do not exist and could not be created ({exc.args[0]}); "
            f"create them with the pipeline's settings: `{env} streamtrain stack up` on the local "
            "stack, or as KafkaTopics on Kubernetes (the operator creates those of the resource)"
        ) from None


def require_topics(settings, names: Iterable[str]) -> None:
    """For a program's start: create its missing output topics, or exit (CONFIG) with the error logged."""
    try:
        create_missing_topics(settings, [n for n in names if n])
    except TopicsMissing as exc:
        log.error("topics_missing", error=str(exc))
        raise SystemExit(exitcodes.CONFIG) from None
