"""raw -> features/windows with the embedded engine.

Exactly once (default): features, windows, dead letters and the raw offsets commit as one Kafka
transaction. Repeated readings (same device, seq and content, which at-least-once ingestion
delivers after a bridge crash or a broker restart) are dropped and logged; a different reading
under a (device, seq) already seen is dead-lettered as ``seq_reused``. The seen readings (with a
fingerprint of each, carried in a header of its features record), the open windows and the
sequence histories are rebuilt from the committed windows and features topics whenever partitions
are assigned (preprocessor/state.py), so they survive restarts and move with a partition from one
replica to another; a revoked partition's devices are forgotten here, never emitted.
At least once: outputs are flushed, then the offsets stored; a crash repeats records.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, Producer
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field

from streamtrain import exitcodes, logs
from streamtrain.dedup import FINGERPRINT_HEADER, Deduplicator, fingerprint
from streamtrain.kafka import (
    ExactlyOnce,
    KafkaHealth,
    client_config,
    consumer_config,
    dead_letter_headers,
    deliver_then_store,
    producer_config,
)
from streamtrain.lag import ConsumerLag
from streamtrain.lifecycle import StopFlag
from streamtrain.metrics import MetricsServer, zero_labels
from streamtrain.preprocessing.compile import EvalError
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.preprocessor.state import rebuild
from streamtrain.settings import CommonSettings
from streamtrain.topics import ARRIVED_HEADER

log = logs.get("preprocess")


class PreprocessSettings(CommonSettings):
    """Settings of `streamtrain preprocess` (env prefix STREAMTRAIN_)."""

    spec_path: Path | None = Field(None, description="Preprocessing spec (YAML/JSON); default: the built-in spec")
    group_id: str = Field("streamtrain-preprocess", description="Consumer group of the preprocessors")
    batch_size: int = Field(1000, ge=1, description="Most raw records per batch")
    instance_id: str = Field(default_factory=socket.gethostname, description="Name of this replica (transactional id)")
    guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description=(
            "exactly_once: outputs and raw offsets in one Kafka transaction, repeated readings dropped; "
            "at_least_once: no transactions, no de-duplication"
        ),
    )
    transaction_interval_ms: int = Field(100, ge=1, description="exactly_once: longest time a transaction stays open")
    dedup_window: int = Field(
        4096,
        ge=0,
        description=(
            "exactly_once: per device, seqs this far below the highest seen are remembered to drop repeats and "
            "dead-letter reused seqs (0 = off)"
        ),
    )
    dedup_restore_records: int = Field(
        50000,
        ge=0,
        description=(
            "Newest records per features (and windows) partition read back to rebuild the seen readings, open "
            "windows and sequence histories on assignment (0 = none)"
        ),
    )


class Preprocessor:
    def __init__(self, s: PreprocessSettings, spec: PreprocessSpec, stop: StopFlag | None = None) -> None:
        self.s, self.spec = s, spec
        self.stop = stop or StopFlag()
        self.engine = Engine(spec)
        r = self.registry = CollectorRegistry()
        self.m_in = Counter("streamtrain_preprocess_records_in", "Raw records consumed", registry=r)
        self.m_out = Counter("streamtrain_preprocess_features_out", "Feature records produced", registry=r)
        self.m_filtered = Counter("streamtrain_preprocess_filtered", "Records dropped by the spec's filter", registry=r)
        self.m_dead = Counter("streamtrain_preprocess_deadlettered", "Records that failed", ["reason"], registry=r)
        zero_labels(self.m_dead, ("malformed_json", "too_old", *EvalError.REASONS))
        self.m_windows = Counter("streamtrain_preprocess_windows_out", "Window aggregates produced", registry=r)
        self.m_duplicates = Counter("streamtrain_preprocess_duplicates", "Repeated readings dropped", registry=r)
        self.lag = ConsumerLag(r, s.group_id)
        self.kafka_health = KafkaHealth()
        self.exactly_once = s.guarantee == "exactly_once"
        consumer_extra: dict[str, Any] = {"error_cb": self.kafka_health.error_cb}
        producer_extra: dict[str, Any] = {"linger.ms": 5, "error_cb": self.kafka_health.error_cb}
        if self.exactly_once:
            consumer_extra.update({"enable.auto.commit": False, "isolation.level": "read_committed"})
            producer_extra.update({"transactional.id": f"{s.group_id}.{s.instance_id}"})
        else:
            consumer_extra["enable.auto.commit"] = True
        self.consumer = Consumer(consumer_config(s.kafka_bootstrap, s.group_id, **consumer_extra))
        self.lag.start_refresh(client_config(s.kafka_bootstrap))
        self.producer = Producer(producer_config(s.kafka_bootstrap, **producer_extra))
        self.txn: ExactlyOnce | None = None
        self.dedup = Deduplicator(s.dedup_window) if self.exactly_once and s.dedup_window else None
        self._txn_seen: list[tuple[str, int]] = []  # readings first seen in the open transaction
        self.devices: dict[int, set[str]] = {}  # per raw partition, the devices whose state is held here
        self.m_sequences = Counter("streamtrain_preprocess_sequences_out", "Per-device sequences produced", registry=r)
        self.errors: list[str] = []

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))

    def _emit_windows(self, windows: list[dict]) -> None:
        for w in windows:
            self._send(self.s.topic_windows, json.dumps(w).encode(), key=w["device_id"].encode())
        self.m_windows.inc(len(windows))

    def process_batch(self, msgs) -> None:
        repeats: dict[str, list[tuple[str, int]]] = {"duplicate": [], "reused": []}
        for m in msgs:
            self.m_in.inc()
            if m.key():
                self.devices.setdefault(m.partition(), set()).add(m.key().decode("utf-8", "replace"))
            try:
                record = json.loads(m.value())
                if not isinstance(record, dict) or "device_id" not in record or "ts" not in record:
                    raise ValueError("not a telemetry object")
            except (ValueError, RecursionError) as exc:
                self._dead(m, "malformed_json", str(exc)[:200] or type(exc).__name__)
                continue
            reading = None
            if self.dedup is not None and isinstance(record.get("seq"), int):
                device, seq, reading = str(record["device_id"]), record["seq"], fingerprint(record)
                seen = self.dedup.check(device, seq, reading)
                if seen == "duplicate":
                    self.m_duplicates.inc()
                    repeats["duplicate"].append((device, seq))
                    continue
                if seen == "reused":
                    repeats["reused"].append((device, seq))
                    self._dead(
                        m,
                        "seq_reused",
                        f"device {device} seq {seq} already carried a different reading; "
                        "a replay must continue the device's seqs (a seq column, or `simulate --csv`, which "
                        "continues after the last seq it published)",
                    )
                    continue
                if seen == "too_old":
                    self._dead(m, "too_old", f"seq {seq} is {self.dedup.window}+ below the device's newest")
                    continue
                self._txn_seen.append((device, seq))
            self._process(m, record, reading)
        self._log_repeats(repeats, msgs)

    def _log_repeats(self, repeats: dict[str, list[tuple[str, int]]], msgs) -> None:
        """One line per batch and kind: a replay of thousands of readings must not flood the log."""
        where = f"{msgs[0].topic()}/{msgs[0].partition()}@{msgs[0].offset()}" if msgs else ""
        if repeats["duplicate"]:
            log.info(
                "duplicates_dropped",
                count=len(repeats["duplicate"]),
                first=repeats["duplicate"][:3],
                batch_from=where,
                why="the same reading (device, seq and content) again: at-least-once redelivery",
            )
        if repeats["reused"]:
            log.warning(
                "seq_reused_deadlettered",
                count=len(repeats["reused"]),
                first=repeats["reused"][:3],
                batch_from=where,
                topic=self.s.topic_deadletter,
                why="a different reading under a (device, seq) already seen",
            )

    def _process(self, m, record: dict, reading: str | None) -> None:
        result = self.engine.process(record)
        if result.error is not None:
            self._dead(m, result.error.reason, str(result.error))
            return
        if result.filtered:
            self.m_filtered.inc()
            return
        # Outputs are stamped with their arrival (the topics append with LogAppendTime): retention counts
        # from arrival. Event time stays in `ts`; when the reading reached Kafka travels in a header.
        arrived = [(ARRIVED_HEADER, str(m.timestamp()[1]).encode())]
        headers = arrived + ([(FINGERPRINT_HEADER, reading.encode())] if reading else [])
        self._send(self.s.topic_features, json.dumps(result.features).encode(), key=m.key(), headers=headers)
        self.m_out.inc()
        self._emit_windows(result.windows)
        for q in result.sequences:
            self._send(
                self.s.topic_sequences, json.dumps(q, separators=(",", ":")).encode(), key=m.key(), headers=arrived
            )
        self.m_sequences.inc(len(result.sequences))
        self.producer.poll(0)

    def _dead(self, m, reason: str, detail: str) -> None:
        self._send(
            self.s.topic_deadletter,
            m.value(),
            key=m.key(),
            headers=dead_letter_headers(reason, f"kafka:{m.topic()}/{m.partition()}@{m.offset()}", detail),
        )
        self.m_dead.labels(reason).inc()

    def _forget_uncommitted(self) -> None:
        """An aborted transaction's records come again: the state they changed goes back to the committed."""
        if self.dedup is not None:
            for device, seq in self._txn_seen:
                self.dedup.remove(device, seq)
        self._txn_seen.clear()
        self.errors.clear()
        if self.engine.size or self.engine.seq_length:
            # Windows and histories cannot be undone record by record: rebuilt from what was committed.
            held = list(self.devices)
            self._drop_state(held)
            self._restore_state(held)

    def _commit(self, exclude=()) -> None:
        if self.txn.commit(exclude=exclude):
            self._txn_seen.clear()
            self.errors.clear()

    def _send(self, topic: str, value: bytes, **kw) -> None:
        while True:
            try:
                self.producer.produce(topic, value, on_delivery=self._delivered, **kw)
                return
            except BufferError:
                self.producer.poll(0.01)

    # ------------------------------------------------------------ exactly once
    def _on_assign(self, consumer, partitions) -> None:
        if partitions and (self.dedup is not None or self.engine.size or self.engine.seq_length):
            self._restore_state([p.partition for p in partitions])
        log.info("partitions_assigned", partitions=[p.partition for p in partitions])

    def _on_revoke(self, consumer, partitions) -> None:
        if self.txn is not None:
            self._commit(exclude=partitions)
        self._forget(partitions)
        log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    def _on_lost(self, consumer, partitions) -> None:
        if self.txn is not None:
            self.txn.abort(exclude=partitions)
        self._forget(partitions)
        log.warning("partitions_lost", partitions=[p.partition for p in partitions])

    def _forget(self, partitions) -> None:
        """The new owner of ``partitions`` rebuilds their devices' state; holding it here would go stale."""
        self.lag.forget(partitions)
        self._drop_state([p.partition for p in partitions])

    def _drop_state(self, partitions: list[int]) -> None:
        gone = set().union(*(self.devices.pop(p, set()) for p in partitions)) if partitions else set()
        self.engine.forget(gone)
        if self.dedup is not None:
            self.dedup.forget(gone)

    def _restore_state(self, partitions: list[int]) -> None:
        for p, devices in rebuild(self.s, self.engine, self.dedup, partitions).items():
            self.devices.setdefault(p, set()).update(devices)

    def ready(self) -> bool:
        return self.kafka_health.ok(lambda: self.consumer.list_topics(self.s.topic_raw, timeout=2))

    def run(self) -> int:
        server = MetricsServer(self.registry, self.s.metrics_port, self.ready).start() if self.s.metrics_port else None
        if self.exactly_once:
            self.txn = ExactlyOnce(
                self.producer, self.consumer, self.s.transaction_interval_ms / 1000, on_abort=self._forget_uncommitted
            )
        self.consumer.subscribe(
            [self.s.topic_raw], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "preprocess_started",
            raw_topic=self.s.topic_raw,
            features_topic=self.s.topic_features,
            windows_topic=self.s.topic_windows,
            features=self.spec.feature_names,
            window_s=self.spec.windows.size_seconds if self.spec.windows else None,
            sequences_topic=self.s.topic_sequences if self.spec.sequences else None,
            sequence_length=self.spec.sequences.length if self.spec.sequences else None,
        )
        last_progress = time.monotonic()
        try:
            while not self.stop.is_set():
                msgs = [m for m in self.consumer.consume(self.s.batch_size, 0.2) if not m.error()]
                if msgs:
                    if self.txn is not None:
                        self.txn.begin()
                    self.process_batch(msgs)
                    if self.txn is None:
                        deliver_then_store(self.producer, self.consumer, msgs, self.errors)
                    else:
                        self.txn.add(msgs)
                if self.txn is not None and (self.txn.due() or not msgs):
                    self._commit()  # a failed delivery aborts the transaction (rewound, redone)
                self.lag.update(self.consumer)
                if not msgs:
                    continue
                if time.monotonic() - last_progress > 10:
                    last_progress = time.monotonic()
                    log.info(
                        "preprocess_progress",
                        records_in=self.m_in._value.get(),
                        features_out=self.m_out._value.get(),
                        filtered=self.m_filtered._value.get(),
                    )
            return exitcodes.OK
        except KafkaException as exc:
            log.error("preprocess_exiting", reason=f"Kafka: {exc.args[0]}")
            return exitcodes.KAFKA
        finally:
            # Open windows are emitted on a clean stop (they would otherwise wait for the next record).
            try:
                if self.txn is not None:
                    self.txn.begin()
                self._emit_windows(self.engine.flush())
                if self.txn is not None:
                    self._commit()
                else:
                    self.producer.flush(30)
                    self.consumer.commit(asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - nothing stored is fine
                log.debug("final_commit", detail=str(exc))
            if server:
                server.stop()  # first: a scrape asks ready(), which must not meet a closing consumer
            self.lag.close()
            self.consumer.close()
            log.info(
                "preprocess_stopped",
                reason=self.stop.signal_name,
                records_in=self.m_in._value.get(),
                features_out=self.m_out._value.get(),
            )
