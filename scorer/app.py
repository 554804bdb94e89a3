"""The live scorer: features topic -> micro-batches -> champion model -> scores topic.

Per batch: consume, decode, score with the champion (and the challenger in shadow), produce
the scores. Then, exactly once (the default): the scores, dead letters and the consumed offsets
commit as one Kafka transaction (every ``transaction_interval_ms``), so readers of the scores
topic with read_committed see each input scored once whatever crashes. At least once: wait for
delivery, then store the batch's offsets (committed in the background); a crash re-scores the
records since the last commit. Model switches happen only between batches. Records that cannot
be scored (missing or non-finite features, not JSON) go to the dead-letter topic with the reason.

A model that fails on a live batch after its load and warm-up passed fails before anything of the batch is
produced: its version is marked bad, the previous champion (or the rule's next pick) takes over and scores
the same batch; with nothing left to serve, the batch's records are dead-lettered (``model_failed``).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Literal

import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field

from streamtrain import exitcodes, logs, start_position
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
from streamtrain.metrics import BatchHistogram, MetricsServer, zero_labels
from streamtrain.model import Assessment, BadInput, LoadedModel
from streamtrain.modelsign import ModelTrust
from streamtrain.scorer.models import HEALTH_PROBLEMS, ModelRegistry, ModelWatcher, unhealthy_reason
from streamtrain.scorer.records import BatchDecoder, Decoded, arrivals_s, event_times_s, score_records
from streamtrain.settings import CommonSettings
from streamtrain.start_position import START_AT_HELP, StartAt

log = logs.get("scorer")


class ScoreSettings(CommonSettings):
    """Settings of `streamtrain score` (env prefix STREAMTRAIN_)."""

    group_id: str = Field("streamtrain-scorer", description="Consumer group of the scorer replicas")
    instance_id: str = Field(default_factory=socket.gethostname, description="Name of this replica in logs and scores")
    batch_size: int = Field(512, ge=1, description="Most records scored in one micro-batch")
    batch_wait_ms: int = Field(50, ge=0, description="Longest wait to fill a micro-batch")
    challenger: bool = Field(False, description="New versions score in shadow until promoted (champion/challenger)")
    promote_after: int = Field(
        0, ge=0, description="Auto-promote a challenger after this many shadow records (0 = only on request)"
    )
    promote_min_agreement: float = Field(
        0.95, ge=0, le=1, description="Agreement with the champion needed to auto-promote"
    )
    model_wait_s: float = Field(
        0, ge=0, description="Exit non-zero if no model arrives in this time (0 = wait forever)"
    )
    guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description=(
            "exactly_once: scores and consumed offsets commit in one Kafka transaction (read the scores "
            "topic with isolation.level=read_committed); at_least_once: no transactions, a crash re-scores "
            "the records since the last offset commit (duplicates possible, somewhat faster)"
        ),
    )
    transaction_interval_ms: int = Field(
        100,
        ge=1,
        description=(
            "exactly_once: longest time a transaction stays open (batches per commit); scores become "
            "visible to read_committed readers when it commits"
        ),
    )
    transaction_timeout_ms: int = Field(
        30000,
        ge=1000,
        description=("exactly_once: the broker aborts a transaction left open this long by a crashed scorer"),
    )
    start_at: StartAt = Field("committed", description=START_AT_HELP)
    start_at_once: bool = Field(
        False,
        description=(
            "Apply start_at only while the group has no committed offsets (its first start): restarts resume "
            "where it stopped. The operator sets it, since Pods restart on their own"
        ),
    )
    engine: Literal["python", "kafka-streams"] = Field(
        "python", description="python (this process) or kafka-streams (the JVM scorer in scorer/streams)"
    )


PROCESSING_LAG_HELP = (
    "Processing lag: the reading's arrival in Kafka (raw topic) to its score's delivery "
    "(commit, exactly once); independent of how old the reading is"
)
EVENT_AGE_HELP = (
    "Event-time age: the reading's own timestamp (ts) to its score's delivery; years for a replayed recording"
)
EVENT_AGE_BUCKETS = (0.1, 1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400, 10 * 365 * 86400)


class ScorerMetrics:
    def __init__(self, group: str) -> None:
        r = self.registry = CollectorRegistry()
        self.lag = ConsumerLag(r, group)
        self.scored = Counter("streamtrain_scorer_records_scored", "Records scored", ["model_version"], registry=r)
        self.flagged = Counter("streamtrain_scorer_anomalies", "Records flagged as anomalous", registry=r)
        self.deadlettered = Counter(
            "streamtrain_scorer_deadlettered", "Records that could not be scored", ["reason"], registry=r
        )
        zero_labels(self.deadlettered, ("malformed_json", "model_failed", *BadInput.REASONS))
        self.refused = Counter("streamtrain_scorer_models_refused", "Model versions refused", ["reason"], registry=r)
        # A gauge present from the start: a labelled counter born at 1 shows no increase() to an alert.
        self.last_refused = Gauge(
            "streamtrain_scorer_last_model_refused_timestamp_seconds",
            "Unix time of the latest model refusal (0 = none since start)",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "streamtrain_scorer_batch_seconds",
            "Consume-to-commit time of a micro-batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        # Observed a whole transaction's records at a time (one Histogram.observe per record cost more
        # than decoding them).
        self.lag_seconds = BatchHistogram(
            "streamtrain_scorer_end_to_end_seconds",
            PROCESSING_LAG_HELP,
            (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            r,
        )
        self.event_age = BatchHistogram("streamtrain_scorer_event_age_seconds", EVENT_AGE_HELP, EVENT_AGE_BUCKETS, r)
        self.model_version = Gauge("streamtrain_scorer_model_version", "Champion model version", registry=r)
        self.anomaly_rate = Gauge("streamtrain_scorer_anomaly_rate", "Fraction flagged in the last batch", registry=r)
        self.challenger_version = Gauge(
            "streamtrain_scorer_challenger_version", "Challenger version (0 = none)", registry=r
        )
        self.held = Counter(
            "streamtrain_scorer_versions_held",
            "Versions held back because their training was not healthy (champion only on a promotion request)",
            ["reason"],
            registry=r,
        )
        zero_labels(self.held, (*HEALTH_PROBLEMS, "unhealthy"))
        self.held_version = Gauge(
            "streamtrain_scorer_held_version", "Newest held-back (unhealthy) version (0 = none)", registry=r
        )
        self.champion_unhealthy = Gauge(
            "streamtrain_scorer_champion_unhealthy",
            "1 while the champion's training was not healthy (the first version, or promoted on request)",
            registry=r,
        )
        self.pinned_version = Gauge(
            "streamtrain_scorer_pinned_version", "Version pinned by `streamtrain models pin` (0 = none)", registry=r
        )
        self.failed = Counter(
            "streamtrain_scorer_versions_failed",
            "Versions that failed on live input after load and warm-up passed (never served again by this process)",
            registry=r,
        )
        self.not_served = Counter(
            "streamtrain_scorer_versions_not_served",
            "Versions that arrived while a pinned version serves (noted, not served)",
            registry=r,
        )
        self.challenger_agreement = Gauge(
            "streamtrain_scorer_challenger_agreement",
            "Fraction of shadow records where challenger and champion agree",
            registry=r,
        )
        self.challenger_anomaly_rate = Gauge(
            "streamtrain_scorer_challenger_anomaly_rate", "Fraction the challenger flags", registry=r
        )


class _Shadow:
    """Running agreement between champion and challenger since the challenger arrived."""

    def __init__(self) -> None:
        self.records = self.agree = self.flagged = 0

    def add(self, champion_flags: np.ndarray, challenger_flags: np.ndarray) -> None:
        self.records += len(champion_flags)
        self.agree += int((champion_flags == challenger_flags).sum())
        self.flagged += int(challenger_flags.sum())

    @property
    def agreement(self) -> float:
        return self.agree / self.records if self.records else 0.0


class Scorer:
    def __init__(self, settings: ScoreSettings, stop: StopFlag | None = None) -> None:
        self.s = settings
        self.stop = stop or StopFlag()
        self.metrics = ScorerMetrics(settings.group_id)
        self.registry = ModelRegistry(settings.challenger)
        self._stop_event = threading.Event()
        self.watcher = ModelWatcher(
            settings.kafka_bootstrap,
            settings.topic_models,
            self.registry,
            self._refused,
            self._stop_event,
            ModelTrust.from_settings(settings),
        )
        self.exactly_once = settings.guarantee == "exactly_once"
        self.kafka_health = KafkaHealth()
        consumer_extra = {"client.id": settings.instance_id, "error_cb": self.kafka_health.error_cb}
        # One delivery callback for the producer, called for failures only: a Python call per delivered
        # score would cost as much as encoding it. Scores wait up to 25 ms to share a produce request
        # (fewer, larger requests cost the broker less CPU per record); a transaction's commit, or the
        # at-least-once flush, sends what waits at once, so they become visible no later.
        producer_extra = {
            "client.id": settings.instance_id,
            "linger.ms": 25,
            "error_cb": self.kafka_health.error_cb,
            "on_delivery": self._delivered,
            "delivery.report.only.error": True,
        }
        if self.exactly_once:
            # Offsets go through the producer's transaction, never through the consumer; inputs
            # written by transactions are read only once committed.
            consumer_extra.update({"enable.auto.commit": False, "isolation.level": "read_committed"})
            # Stable per replica: a restarted replica fences its dead predecessor and aborts its open
            # transaction at once instead of waiting for the transaction timeout.
            producer_extra.update(
                {"transactional.id": self.transactional_id, "transaction.timeout.ms": settings.transaction_timeout_ms}
            )
        else:
            consumer_extra.update({"enable.auto.commit": True, "auto.commit.interval.ms": 1000})
        self.consumer = Consumer(consumer_config(settings.kafka_bootstrap, settings.group_id, **consumer_extra))
        self.metrics.lag.start_refresh(client_config(settings.kafka_bootstrap))
        self.producer = Producer(producer_config(settings.kafka_bootstrap, **producer_extra))
        self.txn: ExactlyOnce | None = None
        self.shadow = _Shadow()
        self._delivery_errors: list[str] = []
        self._batch_decoder: BatchDecoder | None = None
        # Arrival and event times of the scores in the open transaction, observed once it commits.
        self._uncommitted_ts: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def transactional_id(self) -> str:
        return f"{self.s.group_id}.{self.s.instance_id}"

    # ---------------------------------------------------------------- helpers
    def _refused(self, reason: str) -> None:
        self.metrics.refused.labels(reason).inc()
        self.metrics.last_refused.set_to_current_time()

    def ready(self) -> bool:
        return (
            self.registry.champion is not None
            and self.watcher.is_alive()
            and self.kafka_health.ok(lambda: self.consumer.list_topics(self.s.topic_features, timeout=2))
        )

    def _on_revoke(self, consumer, partitions) -> None:
        # Work of a batch is finished before the next poll, so its outputs are complete: commit now
        # so the partition's next owner starts exactly after the last score.
        if self.txn is not None:
            self._commit_transaction(exclude=partitions)
        else:
            try:
                consumer.commit(asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - nothing stored yet is a normal case
                log.debug("commit_on_revoke", detail=str(exc))
        self.metrics.lag.forget(partitions)
        log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    def _on_lost(self, consumer, partitions) -> None:
        # The group moved on without us: our offsets would be refused, the new owner redoes the work.
        if self.txn is not None and self.txn.open:
            self.txn.abort(exclude=partitions)
            self._uncommitted_ts.clear()
        self.metrics.lag.forget(partitions)
        log.warning("partitions_lost", partitions=[p.partition for p in partitions])

    def _on_assign(self, consumer, partitions) -> None:
        log.info("partitions_assigned", partitions=[p.partition for p in partitions])

    def _decoder(self, model) -> BatchDecoder:
        if self._batch_decoder is None or self._batch_decoder.model is not model:
            self._batch_decoder = BatchDecoder(model)
        return self._batch_decoder

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")

    # ---------------------------------------------------------------- the loop
    def run(self) -> int:
        server = (
            MetricsServer(self.metrics.registry, self.s.metrics_port, self.ready).start()
            if self.s.metrics_port
            else None
        )
        self.watcher.start()
        log.info(
            "scorer_started",
            features_topic=self.s.topic_features,
            scores_topic=self.s.topic_scores,
            models_topic=self.s.topic_models,
            signed_models_only=bool(self.watcher.trust.keys),
            model_max_version=self.watcher.trust.max_version,
            group=self.s.group_id,
            challenger_mode=self.s.challenger,
            metrics_port=server.port if server else None,
        )
        try:
            # Offsets `--start-at` means are read now: `latest` scores what arrives after this start.
            start_offsets = start_position.snapshot(
                self.s.kafka_bootstrap, [self.s.topic_features, self.s.topic_sequences], self.s.start_at
            )
            if (code := self._wait_for_model()) is not None:
                return code
            if self.exactly_once:
                self.txn = ExactlyOnce(self.producer, self.consumer, self.s.transaction_interval_ms / 1000)
                log.info("transactions_ready", transactional_id=self.transactional_id)
            # A windowed model scores the per-device sequences, a dense one the feature records.
            topic = (
                self.s.topic_sequences if self.registry.champion.input_kind == "sequences" else self.s.topic_features
            )
            log.info("scoring_topic", topic=topic, input_kind=self.registry.champion.input_kind)
            start_position.apply(
                self.s.kafka_bootstrap, self.s.group_id, topic, self.s.start_at, start_offsets, self.s.start_at_once
            )
            self.consumer.subscribe(
                [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            while not self.stop.is_set():
                if self.watcher.error is not None:
                    log.error("scorer_exiting", reason=f"model watcher failed: {self.watcher.error}")
                    return exitcodes.MODEL_WATCHER
                self._apply_model_events()
                consumed = self.consumer.consume(self.s.batch_size, self.s.batch_wait_ms / 1000)
                msgs = [m for m in consumed if not m.error()]
                if len(msgs) != len(consumed):
                    for m in consumed:
                        if m.error():
                            log.warning("consume_error", error=str(m.error()))
                if msgs:
                    self._score_batch(msgs)
                if self.txn is not None and (self.txn.due() or not msgs):
                    self._commit_transaction()
                self.metrics.lag.update(self.consumer)
            return exitcodes.OK
        except KafkaException as exc:
            # Fatal for the transactional producer (e.g. fenced by a replica with the same instance id).
            log.error(
                "scorer_exiting",
                reason=f"Kafka: {exc.args[0]}",
                transactional_id=self.transactional_id if self.exactly_once else None,
            )
            return exitcodes.KAFKA
        finally:
            self._shutdown(server)

    def _wait_for_model(self) -> int | None:
        """None once a champion is loaded; otherwise the exit code."""
        t0 = time.monotonic()
        logged = 0.0
        while self.registry.champion is None:
            self._apply_model_events()
            if self.registry.champion is not None:
                break
            if self.stop.is_set():
                return exitcodes.OK
            if self.watcher.error is not None:
                log.error("scorer_exiting", reason=f"model watcher failed: {self.watcher.error}")
                return exitcodes.MODEL_WATCHER
            waited = time.monotonic() - t0
            if self.s.model_wait_s and waited > self.s.model_wait_s:
                log.error("no_model", waited_s=round(waited), topic=self.s.topic_models)
                return exitcodes.NO_MODEL
            if waited - logged >= 10:
                logged = waited
                log.info("waiting_for_model", topic=self.s.topic_models, waited_s=round(waited))
            time.sleep(0.1)
        return None

    def _apply_model_events(self) -> None:
        for event, old, new in self.registry.apply():
            if event == "version_held":
                self._held(old, new)
                continue
            if event == "version_refused":
                self._refused("version_failed")
                log.warning(event, version=new, serving_version=old, reason="failed on live input after warm-up")
                continue
            if event == "version_not_served":
                self.metrics.not_served.inc()
                log.warning(
                    event, version=new, pinned_version=old, reason="pinned", how_to_serve="streamtrain models unpin"
                )
                continue
            log.info(event, old_version=old, new_version=new)
            if event == "challenger_loaded":
                self.shadow = _Shadow()
            elif event in ("champion_switched", "held_promoted", "challenger_promoted", "pinned", "unpinned"):
                self._check_champion_health(event)
        self.metrics.pinned_version.set(self.registry.pinned or 0)
        champion, challenger = self.registry.champion, self.registry.challenger
        held = self.registry.held
        self.metrics.held_version.set(held.version if held else 0)
        for model in (champion, challenger):
            if model is not None:  # the version's series at 0 before its first score: rate() counts them all
                self.metrics.scored.labels(str(model.version))
        self.metrics.model_version.set(champion.version if champion else 0)
        self.metrics.challenger_version.set(challenger.version if challenger else 0)

    def _held(self, serving: int | None, version: int) -> None:
        held = self.registry.held
        meta = held.metadata if held is not None and held.version == version else {}
        reason = unhealthy_reason(meta) or "unhealthy"
        self.metrics.held.labels(reason).inc()
        log.warning(
            "version_held",
            version=version,
            serving_version=serving,
            reason=reason,
            problems=(meta.get("training_health") or {}).get("problems"),
            how_to_serve=f"streamtrain models promote {version}",
        )

    def _check_champion_health(self, event: str) -> None:
        """Flag a champion whose training was not healthy: served only with nothing else to serve, or on request."""
        champion = self.registry.champion
        reason = unhealthy_reason(champion.metadata) if champion is not None else None
        self.metrics.champion_unhealthy.set(1 if reason else 0)
        if champion is not None and reason is not None:
            log.warning(
                "champion_unhealthy",
                version=champion.version,
                reason=reason,
                why={"held_promoted": "promoted on request", "pinned": "pinned on request"}.get(
                    event, "no healthy version to serve instead"
                ),
                problems=(champion.metadata.get("training_health") or {}).get("problems"),
            )

    def _commit_transaction(self, exclude=()) -> None:
        committed = self.txn.commit(exclude=exclude)
        self._delivery_errors.clear()  # a failed delivery aborts the transaction; nothing else to do
        if committed:
            self._observe_delivered(self._uncommitted_ts)
        self._uncommitted_ts.clear()

    def _observe_delivered(self, stamps: list[tuple[np.ndarray, np.ndarray]]) -> None:
        done = time.time()
        for arrived, ts in stamps:
            self.metrics.lag_seconds.observe_many(np.maximum(0.0, done - arrived))
            self.metrics.event_age.observe_many(np.maximum(0.0, done - ts))

    def _send(self, topic: str, value: bytes, key, headers=None) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self.producer.poll(0.01)  # local queue full: let deliveries drain it

    def _score_batch(self, msgs) -> None:
        """One micro-batch: decode it at once, score it with one model call (and one for the challenger),
        produce every score and dead letter; delivery is awaited once per transaction (or batch). Nothing of
        the batch is produced before every model call of it returned."""
        t0 = time.monotonic()
        if self.txn is not None:
            self.txn.begin()
        decoded, judged, champion = self._judge(msgs)
        challenger = self.registry.challenger
        if judged is not None:
            self._produce_scores(decoded, judged, champion, challenger)
        scored = decoded.keep if judged is not None else []
        failed = [] if judged is not None else decoded.keep
        for m, reason, detail in [*decoded.bad, *((m, "model_failed", f"v{champion.version} failed") for m in failed)]:
            self._send(
                self.s.topic_deadletter,
                m.value(),
                m.key(),
                dead_letter_headers(reason, f"kafka:{m.topic()}/{m.partition()}@{m.offset()}", detail),
            )
            self.metrics.deadlettered.labels(reason).inc()
        if failed:
            log.error("batch_deadlettered", reason="model_failed", version=champion.version, records=len(failed))
        self.producer.poll(0)  # serve delivery reports (only failures call back) and errors
        stamps = (arrivals_s(scored), event_times_s(decoded.rows if scored else []))
        if self.txn is not None:
            self.txn.add(msgs)
            self._uncommitted_ts.append(stamps)
        else:
            deliver_then_store(self.producer, self.consumer, msgs, self._delivery_errors, what="scores")
            self._observe_delivered([stamps])
        self.metrics.batch_seconds.observe(time.monotonic() - t0)
        if challenger is not None and self.registry.challenger is challenger:
            self._maybe_promote()

    def _judge(self, msgs) -> tuple[Decoded, Assessment | None, LoadedModel]:
        """Decode and assess the batch with the champion, before anything of it is produced. A champion that
        fails (its load and warm-up passed) is marked bad and the version taking over judges the same batch
        again; None when no version is left to serve (the batch is then dead-lettered)."""
        while True:
            champion = self.registry.champion
            assert champion is not None
            decoded = self._decoder(champion).decode(msgs)
            if not decoded.keep or champion.version in self.registry.bad:
                return decoded, None, champion
            try:
                return decoded, champion.assess(decoded.x, [r.device_id for r in decoded.rows]), champion
            except Exception as exc:  # noqa: BLE001 - any failure of a warmed model: serve another version
                self._version_failed(champion, exc)

    def _version_failed(self, model: LoadedModel, exc: Exception) -> None:
        """Mark ``model`` bad and log which version serves now (the champion's successor, or the champion
        itself when the failed one was the challenger)."""
        role = "challenger" if model is self.registry.challenger else "champion"
        fallback = None
        if role == "champion" and (
            self.registry.previous is None or self.registry.previous.version in self.registry.bad
        ):
            self.registry.bad.add(model.version)  # the rule's pick must not name it
            fallback = self.watcher.fallback_model()
        successor = self.registry.fail(model, fallback)
        serving = self.registry.champion
        self.metrics.failed.inc()
        log.error(
            "version_failed",
            version=model.version,
            role=role,
            error=f"{type(exc).__name__}: {str(exc)[:300]}",
            serving_version=serving.version
            if serving is not None and serving.version not in self.registry.bad
            else None,
        )
        if successor is not None:
            self._check_champion_health("version_failed")
        self.metrics.model_version.set(serving.version if serving is not None else 0)
        self.metrics.challenger_version.set(self.registry.challenger.version if self.registry.challenger else 0)
        self.metrics.pinned_version.set(self.registry.pinned or 0)

    def _produce_scores(self, decoded: Decoded, judged: Assessment, champion, challenger) -> None:
        devices = [r.device_id for r in decoded.rows]
        shadow = None
        if (
            challenger is not None
            and challenger.feature_names == champion.feature_names
            and challenger.window == champion.window
        ):
            try:
                ch_judged = challenger.assess(decoded.x, devices)
            except Exception as exc:  # noqa: BLE001 - a failed challenger is dropped, the champion's scores stand
                self._version_failed(challenger, exc)
            else:
                shadow = (challenger.version, ch_judged.scores, ch_judged.flags)
                self.shadow.add(judged.flags, ch_judged.flags)
        values = score_records(decoded, judged, champion.version, shadow, self.s.instance_id, time.time())
        topic, produce = self.s.topic_scores, self.producer.produce
        for value, m in zip(values, decoded.keep):
            try:
                produce(topic, value, m.key())
            except BufferError:
                self._send(topic, value, m.key())
        self.metrics.scored.labels(str(champion.version)).inc(len(values))
        self.metrics.flagged.inc(int(judged.flags.sum()))
        self.metrics.anomaly_rate.set(float(judged.flags.mean()))

    def _maybe_promote(self) -> None:
        self.metrics.challenger_agreement.set(self.shadow.agreement)
        if self.shadow.records:
            self.metrics.challenger_anomaly_rate.set(self.shadow.flagged / self.shadow.records)
        if self.s.promote_after and self.shadow.records >= self.s.promote_after:
            if self.shadow.agreement >= self.s.promote_min_agreement:
                event, old, new = self.registry.promote()
                log.info(
                    event,
                    old_version=old,
                    new_version=new,
                    rule="auto",
                    agreement=round(self.shadow.agreement, 4),
                    shadow_records=self.shadow.records,
                )
                self.shadow = _Shadow()
            elif self.shadow.records % max(1, self.s.promote_after) < self.s.batch_size:
                log.info(
                    "challenger_not_promoted",
                    agreement=round(self.shadow.agreement, 4),
                    needed=self.s.promote_min_agreement,
                    shadow_records=self.shadow.records,
                )

    def _shutdown(self, server) -> None:
        log.info("scorer_stopping", reason=self.stop.signal_name or "stop requested")
        self._stop_event.set()
        try:
            if self.txn is not None:
                self._commit_transaction()
                log.info("transactions_summary", committed=self.txn.commits, aborted=self.txn.aborts)
            else:
                self.producer.flush(30)
                self.consumer.commit(asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - nothing to commit is fine at shutdown
            log.debug("final_commit", detail=str(exc))
        if server:
            server.stop()  # first: a scrape asks ready(), which must not meet a closing consumer
        self.metrics.lag.close()
        self.consumer.close()
        self.watcher.join(5)
        log.info("scorer_stopped")
