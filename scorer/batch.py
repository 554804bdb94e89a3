"""`streamtrain score --batch`: score a fixed range of the features topic offline, through tf.data.

The seed's second inference path: the same model version and the same score records as the
live scorer, for a bounded offset range (e.g. to back-test a version), written to a separate
topic so live scores stay untouched.
"""

from __future__ import annotations

import json
import time

import numpy as np
from confluent_kafka import Producer

from streamtrain import logs
from streamtrain.kafka import Deliveries, ensure_topics, flush_or_raise, producer_config
from streamtrain.kafka_dataset import decode, iter_messages, resolve_range
from streamtrain.model import LoadedModel
from streamtrain.modelcodec import read_versions
from streamtrain.modelsign import ModelTrust
from streamtrain.quality import evaluate
from streamtrain.topics import TopicSpec

log = logs.get("scorer.batch")


def score_range(
    settings, *, max_records: int | None, from_end: bool, version: int | None, output_topic: str, batch_size: int = 2048
) -> dict:
    import tensorflow as tf  # noqa: PLC0415

    trust = ModelTrust.from_settings(settings)  # the live scorer's rule: unsigned or out-of-range versions never score
    versions = {mv.version: mv for mv in read_versions(settings.kafka_bootstrap, settings.topic_models, trust=trust)}
    if not versions:
        raise ValueError(f"no model version on {settings.topic_models}")
    chosen = versions[version] if version is not None else versions[max(versions)]
    model = LoadedModel.from_version(chosen)
    if model.input_kind != "features" or model.baselines is not None:
        raise ValueError(
            f"v{model.version} has per-device baselines or windowed input; offline batch scoring covers "
            "global dense models for now: score it live with `streamtrain score`"
        )
    rng = resolve_range(settings.kafka_bootstrap, settings.topic_features, max_records=max_records, newest=from_end)
    n = len(model.feature_names)
    ids: list[dict] = []

    def chunks():
        for msgs in iter_messages(settings.kafka_bootstrap, rng):
            rows = []
            for m in msgs:
                r = decode(m.value(), model.feature_names)
                if r is None:
                    continue
                body = json.loads(m.value())
                ids.append(
                    {
                        "device_id": body.get("device_id"),
                        "seq": body.get("seq"),
                        "ts": body.get("ts"),
                        "label": body.get("label"),
                        "source": {"partition": m.partition(), "offset": m.offset()},
                    }
                )
                rows.append(r[0])
            if rows:
                yield np.asarray(rows, np.float32)

    mean, std = tf.constant(model.mean), tf.constant(model.std)

    def score(x):
        xn = (x - mean) / std
        return tf.reduce_mean(tf.square(xn - model.keras_model(xn, training=False)), axis=1)

    ds = (
        tf.data.Dataset.from_generator(chunks, output_signature=tf.TensorSpec((None, n), tf.float32))
        .unbatch()
        .batch(batch_size)
        .map(score)
        .prefetch(tf.data.AUTOTUNE)
    )
    t0 = time.monotonic()
    scores = np.concatenate([s.numpy() for s in ds]) if rng.records else np.zeros(0)
    seconds = time.monotonic() - t0
    ensure_topics(settings.kafka_bootstrap, [TopicSpec(output_topic, 3)])
    producer = Producer(producer_config(settings.kafka_bootstrap))
    deliveries = Deliveries()
    out = []
    for meta, s in zip(ids, scores):
        rec = {
            **meta,
            "model_version": model.version,
            "score": float(s),
            "threshold": model.threshold,
            "is_anomaly": bool(s > model.threshold),
            "scorer": "python-batch",
        }
        out.append(rec)
        producer.produce(
            output_topic, json.dumps(rec).encode(), key=str(meta["device_id"]).encode(), on_delivery=deliveries.report
        )
        producer.poll(0)
    flush_or_raise(producer, deliveries)
    ev = evaluate(out)
    summary = {
        "model_version": model.version,
        "range": rng.as_dict(),
        "scored": len(out),
        "records_per_second": round(len(out) / seconds, 1) if seconds else None,
        "output_topic": output_topic,
        "quality": ev.overall.as_dict() if ev.overall.records else None,
    }
    log.info("batch_scored", **{k: v for k, v in summary.items() if k != "range"})
    return summary
