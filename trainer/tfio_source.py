"""tensorflow-io's Kafka reader as the tf.data source (``--backend tfio``).

Measured on this project's broker (Apache Kafka 3.9.1, KRaft) with tensorflow-io 0.37.1,
which bundles librdkafka 1.5.0: ``tfio.IODataset.from_kafka(topic, partition, offset)`` reads a
partition from an offset and works, also across epochs (it is re-run per iteration).
``tfio.experimental.streaming.KafkaGroupIODataset`` also reads against 3.9.1, but it commits
offsets in a consumer group, so a second epoch over the same range needs a new group, and it
ends only by ``stream_timeout``: we use the per-partition reader with exact offset ranges.
"""
from __future__ import annotations

import json

import numpy as np

from streamtrain.kafka_dataset import SourceRange


def tfio_dataset(bootstrap: str, rng: SourceRange, feature_names: list[str], batch_size: int):
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_io as tfio  # noqa: PLC0415

    n = len(feature_names)

    def decode(messages: np.ndarray) -> np.ndarray:
        rows = []
        for raw in messages:
            try:
                body = json.loads(raw)
                row = [float(body[f]) for f in feature_names]
            except (ValueError, KeyError, TypeError):
                continue
            if all(np.isfinite(row)):
                rows.append(row)
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), n)

    parts = []
    for p, (start, end) in sorted(rng.partitions.items()):
        if end <= start:
            continue
        # Built inside flat_map so each epoch creates its own reader resource: one created
        # eagerly is gone when Keras iterates a second time (NotFoundError on KafkaReadableResource).
        def read_partition(_, p=p, start=start, end=end):
            ds = tfio.IODataset.from_kafka(rng.topic, partition=p, offset=start, servers=bootstrap)
            return ds.take(end - start).map(lambda item: item.message)
        parts.append(tf.data.Dataset.range(1).flat_map(read_partition))
    if not parts:
        raise ValueError(f"empty range on {rng.topic}")
    ds = parts[0]
    for other in parts[1:]:
        ds = ds.concatenate(other)
    ds = ds.batch(4096).map(lambda m: tf.numpy_function(decode, [m], tf.float32)).unbatch()
    ds = ds.map(lambda x: tf.ensure_shape(x, (n,)))
    return ds.batch(batch_size).map(lambda x: (x, x)).prefetch(tf.data.AUTOTUNE)
