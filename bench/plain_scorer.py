"""The reference for the Python scorer: the plain loop a user would write instead of `streamtrain score`.

confluent-kafka + Keras, nothing of ours but the model codec (how a version travels on the models
topic): consume the features topic, batches of 512, ``model.predict_on_batch``, one JSON score per
record, exactly once with a Kafka transaction every 100 ms (``send_offsets_to_transaction``).
Same input topic and same model as the scorer; bench/stages.py runs both and prints ours / this.

    python bench/plain_scorer.py BOOTSTRAP FEATURES_TOPIC MODELS_TOPIC SCORES_TOPIC GROUP

Prints ``model_ready`` once the model is loaded (where the bench starts its clock, as it does at the
scorer's ``champion_switched``), stops on SIGTERM after committing its open transaction.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time

import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer

from streamtrain.modelcodec import read_versions

BATCH = 512
TRANSACTION_S = 0.1


def load_latest(bootstrap: str, models_topic: str):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    mv = read_versions(bootstrap, models_topic)[-1]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        with open(path, "wb") as fh:
            fh.write(mv.artefact)
        model = keras.models.load_model(path, compile=False)
    return model, mv.metadata


def main(bootstrap: str, features: str, models: str, scores: str, group: str) -> None:
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    model, meta = load_latest(bootstrap, models)
    names, threshold = meta["feature_names"], float(meta["threshold"])
    mean = np.asarray(meta["normalization"]["mean"], np.float32)
    std = np.maximum(np.asarray(meta["normalization"]["std"], np.float32), 1e-9)
    print("model_ready", flush=True)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{group}.plain"})
    producer.init_transactions()
    consumer.subscribe([features])
    producer.begin_transaction()
    opened = time.monotonic()

    def commit() -> None:
        if assigned := consumer.assignment():
            producer.send_offsets_to_transaction(consumer.position(assigned), consumer.consumer_group_metadata())
        producer.commit_transaction()

    try:
        while not stop:
            msgs = [m for m in consumer.consume(BATCH, 0.05) if not m.error()]
            if msgs:
                records = [json.loads(m.value()) for m in msgs]
                x = np.array([[r[f] for f in names] for r in records], np.float32)
                xn = (x - mean) / std
                errors = np.mean(np.square(xn - model.predict_on_batch(xn)), axis=1)
                now = time.time()
                for m, r, e in zip(msgs, records, errors.tolist()):
                    score = {
                        "device_id": r["device_id"],
                        "seq": r["seq"],
                        "ts": r["ts"],
                        "model_version": meta["version"],
                        "score": e,
                        "threshold": threshold,
                        "is_anomaly": e > threshold,
                        "scored_at": now,
                        "source": {"partition": m.partition(), "offset": m.offset()},
                    }
                    while True:
                        try:
                            producer.produce(scores, json.dumps(score).encode(), m.key())
                            break
                        except BufferError:
                            producer.poll(0.01)
                producer.poll(0)
            if time.monotonic() - opened >= TRANSACTION_S:
                commit()
                producer.begin_transaction()
                opened = time.monotonic()
        commit()
    except KafkaException as exc:
        print(f"kafka error: {exc}", file=sys.stderr, flush=True)
        producer.abort_transaction()
        raise SystemExit(1) from None
    finally:
        consumer.close()


if __name__ == "__main__":
    main(*sys.argv[1:6])
