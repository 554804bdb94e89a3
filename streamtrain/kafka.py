"""Kafka plumbing shared by all programs: client configs, topic creation, dead letters."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Iterable, Literal

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamtrain import exitcodes, logs
from streamtrain.topics import TopicSpec, pipeline_topics

log = logs.get("kafka")


#: Prefix of the consumer groups of assign-only readers, which never commit: librdkafka still looks up
#: their group's coordinator, so each reading program holds Describe on this prefix (streamtrain.access).
READER_GROUP = "streamtrain-reader"


class KafkaSecurityError(ValueError):
    """The Kafka client security settings are incomplete or point at files that cannot be read."""


class KafkaSecurity(BaseSettings):
    """How every Kafka client of a process authenticates: from the environment (or a mounted Secret's
    files), never from a command line, so a password shows up in no process listing."""

    model_config = SettingsConfigDict(env_prefix="STREAMTRAIN_KAFKA_", extra="ignore")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*")
    username: str | None = Field(None, description="SASL user (a Strimzi KafkaUser's name)")
    password_file: Path | None = Field(None, description="File holding the SASL password (e.g. a mounted Secret key)")
    ca_file: Path | None = Field(None, description="PEM file of the CA that signed the brokers' certificates")

    @model_validator(mode="after")
    def _complete(self) -> "KafkaSecurity":
        if self.security_protocol.startswith("SASL") and not (self.username and self.password_file):
            raise KafkaSecurityError(f"STREAMTRAIN_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                                     "STREAMTRAIN_KAFKA_USERNAME and STREAMTRAIN_KAFKA_PASSWORD_FILE")
        for what, path in (("password file", self.password_file), ("CA file", self.ca_file)):
            if path is not None and not path.is_file():
                raise KafkaSecurityError(f"Kafka {what} {path} does not exist or is not a file")
        return self

    def librdkafka(self) -> dict:
        cfg: dict = {"security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            cfg.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.username,
                        "sasl.password": self.password_file.read_text().strip()})
        if self.security_protocol.endswith("SSL") and self.ca_file:
            cfg["ssl.ca.location"] = str(self.ca_file)
        return cfg


def client_config(bootstrap: str, **overrides) -> dict:
    """The base of every Kafka client: bootstrap plus this process's security settings."""
    return {"bootstrap.servers": bootstrap, **KafkaSecurity().librdkafka(), **overrides}


def producer_config(bootstrap: str, **overrides) -> dict:
    """Idempotent producer: retries never duplicate or reorder within a partition."""
    cfg = {
        **client_config(bootstrap),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": 2 * 1024 * 1024,
    }
    cfg.update(overrides)
    return cfg


def consumer_config(bootstrap: str, group_id: str, **overrides) -> dict:
    """Offsets are stored only after the work on a record is done (``store_offsets``)."""
    cfg = {
        **client_config(bootstrap),
        "group.id": group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    cfg.update(overrides)
    return cfg


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout: float = 30.0, **client) -> list[str]:
    """Create missing topics; existing ones are left alone. Returns the names created."""
    admin = AdminClient(client_config(bootstrap, **client))
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.config) for s in missing],
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
    # Metadata propagates asynchronously; wait until every topic is visible with leaders.
    deadline = time.monotonic() + timeout
    names = {s.name for s in missing}
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout)
        if all(n in md.topics and md.topics[n].error is None
               and all(p.leader >= 0 for p in md.topics[n].partitions.values()) for n in names):
            break
        time.sleep(0.2)
    for name in created:
        log.info("topic_created", topic=name)
    return created


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
        env = " ".join(f"STREAMTRAIN_{f.upper()}={getattr(settings, f)}" for f in type(settings).model_fields
                       if f.startswith("topic_") and getattr(settings, f) in missing)
        raise TopicsMissing(f"topic(s) {', '.join(missing)} do not exist and could not be created ({exc.args[0]}); "
                            f"create them with the pipeline's settings: `{env} streamtrain stack up` on the local "
                            "stack, or as KafkaTopics on Kubernetes (the operator creates those of the resource)") \
            from None


def require_topics(settings, names: Iterable[str]) -> None:
    """For a program's start: create its missing output topics, or exit (CONFIG) with the error logged."""
    try:
        create_missing_topics(settings, [n for n in names if n])
    except TopicsMissing as exc:
        log.error("topics_missing", error=str(exc))
        raise SystemExit(exitcodes.CONFIG) from None


def dead_letter_headers(reason: str, source: str, detail: str = "") -> list[tuple[str, bytes]]:
    """Headers carried by every dead letter: why it was rejected and where it came from."""
    headers = [("streamtrain.reason", reason.encode()), ("streamtrain.source", source.encode())]
    if detail:
        headers.append(("streamtrain.detail", detail[:1000].encode("utf-8", "replace")))
    return headers


def next_offsets(msgs) -> list[TopicPartition]:
    """Per partition of ``msgs``, the offset after the last one: what to commit once they are done."""
    highest: dict[tuple[str, int], int] = {}
    for m in msgs:
        key = (m.topic(), m.partition())
        highest[key] = max(highest.get(key, -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in highest.items()]


def deliver_then_store(producer: Producer, consumer, msgs, errors: list[str], what: str = "outputs") -> None:
    """At least once: wait until every output of ``msgs`` is in Kafka, then store their offsets.

    ``errors`` is the list the producer's delivery callbacks append to. A failed delivery raises:
    without it the offsets must not move, and a restart redoes the batch from the last commit.
    """
    while True:
        remaining = producer.flush(10)
        if errors:
            failed, errors[:] = list(errors), []
            raise RuntimeError(f"{what} delivery failed: {failed[:3]}")
        if remaining == 0:
            break
        log.warning(f"{what}_undelivered", remaining=remaining, action="waiting")
    if msgs:
        consumer.store_offsets(offsets=next_offsets(msgs))


class KafkaHealth:
    """Whether the brokers are reachable, for /readyz. A metadata request from the probe's own thread
    decides (at most once a second): error callbacks alone are not enough, they are served only when
    the main loop polls, and it may be blocked in a transaction call while the broker is away."""

    DOWN = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE)

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self.up = True
        self.last_error = ""
        self.min_interval_s = min_interval_s
        self._checked = 0.0

    def error_cb(self, err: KafkaError) -> None:
        if err.code() in self.DOWN:
            self.up = False
            self.last_error = str(err)
        log.warning("kafka_error", error=str(err))

    def ok(self, probe: Callable[[], object]) -> bool:
        now = time.monotonic()
        if now - self._checked >= self.min_interval_s:
            self._checked = now
            try:
                probe()
                self.up = True
            except Exception:  # noqa: BLE001 - unreachable
                self.up = False
        return self.up


class ExactlyOnce:
    """consume -> produce -> commit as Kafka transactions (``send_offsets_to_transaction``).

    Outputs of the consumed records and their offsets commit together or not at all; readers
    with ``isolation.level=read_committed`` see each output once. A transaction may span several
    batches (fewer commits, more throughput); ``due()`` says when to commit. On an abortable error
    the transaction is aborted and the consumer rewound to its first record, so the work is redone.
    A fatal error (another instance with the same ``transactional.id`` fenced this one) raises.
    """

    def __init__(self, producer: Producer, consumer, commit_interval_s: float, timeout: float = 30.0,
                 on_abort: Callable[[], None] | None = None) -> None:
        self.producer, self.consumer = producer, consumer
        self.on_abort = on_abort  # undo in-memory state that belonged to the aborted transaction
        self.commit_interval_s = commit_interval_s
        self.timeout = timeout
        self.first: dict[tuple[str, int], int] = {}
        self.batch_msgs: list = []
        self.opened_at: float | None = None
        self.commits = self.aborts = 0
        self._init()

    def _init(self) -> None:
        while True:
            try:
                self.producer.init_transactions(self.timeout)
                return
            except KafkaException as exc:
                if exc.args[0].retriable():
                    log.warning("init_transactions_retry", error=str(exc.args[0]))
                    continue
                raise

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def begin(self) -> None:
        if not self.open:
            self.producer.begin_transaction()
            self.opened_at = time.monotonic()

    def add(self, msgs) -> None:
        """Record that ``msgs`` were processed inside the open transaction."""
        for m in msgs:
            self.first.setdefault((m.topic(), m.partition()), m.offset())
        self.batch_msgs.extend(msgs)

    def due(self) -> bool:
        return self.open and time.monotonic() - self.opened_at >= self.commit_interval_s

    def commit(self, exclude=()) -> bool:
        """Commit outputs and offsets together. Returns False if the transaction had to be aborted
        (``exclude``: partitions not to rewind then, e.g. the ones being revoked)."""
        if not self.open:
            return True
        try:
            if self.batch_msgs:
                self._retry(lambda: self.producer.send_offsets_to_transaction(
                    next_offsets(self.batch_msgs), self.consumer.consumer_group_metadata(), self.timeout))
            self._retry(lambda: self.producer.commit_transaction(self.timeout))
        except KafkaException as exc:
            err = exc.args[0]
            if err.txn_requires_abort():
                log.warning("transaction_aborted", error=str(err), records=len(self.batch_msgs))
                self.abort(exclude=exclude)
                return False
            raise
        self.commits += 1
        self._clear()
        return True

    def _retry(self, call, attempts: int = 10) -> None:
        """Retry retriable errors (a broker away for a while), but not forever: after ``attempts``
        the error is raised, the program exits non-zero and its supervisor restarts it."""
        for attempt in range(1, attempts + 1):
            try:
                call()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if attempt < attempts and err.retriable() and not err.txn_requires_abort():
                    log.warning("transaction_retry", error=str(err), attempt=attempt)
                    continue
                raise

    def abort(self, exclude=()) -> None:
        """Abort the open transaction and rewind the consumer to redo its records (except in ``exclude``)."""
        if not self.open:
            return
        self._retry(lambda: self.producer.abort_transaction(self.timeout))
        self.aborts += 1
        if self.on_abort is not None:
            self.on_abort()
        skip = {(tp.topic, tp.partition) for tp in exclude}
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()} - skip
        for (topic, part), offset in self.first.items():
            if (topic, part) in assigned:
                # A failed seek raises: better a restart from the committed offsets than a skipped record.
                self.consumer.seek(TopicPartition(topic, part, offset))
        self._clear()

    def _clear(self) -> None:
        self.first.clear()
        self.batch_msgs = []
        self.opened_at = None


def headers_dict(msg) -> dict[str, str]:
    return {k: (v.decode("utf-8", "replace") if v is not None else "") for k, v in (msg.headers() or [])}


def flush_or_raise(producer: Producer, timeout: float = 30.0) -> None:
    remaining = producer.flush(timeout)
    if remaining:
        raise RuntimeError(f"{remaining} Kafka messages still undelivered after {timeout}s")


#: Errors of a partition whose leadership is still settling (a topic created a moment ago, a broker restarting).
_SETTLING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
             KafkaError._TRANSPORT, KafkaError._TIMED_OUT}


def _end_offset(consumer, partition, deadline: float) -> int:
    """High watermark of one partition, asking again while its leadership settles (until ``deadline``)."""
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=10)[1]
        except KafkaException as exc:
            err = exc.args[0]
            if not (err.retriable() or err.code() in _SETTLING) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_topic(bootstrap: str, topic: str, *, until=None, timeout: float = 30.0,
               isolation: str = "read_committed", **client) -> list:
    """Read a topic from the beginning without a consumer group (nothing is committed).

    Stops when ``until(messages)`` is true, or (without ``until``) once every partition has
    been read to the end offset seen at the start, or when ``timeout`` has passed. Returns confluent_kafka Message objects in arrival order.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(client_config(bootstrap, **{"group.id": READER_GROUP, "enable.auto.commit": False,
                                                    "isolation.level": isolation, "auto.offset.reset": "earliest",
                                                    **client}))
    try:
        md = consumer.list_topics(topic, timeout=10)
        if md.topics[topic].error is not None:
            raise RuntimeError(f"topic {topic}: {md.topics[topic].error}")
        parts = sorted(md.topics[topic].partitions)
        ends = {p: _end_offset(consumer, TopicPartition(topic, p), time.monotonic() + timeout) for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out = []
        deadline = time.monotonic() + timeout
        while True:
            batch = consumer.consume(1000, 0.2)
            for m in batch:
                if m.error():
                    continue
                out.append(m)
            if until is not None:
                if until(out):
                    return out
                if time.monotonic() > deadline:
                    return out
            else:
                # position() moves past transaction markers too, unlike the last offset read.
                pos = consumer.position([TopicPartition(topic, p) for p in parts])
                if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in pos) \
                        or time.monotonic() > deadline:
                    return out
    finally:
        consumer.close()
