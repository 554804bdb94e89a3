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

Nothing the raw topic carries crashes it (anything with write access can fill that topic, not only
the bridge): a record it cannot process is dead-lettered with its reason, counted per reason and
logged (one line per batch and reason). Ingestion limits: a ``ts`` further ahead of its arrival than
``max_clock_skew_s`` is ``clock_skew``, a ``seq`` further above its device's newest than
``max_seq_jump`` is ``seq_jump``; neither moves the device's state. Readings too late for any
window are counted and logged. Per-device state is bounded: a device silent for ``window_idle_s``
has its open window emitted by a timer, one silent for ``device_idle_s`` (or the least recently
active beyond ``max_devices``) is evicted, its open window emitted first; evictions are counted
and logged.
"""

from __future__ import annotations

import json
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, Producer
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field

from streamtrain import exitcodes, logs, telemetry
from streamtrain.dedup import FINGERPRINT_HEADER, Deduplicator, fingerprint
from streamtrain.ingest_mapping import is_timestamp_seq
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
from streamtrain.preprocessing.batch import (
    BatchExpressions,
    decode,
    dumps,
    fast_fingerprint,
    msgspec_encode,
)
from streamtrain.preprocessing.compile import EvalError
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.preprocessor.state import rebuild
from streamtrain.settings import CommonSettings
from streamtrain.topics import ARRIVED_HEADER

log = logs.get("preprocess")


class PreprocessSettings(CommonSettings, telemetry.IngestLimits):
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
    max_seq_jump: int = Field(
        1_000_000,
        ge=0,
        description=(
            "exactly_once: a seq more than this far above its device's newest is dead-lettered as seq_jump and "
            "moves nothing (one seq of 10**30 would make every later reading of the device too_old); 0 = no limit"
        ),
    )
    max_devices: int = Field(
        100_000,
        ge=1,
        description=(
            "Most devices whose state (open window, sequence history, seen readings) one replica holds; beyond it "
            "the least recently active device is evicted, its open window emitted first"
        ),
    )
    window_idle_s: float = Field(
        60.0,
        gt=0,
        description="A device silent this many seconds (processing time) has its open window emitted",
    )
    device_idle_s: float = Field(
        3600.0,
        gt=0,
        description=(
            "A device silent this many seconds (processing time) has its state evicted, its open window emitted "
            "first; a device whose readings are all refused for this long starts afresh"
        ),
    )


#: Reasons the preprocessor dead-letters a raw record with (exported at 0 from the start).
DEAD_LETTER_REASONS = ("malformed_json", "too_old", "seq_reused", "seq_jump", "unprocessable", *telemetry.LIMIT_REASONS)
#: A 64-bit counter: the largest seq any reader (Java's long, ksqlDB's BIGINT) holds.
MAX_SEQ = 2**63 - 1


class Preprocessor:
    def __init__(self, s: PreprocessSettings, spec: PreprocessSpec, stop: StopFlag | None = None) -> None:
        self.s, self.spec = s, spec
        self.stop = stop or StopFlag()
        self.engine = Engine(spec)
        self.batch_expressions = BatchExpressions(spec)
        self._skew_limit, self._max_devices = s.max_clock_skew_s, s.max_devices
        self._valid_ids: set[str] = set()  # device ids check_identity accepted (a cache, not state)
        r = self.registry = CollectorRegistry()
        self.m_in = Counter("streamtrain_preprocess_records_in", "Raw records consumed", registry=r)
        self.m_out = Counter("streamtrain_preprocess_features_out", "Feature records produced", registry=r)
        self.m_filtered = Counter("streamtrain_preprocess_filtered", "Records dropped by the spec's filter", registry=r)
        self.m_dead = Counter("streamtrain_preprocess_deadlettered", "Records that failed", ["reason"], registry=r)
        zero_labels(self.m_dead, (*DEAD_LETTER_REASONS, *EvalError.REASONS))
        self.m_late = Counter(
            "streamtrain_preprocess_late",
            "Readings too late for any window (in the features, in no window)",
            registry=r,
        )
        self.m_evicted = Counter(
            "streamtrain_preprocess_devices_evicted", "Devices whose state was evicted", ["why"], registry=r
        )
        zero_labels(self.m_evicted, ("idle", "capacity"))
        self.m_idle_windows = Counter(
            "streamtrain_preprocess_idle_windows_closed",
            "Open windows emitted because their device fell silent",
            registry=r,
        )
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
        # Every device with state here, least recently active first, with when (monotonic) it last had a
        # reading accepted: what the idle timer and the max_devices bound evict by.
        self.activity: OrderedDict[str, float] = OrderedDict()
        self._dropped: dict[str, list[dict]] = {}  # this batch's dead letters per reason, logged once per batch
        self._late: list[dict] = []  # this batch's late readings, logged once per batch
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
        """The batch step: what ``process_records`` does, with the batch decoded at once, the filter and
        derived expressions evaluated over the batch's columns (streamtrain.preprocessing.batch), metrics
        counted once per batch and records written with msgspec. The same outputs in the same order, the
        same dead letters with the same reasons (tests/unit/streamtrain/preprocessing/test_batch.py)."""
        self.m_in.inc(len(msgs))
        records: list = []
        exact: list[bool] = []
        for m in msgs:
            try:
                record, by_msgspec = decode(m.value())
            except Exception as exc:  # noqa: BLE001 - answered per record in _batch_record
                record, by_msgspec = exc, False
            records.append(record)
            exact.append(by_msgspec)
        evaluated = self.batch_expressions.evaluate(records)
        repeats: dict[str, list[tuple[str, int]]] = {"duplicate": [], "reused": []}
        counts = {"out": 0, "filtered": 0, "late": 0, "windows": 0, "sequences": 0, "duplicates": 0}
        now = time.monotonic()  # the batch's readings are active as of now (the idle timer's clock)
        # What every record needs, looked up once per batch (this loop is the preprocessor's hot path).
        engine, dedup, send, activity, valid_ids = self.engine, self.dedup, self._send, self.activity, self._valid_ids
        skew, jump, max_devices = self._skew_limit, self.s.max_seq_jump, self._max_devices
        topic_features, topic_windows, topic_sequences = (
            self.s.topic_features,
            self.s.topic_windows,
            self.s.topic_sequences,
        )
        passthrough, txn_seen, encode = engine.passthrough, self._txn_seen, msgspec_encode
        # Accepted readings make their devices active (what _touch does); when the batch cannot take the devices
        # held beyond max_devices (no eviction then), that is done once per device after the loop.
        touched: list[str] | None = [] if len(activity) + len(msgs) <= max_devices else None
        touched_partitions: list[int] = []
        for m, record, pre, finite in zip(msgs, records, evaluated, exact):
            try:
                if type(record) is not dict:
                    self._not_a_reading(m, record)
                    continue
                device, ts, seq = record.get("device_id"), record.get("ts"), record.get("seq")
                if not (  # the usual identity, checked here; anything else as the record step checks it
                    type(device) is str
                    and device in valid_ids
                    and type(ts) is float
                    and type(seq) is int
                    and seq >= 0
                    and ts - ts == 0.0
                ):
                    identity = self._identity(m, record)
                    if identity is None:
                        continue
                    device, ts, seq = identity
                    if len(valid_ids) >= max_devices:
                        valid_ids.clear()
                    valid_ids.add(device)
                kind, arrived_ms = m.timestamp()
                if (
                    not (kind and arrived_ms > 0)
                    or (skew and ts - arrived_ms / 1000 > skew)
                    or seq > MAX_SEQ
                    # A seq up to the limit is within it of any newest (seqs are >= 0): no look-up needed.
                    or (jump and seq > jump and dedup is not None and seq - (dedup.newest(device) or 0) > jump)
                ):  # rare: the record step's own check says whether and why
                    problem = self._beyond_limits(m, device, ts, seq)
                    if problem is not None:
                        self._dead(m, *problem)
                        continue
                reading = None
                if dedup is not None:
                    reading = fast_fingerprint(record, finite)
                    seen = dedup.check(device, seq, reading)
                    if seen != "new":
                        self._repeated(m, device, seq, seen, repeats)
                        counts["duplicates"] += seen == "duplicate"
                        continue
                    txn_seen.append((device, seq))
                if touched is not None:
                    touched.append(device)
                    touched_partitions.append(m.partition())
                else:
                    self._touch_at(m.partition(), device, now)
                if pre is False:
                    counts["filtered"] += 1
                    continue
                if pre is None:
                    result = engine.process(record)
                else:  # msgspec decoded (finite): the features may come as a struct, written as the dict would be
                    result = engine.process_evaluated(record, pre, finite)
                if result.error is not None:
                    self._dead(m, result.error.reason, str(result.error))
                    continue
                if result.filtered:
                    counts["filtered"] += 1
                    continue
                # finite: no NaN in it (msgspec writes NaN as null)
                features = encode(result.features) if finite else dumps(result.features, passthrough)
                windows, sequences, late = result.windows, result.sequences, result.late
                if late:
                    counts["late"] += 1
                    self._note(self._late, {"device_id": record["device_id"], "ts": record["ts"], "source": _source(m)})
                arrived = [(ARRIVED_HEADER, str(arrived_ms).encode())]
                key = m.key()
                send(
                    topic_features,
                    features,
                    key=key,
                    headers=[*arrived, (FINGERPRINT_HEADER, reading.encode())] if reading else arrived,
                )
                counts["out"] += 1
                if windows:
                    for w in windows:
                        send(topic_windows, dumps(w), key=w["device_id"].encode())
                    counts["windows"] += len(windows)
                if sequences:
                    for q in sequences:
                        send(topic_sequences, dumps(q, () if finite else passthrough), key=key, headers=arrived)
                    counts["sequences"] += len(sequences)
            except Exception as exc:  # noqa: BLE001 - one record must never crash-loop every replica
                self._dead(m, "unprocessable", f"{type(exc).__name__}: {exc}"[:500])
        if touched:
            self._touch_all(touched_partitions, touched, now)
        self.producer.poll(0)
        self.m_out.inc(counts["out"])
        self.m_filtered.inc(counts["filtered"])
        self.m_late.inc(counts["late"])
        self.m_windows.inc(counts["windows"])
        self.m_sequences.inc(counts["sequences"])
        self.m_duplicates.inc(counts["duplicates"])
        self._log_repeats(repeats, msgs)
        self._log_dropped(msgs)

    def _not_a_reading(self, m, record) -> None:
        """A raw record that is no telemetry object: dead-lettered as the record step does."""
        if isinstance(record, BaseException):
            if not isinstance(record, (ValueError, TypeError, RecursionError)):  # TypeError: a record without a value
                raise record
            self._dead(m, "malformed_json", str(record)[:200] or type(record).__name__)
        else:
            self._dead(m, "malformed_json", "not a telemetry object")

    def _identity(self, m, record: dict) -> tuple[str, float, int] | None:
        """A decoded object's identity (device, ts, seq), or None when it was dead-lettered for lacking one."""
        if "device_id" not in record or "ts" not in record:
            self._not_a_reading(m, record)
            return None
        identity = telemetry.check_identity(record)
        if isinstance(identity, telemetry.Rejection):
            self._dead(m, identity.reason, identity.detail)
            return None
        return identity

    def _repeated(self, m, device: str, seq: int, seen: str, repeats) -> None:
        """A reading the de-duplicator has seen (``seen`` is not "new"): a duplicate is noted (dropped, counted
        by the caller and logged per batch); a reused or too old seq is dead-lettered."""
        if seen == "duplicate":
            repeats["duplicate"].append((device, seq))
        elif seen == "reused":
            repeats["reused"].append((device, seq))
            self._dead(m, "seq_reused", _reused_detail(device, seq))
        else:
            self._dead(m, "too_old", f"seq {seq} is {self.dedup.window}+ below the device's newest")

    def process_records(self, msgs) -> None:
        """The record-by-record step the batch step reproduces: the reference of its equivalence test and
        of ``bench/preprocess_cpu.py``."""
        repeats: dict[str, list[tuple[str, int]]] = {"duplicate": [], "reused": []}
        for m in msgs:
            self.m_in.inc()
            try:
                self._record(m, repeats)
            except Exception as exc:  # noqa: BLE001 - one record must never crash-loop every replica
                self._dead(m, "unprocessable", f"{type(exc).__name__}: {exc}"[:500])
        self._log_repeats(repeats, msgs)
        self._log_dropped(msgs)

    def _record(self, m, repeats: dict[str, list[tuple[str, int]]]) -> None:
        try:
            record = json.loads(m.value())
        except (ValueError, TypeError, RecursionError) as exc:  # TypeError: a record without a value
            record = exc
        if type(record) is not dict:
            self._not_a_reading(m, record)
            return
        identity = self._identity(m, record)
        if identity is None:
            return
        device, ts, seq = identity
        problem = self._beyond_limits(m, device, ts, seq)
        if problem is not None:
            self._dead(m, *problem)
            return
        reading = None
        if self.dedup is not None:
            reading = fingerprint(record)
            seen = self.dedup.check(device, seq, reading)
            if seen != "new":
                self._repeated(m, device, seq, seen, repeats)
                if seen == "duplicate":
                    self.m_duplicates.inc()
                return
            self._txn_seen.append((device, seq))
        self._touch(m.partition(), device)
        self._process(m, record, reading)

    def _beyond_limits(self, m, device: str, ts: float, seq: int) -> tuple[str, str] | None:
        """The ingestion limits: how far ahead of its arrival a reading's ts, and how far above its
        device's newest its seq, may be. A reading beyond them would move the device's state where
        every later reading is refused (too_old) or left out of the windows."""
        kind, arrived_ms = m.timestamp()
        skew = self.s.clock_skew(ts, arrived_ms / 1000 if kind and arrived_ms > 0 else time.time())
        if skew is not None:
            return skew.reason, skew.detail
        if seq > MAX_SEQ:
            return "seq_jump", f"seq {seq} does not fit a 64-bit counter"
        newest = self.dedup.newest(device) if self.dedup is not None else None
        if (
            self.s.max_seq_jump
            and newest is not None
            and seq - newest > self.s.max_seq_jump
            # A seq derived from the timestamp (devices without seq) moves with time; the skew limit bounds it.
            and not (self.s.max_clock_skew_s and is_timestamp_seq(ts, seq))
        ):
            return (
                "seq_jump",
                f"seq {seq} is {seq - newest} above the device's newest {newest} (limit {self.s.max_seq_jump})",
            )
        return None

    def _touch(self, partition: int, device: str) -> None:
        """A reading of ``device`` was accepted: it is active now; beyond max_devices the least recently
        active device is evicted."""
        self._touch_at(partition, device, time.monotonic())

    def _touch_at(self, partition: int, device: str, now: float) -> None:
        self.devices.setdefault(partition, set()).add(device)
        self.activity[device] = now
        self.activity.move_to_end(device)
        if len(self.activity) > self.s.max_devices:
            oldest = next(iter(self.activity))
            self._evict([oldest], "capacity")

    def _touch_all(self, partitions: list[int], devices: list[str], now: float) -> None:
        """``_touch_at`` of every (partition, device) in order, where none can evict: the devices end in the
        order of their last reading, all active as of ``now``."""
        if len(set(partitions)) == 1:
            self.devices.setdefault(partitions[0], set()).update(devices)
        else:
            for p, d in zip(partitions, devices):
                self.devices.setdefault(p, set()).add(d)
        activity = self.activity
        for device in reversed(dict.fromkeys(reversed(devices))):
            activity[device] = now
            activity.move_to_end(device)

    def _evict(self, devices: list[str], why: str) -> None:
        """Drop the state of ``devices``, their open windows emitted first (in the open transaction)."""
        self._emit_windows(self.engine.close(devices))
        self.engine.forget(devices)
        if self.dedup is not None:
            self.dedup.forget(devices)
        for d in devices:
            self.activity.pop(d, None)
        for held in self.devices.values():
            held.difference_update(devices)
        self.m_evicted.labels(why).inc(len(devices))
        log.info("devices_evicted", why=why, count=len(devices), first=devices[:3], held=len(self.activity))

    def expire_idle(self, now: float | None = None) -> None:
        """The idle timer: emit the open windows of devices silent for window_idle_s, evict those silent for
        device_idle_s. The least recently active come first, so the walk stops at the first active one."""
        now = time.monotonic() if now is None else now
        to_close, to_evict = [], []
        for device, last in self.activity.items():
            silent = now - last
            if silent < self.s.window_idle_s:
                break
            if device in self.engine.open:
                to_close.append(device)
            if silent >= self.s.device_idle_s:
                to_evict.append(device)
        if not to_close and not to_evict:
            return
        if self.txn is not None:
            self.txn.begin()
        if to_close:
            windows = self.engine.close(to_close)
            self._emit_windows(windows)
            self.m_idle_windows.inc(len(windows))
            log.info("idle_windows_closed", count=len(windows), first=to_close[:3], idle_s=self.s.window_idle_s)
        if to_evict:
            self._evict(to_evict, "idle")

    def _log_dropped(self, msgs) -> None:
        """One line per batch and reason for the dead letters, one for the late readings: what was dropped,
        where from and why, without a line per record (a flood of bad input must not flood the log)."""
        for reason, first in self._dropped.items():
            log.warning(
                "records_deadlettered",
                reason=reason,
                count=first[0]["count"],
                first=[{k: v for k, v in f.items() if k != "count"} for f in first],
                topic=self.s.topic_deadletter,
            )
        self._dropped.clear()
        if self._late:
            log.info(
                "late_readings",
                count=self._late[0]["count"],
                first=[{k: v for k, v in f.items() if k != "count"} for f in self._late],
                why="older than the device's open or last emitted window: in the features, in no window",
            )
            self._late.clear()

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
        if result.late:
            self.m_late.inc()
            self._note(self._late, {"device_id": record["device_id"], "ts": record["ts"], "source": _source(m)})
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
            self.s.topic_deadletter, m.value(), key=m.key(), headers=dead_letter_headers(reason, _source(m), detail)
        )
        self.m_dead.labels(reason).inc()
        if reason != "seq_reused":  # _log_repeats has its line
            self._note(self._dropped.setdefault(reason, []), {"source": _source(m), "detail": detail[:200]})

    @staticmethod
    def _note(first: list[dict], what: dict) -> None:
        """Keep the first three of a batch's events for its log line; the first one counts them all."""
        if not first:
            first.append({**what, "count": 0})
        elif len(first) < 3:
            first.append(what)
        first[0]["count"] += 1

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
        for d in gone:
            self.activity.pop(d, None)

    def _restore_state(self, partitions: list[int]) -> None:
        now = time.monotonic()
        for p, devices in rebuild(self.s, self.engine, self.dedup, partitions).items():
            self.devices.setdefault(p, set()).update(devices)
            for d in devices:  # the idle timer and the bound see restored devices too
                self.activity.setdefault(d, now)

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
        last_progress = last_expiry = time.monotonic()
        try:
            while not self.stop.is_set():
                msgs = [m for m in self.consumer.consume(self.s.batch_size, 0.2) if not m.error()]
                if time.monotonic() - last_expiry >= 1.0:
                    last_expiry = time.monotonic()
                    self.expire_idle(last_expiry)
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


def _reused_detail(device: str, seq: int) -> str:
    return (
        f"device {device} seq {seq} already carried a different reading; "
        "a replay must continue the device's seqs (a seq column, or `simulate --csv`, which "
        "continues after the last seq it published)"
    )


def _source(m) -> str:
    return f"kafka:{m.topic()}/{m.partition()}@{m.offset()}"
