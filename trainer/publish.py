"""Step 6 of a run: number the version and publish artefact + manifest (+ ONNX export) to the models topic."""

from __future__ import annotations

from confluent_kafka import Producer

from streamtrain import logs
from streamtrain.kafka import producer_config
from streamtrain.model import save_artefact
from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.onnx_export import ONNX_ATTACHMENT, NotExportable, export_scoring_graph
from streamtrain.trainer.normalization import Normalization
from streamtrain.trainer.settings import TrainSettings

log = logs.get("trainer")


def number_version(s: TrainSettings, version: int | None, parent: int | None) -> tuple[int, int | None]:
    """(version, parent): the next free number and the newest published version, unless given."""
    previous = read_versions(s.kafka_bootstrap, s.topic_models)
    if version is None:
        version = max((mv.version for mv in previous), default=0) + 1
    if parent is None and previous:
        parent = previous[-1].version
    return version, parent


def publish_version(s: TrainSettings, model, meta: dict, norm: Normalization, raw_sample) -> None:
    producer = Producer(producer_config(s.kafka_bootstrap, **{"message.max.bytes": 2 * 1024 * 1024}))
    publish_model(
        producer,
        s.topic_models,
        save_artefact(model),
        meta,
        attachments={} if meta["requires"] else exports(model, norm, raw_sample),
    )
    log.info(
        "model_published",
        version=meta["version"],
        parent_version=meta["parent_version"],
        topic=s.topic_models,
        records=meta["record_count"],
        threshold=round(meta["threshold"], 6),
        final_loss=meta["metrics"]["loss"][-1],
        seconds=meta["train_seconds"],
        model=meta["model"],
        baselines=s.baselines,
        training_health=meta["training_health"]["status"],
        devices=len(norm.baselines.index) if norm.baselines else None,
    )


def exports(model, norm: Normalization, sample) -> dict[str, bytes]:
    """The same model for scorers outside Python (the Kafka Streams scorer reads the ONNX graph)."""
    try:
        return {ONNX_ATTACHMENT: export_scoring_graph(model, norm.mean32, norm.std32, check_rows=sample)}
    except NotExportable as exc:
        log.warning("onnx_not_exported", reason=str(exc))
        return {}
