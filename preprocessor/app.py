"""raw -> features/windows with the embedded engine, at least once, offsets after delivery."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field

from streamtrain import logs
from streamtrain.kafka import consumer_config, dead_letter_headers, producer_config
from streamtrain.lifecycle import StopFlag
from streamtrain.metrics import MetricsServer
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.settings import CommonSettings

log = logs.get("preprocess")


class PreprocessSettings(CommonSettings):
    """Settings of `streamtrain preprocess` (env prefix STREAMTRAIN_)."""

    spec_path: Path | None = Field(None, description="Preprocessing spec (YAML/JSON); default: the built-in spec")
    group_id: str = Field("streamtrain-preprocess", description="Consumer group of the preprocessors")
    batch_size: int = Field(1000, ge=1, description="Most raw records per batch")


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
        self.m_windows = Counter("streamtrain_preprocess_windows_out", "Window aggregates produced", registry=r)
        self.m_sequences = Counter("streamtrain_preprocess_sequences_out", "Per-device sequences produced", registry=r)
        self.consumer = Consumer(consumer_config(s.kafka_bootstrap, s.group_id, **{"enable.auto.commit": True}))
        self.producer = Producer(producer_config(s.kafka_bootstrap, **{"linger.ms": 5}))
        self.errors: list[str] = []

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))

    def _emit_windows(self, windows: list[dict]) -> None:
        for w in windows:
            self.producer.produce(self.s.topic_windows, json.dumps(w).encode(), key=w["device_id"].encode(),
                                  timestamp=w["window_start_ms"], on_delivery=self._delivered)
        self.m_windows.inc(len(windows))

    def process_batch(self, msgs) -> None:
        for m in msgs:
            self.m_in.inc()
            try:
                record = json.loads(m.value())
                if not isinstance(record, dict) or "device_id" not in record or "ts" not in record:
                    raise ValueError("not a telemetry object")
            except ValueError as exc:
                self._dead(m, "malformed_json", str(exc))
                continue
            result = self.engine.process(record)
            if result.error is not None:
                self._dead(m, result.error.reason, str(result.error))
                continue
            if result.filtered:
                self.m_filtered.inc()
                continue
            f = result.features
            self.producer.produce(self.s.topic_features, json.dumps(f).encode(), key=m.key(),
                                  timestamp=int(float(f["ts"]) * 1000), on_delivery=self._delivered)
            self.m_out.inc()
            self._emit_windows(result.windows)
            for q in result.sequences:
                self.producer.produce(self.s.topic_sequences, json.dumps(q, separators=(",", ":")).encode(),
                                      key=m.key(), timestamp=int(float(q["ts"]) * 1000), on_delivery=self._delivered)
            self.m_sequences.inc(len(result.sequences))
            self.producer.poll(0)

    def _dead(self, m, reason: str, detail: str) -> None:
        self.producer.produce(self.s.topic_deadletter, m.value(), key=m.key(), on_delivery=self._delivered,
                              headers=dead_letter_headers(reason, f"kafka:{m.topic()}/{m.partition()}@{m.offset()}",
                                                          detail))
        self.m_dead.labels(reason).inc()

    def _commit_after_delivery(self, msgs) -> None:
        while self.producer.flush(10):
            log.warning("outputs_undelivered", action="waiting")
        if self.errors:
            errors, self.errors = self.errors, []
            raise RuntimeError(f"output delivery failed: {errors[:3]}")
        highest: dict[int, int] = defaultdict(lambda: -1)
        for m in msgs:
            highest[m.partition()] = max(highest[m.partition()], m.offset())
        self.consumer.store_offsets(offsets=[TopicPartition(msgs[0].topic(), p, o + 1) for p, o in highest.items()])

    def run(self) -> int:
        server = MetricsServer(self.registry, self.s.metrics_port).start() if self.s.metrics_port else None
        self.consumer.subscribe([self.s.topic_raw])
        log.info("preprocess_started", raw_topic=self.s.topic_raw, features_topic=self.s.topic_features,
                 windows_topic=self.s.topic_windows, features=self.spec.feature_names,
                 window_s=self.spec.windows.size_seconds if self.spec.windows else None,
                 sequences_topic=self.s.topic_sequences if self.spec.sequences else None,
                 sequence_length=self.spec.sequences.length if self.spec.sequences else None)
        last_progress = time.monotonic()
        try:
            while not self.stop.is_set():
                msgs = [m for m in self.consumer.consume(self.s.batch_size, 0.2) if not m.error()]
                if not msgs:
                    continue
                self.process_batch(msgs)
                self._commit_after_delivery(msgs)
                if time.monotonic() - last_progress > 10:
                    last_progress = time.monotonic()
                    log.info("preprocess_progress", records_in=self.m_in._value.get(),
                             features_out=self.m_out._value.get(), filtered=self.m_filtered._value.get())
            return 0
        finally:
            # Open windows are emitted on a clean stop (they would otherwise wait for the next record).
            self._emit_windows(self.engine.flush())
            self.producer.flush(30)
            try:
                self.consumer.commit(asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - nothing stored is fine
                log.debug("final_commit", detail=str(exc))
            self.consumer.close()
            if server:
                server.stop()
            log.info("preprocess_stopped", reason=self.stop.signal_name, records_in=self.m_in._value.get(),
                     features_out=self.m_out._value.get())
