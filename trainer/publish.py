"""Step 6 of a run: number the version and publish artefact + manifest (+ ONNX export) to the models topic.

One writer per models topic at a time: the trainer's producer is transactional with one id per models
topic (``publisher_transactional_id``). ``init_transactions`` fences any other trainer of the same topic (a recipe
Job and its CronJob, a retried Pod) before this one reads the newest version; if another trainer starts
after that, this one's transaction fails as fenced and nothing of it becomes visible. So two trainers
never publish under the same number: the later one numbers after the earlier one's committed version or
fails loudly. A version also appears all at once or not at all (readers use read_committed).

Numbering counts only versions readers accept (``ModelTrust``: signed by a listed key, if any are
listed, and at most ``model_max_version``): a poisoned version claiming 999,999,999 is not the newest.
After the commit the topic is read back as readers read it; a version they would not serve (not signed
by a listed key, not the newest) fails the run instead of being logged as published.
"""

from __future__ import annotations

import contextlib
import hashlib
import time

from confluent_kafka import KafkaException, Producer

from streamtrain import logs
from streamtrain.kafka import producer_config
from streamtrain.model import save_artefact
from streamtrain.modelcodec import (
    ModelVersion,
    publish_model,
    publisher_transactional_id,
    read_versions,
    version_keys,
)
from streamtrain.modelsign import ModelSigner, ModelTrust
from streamtrain.onnx_export import ONNX_ATTACHMENT, NotExportable, export_scoring_graph
from streamtrain.trainer.normalization import Normalization
from streamtrain.trainer.settings import TrainError, TrainSettings

log = logs.get("trainer")


def accepted_versions(s: TrainSettings, timeout: float = 10.0, keep_deleted: bool = False) -> list[ModelVersion]:
    """The versions on the models topic that readers with these settings accept, in topic order."""
    return read_versions(
        s.kafka_bootstrap, s.topic_models, timeout=timeout, trust=ModelTrust.from_settings(s), keep_deleted=keep_deleted
    )


class Publisher:
    """Claims the models topic for this run (fencing other trainers of it), numbers, publishes, reads back."""

    def __init__(self, s: TrainSettings) -> None:
        self.s = s
        self.signer = ModelSigner.from_file(s.model_signing_key_file) if s.model_signing_key_file else None
        self.producer = Producer(
            producer_config(
                s.kafka_bootstrap,
                **{
                    "message.max.bytes": 2 * 1024 * 1024,
                    "transactional.id": publisher_transactional_id(s.topic_models),
                },
            )
        )
        self.producer.init_transactions(60)
        self.previous: list[ModelVersion] = []

    def number(self, version: int | None, parent: int | None) -> tuple[int, int | None]:
        """(version, parent): the next free number and the newest accepted version, unless given."""
        previous = self.previous = accepted_versions(self.s)
        if version is None:
            # A deleted version's number is not reused: a scorer that served it would ignore its successor.
            ever = accepted_versions(self.s, keep_deleted=True)
            version = max((mv.version for mv in ever), default=0) + 1
        if version > self.s.model_max_version:
            raise TrainError(
                f"version {version} would exceed model_max_version {self.s.model_max_version}: readers would refuse "
                f"it (the newest accepted version on {self.s.topic_models} is {version - 1})"
            )
        if parent is None and previous:
            parent = previous[-1].version
        return version, parent

    def publish(self, model, meta: dict, norm: Normalization, raw_sample) -> None:
        artefact = save_artefact(model)
        try:
            self.producer.begin_transaction()
            publish_model(
                self.producer,
                self.s.topic_models,
                artefact,
                meta,
                attachments={} if meta["requires"] else exports(model, norm, raw_sample),
                signer=self.signer,
            )
            removed = self.remove_old(meta["version"])
            self.producer.commit_transaction(60)
        except Exception as exc:
            with contextlib.suppress(KafkaException):  # fenced: nothing left to abort
                self.producer.abort_transaction(30)
            if not isinstance(exc, KafkaException):
                raise
            # Fenced by a trainer of the same topic that started later: nothing of this version is visible.
            log.error("model_publish_failed", version=meta["version"], topic=self.s.topic_models, error=str(exc))
            raise TrainError(f"model v{meta['version']} not published to {self.s.topic_models}: {exc}") from None
        self.read_back(meta["version"], hashlib.sha256(artefact).hexdigest())
        if removed:
            log.info("model_versions_removed", versions=removed, kept=self.s.model_keep_versions)
        log.info(
            "model_published",
            version=meta["version"],
            parent_version=meta["parent_version"],
            topic=self.s.topic_models,
            signed_by=self.signer.key_id if self.signer else None,
            records=meta["record_count"],
            threshold=round(meta["threshold"], 6),
            final_loss=meta["metrics"]["loss"][-1],
            seconds=meta["train_seconds"],
            model=meta["model"],
            baselines=self.s.baselines,
            training_health=meta["training_health"]["status"],
            devices=len(norm.baselines.index) if norm.baselines else None,
        )

    def remove_old(self, version: int) -> list[int]:
        """Tombstone every key of the accepted versions older than the newest ``model_keep_versions`` (this one
        included), inside the open transaction: they vanish together with this version's arrival."""
        older = sorted({mv.version: mv for mv in self.previous if mv.version < version}.items())
        drop = older[: max(0, len(older) - (self.s.model_keep_versions - 1))]
        for _, mv in drop:
            for key in version_keys(mv):
                self.producer.produce(self.s.topic_models, None, key=key)
                self.producer.poll(0)
        if drop:
            remaining = self.producer.flush(60)
            if remaining:
                raise KafkaException(f"{remaining} tombstones undelivered")
        return [v for v, _ in drop]

    def read_back(self, version: int, sha256: str) -> None:
        """Fail unless readers with these settings see exactly this version as the newest."""
        deadline = time.monotonic() + 30
        while True:
            # Right after the commit the transaction's markers may not be written yet: the last stable
            # offset, which a read_committed reader ends at, still stops before this version.
            accepted = accepted_versions(self.s)
            mine = [mv for mv in accepted if mv.version == version]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        newest = max((mv.version for mv in accepted), default=None)
        problem = None
        if not mine:
            problem = "readers do not accept it (see model_verify_keys, model_signing_key_file)"
        elif mine[-1].metadata.get("sha256") != sha256:
            problem = "another artefact was published under its number"
        elif newest != version:
            problem = f"v{newest} is newer, so readers will not switch to it"
        if problem:
            log.error("model_publish_unverified", version=version, topic=self.s.topic_models, problem=problem)
            raise TrainError(f"model v{version} was written to {self.s.topic_models} but {problem}")


def exports(model, norm: Normalization, sample) -> dict[str, bytes]:
    """The same model for scorers outside Python (the Kafka Streams scorer reads the ONNX graph)."""
    try:
        return {ONNX_ATTACHMENT: export_scoring_graph(model, norm.mean32, norm.std32, check_rows=sample)}
    except NotExportable as exc:
        log.warning("onnx_not_exported", reason=str(exc))
        return {}
