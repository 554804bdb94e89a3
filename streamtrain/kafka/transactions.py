"""Exactly once: consume -> produce -> commit as Kafka transactions."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaException, Producer, TopicPartition

from streamtrain import logs

log = logs.get("kafka")


class ExactlyOnce:
    """consume -> produce -> commit as Kafka transactions (``send_offsets_to_transaction``).

    Outputs of the consumed records and their offsets commit together or not at all; readers
    with ``isolation.level=read_committed`` see each output once. A transaction may span several
    batches (fewer commits, more throughput); ``due()`` says when to commit. On an abortable error
    the transaction is aborted and the consumer rewound to its first record, so the work is redone.
    A fatal error (another instance with the same ``transactional.id`` fenced this one) raises.
    """

    def __init__(
        self,
        producer: Producer,
        consumer,
        commit_interval_s: float,
        timeout: float = 30.0,
        on_abort: Callable[[], None] | None = None,
    ) -> None:
        self.producer, self.consumer = producer, consumer
        self.on_abort = on_abort  # undo in-memory state that belonged to the aborted transaction
        self.commit_interval_s = commit_interval_s
        self.timeout = timeout
        self.first: dict[tuple[str, int], int] = {}  # per partition, its first offset in the transaction
        self.last: dict[tuple[str, int], int] = {}  # and its last one (a partition's records come in order)
        self.records = 0
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
        """Record that ``msgs`` (consumed in order) were processed inside the open transaction."""
        # One pass, no list of every message kept: the scorer adds ~4,000 records per transaction.
        first, last = self.first, self.last
        for m in msgs:
            key, offset = (m.topic(), m.partition()), m.offset()
            if key not in first:
                first[key] = offset
            last[key] = offset
        self.records += len(msgs)

    def due(self) -> bool:
        return self.open and time.monotonic() - self.opened_at >= self.commit_interval_s

    def commit(self, exclude=()) -> bool:
        """Commit outputs and offsets together. Returns False if the transaction had to be aborted
        (``exclude``: partitions not to rewind then, e.g. the ones being revoked)."""
        if not self.open:
            return True
        try:
            if self.last:
                offsets = [TopicPartition(t, p, o + 1) for (t, p), o in self.last.items()]
                self._retry(
                    lambda: self.producer.send_offsets_to_transaction(
                        offsets, self.consumer.consumer_group_metadata(), self.timeout
                    )
                )
            self._retry(lambda: self.producer.commit_transaction(self.timeout))
        except KafkaException as exc:
            err = exc.args[0]
            if err.txn_requires_abort():
                log.warning("transaction_aborted", error=str(err), records=self.records)
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
        self.last.clear()
        self.records = 0
        self.opened_at = None
