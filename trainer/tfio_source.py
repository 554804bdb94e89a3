"""tensorflow-io's Kafka reader as the tf.data source (``--backend tfio``).

Measured on this project's broker (Apache Kafka 3.9.1, KRaft) with tensorflow-io 0.37.1,
which bundles librdkafka 1.5.0: ``tfio.IODataset.from_kafka(topic, partition, start, stop)`` reads a
partition's offset range and works, also across epochs (it is re-created per iteration).
``tfio.experimental.streaming.KafkaGroupIODataset`` also reads against 3.9.1, but it commits
offsets in a consumer group, so a second epoch over the same range needs a new group, and it
ends only by ``stream_timeout``: we use the per-partition reader with exact offset ranges.
"""

from __future__ import annotations

import numpy as np

from streamtrain.kafka_dataset import SourceRange
from streamtrain.record_decode import BatchDecoder


def tfio_dataset(bootstrap: str, rng: SourceRange, feature_names: list[str], batch_size: int, readers: int = 3):
    """Rows of the range as ``(x, x)`` batches: ``readers`` partitions are read at once, and each
    read block of records is decoded in one call (``BatchDecoder``), not record by record."""
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_io as tfio  # noqa: PLC0415

    n = len(feature_names)
    decoder = BatchDecoder(feature_names)

    def decode(messages: np.ndarray) -> np.ndarray:
        return decoder.decode(list(messages)).x

    spans = [(p, start, end) for p, (start, end) in sorted(rng.partitions.items()) if end > start]
    if not spans:
        raise ValueError(f"empty range on {rng.topic}")

    # Built inside interleave so each epoch creates its own reader resources: one created
    # eagerly is gone when Keras iterates a second time (NotFoundError on KafkaReadableResource).
    def read_partition(span):
        p, start, end = span[0], span[1], span[2]
        # IODataset.from_kafka takes the range as start/stop (an ``offset=`` would be swallowed by its
        # **kwargs and read from offset 0).
        ds = tfio.IODataset.from_kafka(
            rng.topic, partition=tf.cast(p, tf.int32), start=start, stop=end, servers=bootstrap
        )
        return ds.take(end - start).map(lambda item: item.message).batch(4096)

    ds = tf.data.Dataset.from_tensor_slices(tf.constant(spans, tf.int64)).interleave(
        read_partition,
        cycle_length=max(1, min(readers, len(spans))),
        num_parallel_calls=max(1, min(readers, len(spans))),
        deterministic=False,
    )
    ds = ds.map(lambda m: tf.numpy_function(decode, [m], tf.float32), num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    ds = ds.map(lambda x: tf.ensure_shape(x, (n,)))
    return ds.batch(batch_size).map(lambda x: (x, x)).prefetch(tf.data.AUTOTUNE)
