"""tensorflow-io's Kafka reader as the tf.data source (``--backend tfio``).

Measured on this project's broker (Apache Kafka 3.9.1, KRaft) with tensorflow-io 0.37.1,
which bundles librdkafka 1.5.0: its Kafka reader resource reads a partition's offset range and
works, also across epochs (it is re-created per iteration). ``tfio.IODataset.from_kafka(topic,
partition, start, stop)`` itself does NOT honour ``start``: 0.37.1 builds its read windows as
``range(0, stop, 1024)``, so it reads from offset 0 (and fails once retention has deleted offset 0).
We drive the same reader resource (``io_kafka_readable_init`` / ``io_kafka_readable_read``) with
windows that begin at ``start``.
``tfio.experimental.streaming.KafkaGroupIODataset`` also reads against 3.9.1, but it commits
offsets in a consumer group, so a second epoch over the same range needs a new group, and it
ends only by ``stream_timeout``: we use the per-partition reader with exact offset ranges.
"""

from __future__ import annotations

import numpy as np

from streamtrain.kafka_dataset import SourceRange
from streamtrain.record_decode import BatchDecoder

_WINDOW = 1024  # records per read call, as tensorflow-io's own dataset uses


def tfio_dataset(bootstrap: str, rng: SourceRange, feature_names: list[str], batch_size: int, readers: int = 3):
    """Rows of the range as ``(x, x)`` batches: ``readers`` partitions are read at once, and each
    read block of records is decoded in one call (``BatchDecoder``), not record by record."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_io.python.ops import core_ops  # noqa: PLC0415

    n = len(feature_names)
    decoder = BatchDecoder(feature_names)

    def decode(messages: np.ndarray) -> np.ndarray:
        return decoder.decode(list(messages)).x

    spans = [(p, start, end) for p, (start, end) in sorted(rng.partitions.items()) if end > start]
    if not spans:
        raise ValueError(f"empty range on {rng.topic}")

    # One reader resource per partition, each built by its own traced function: tensorflow-io's
    # init kernel keeps the resource it made, so one function shared by all partitions (interleave)
    # hands every partition the same reader. Built inside flat_map so each epoch re-runs the
    # reader's seek: one created eagerly is gone when Keras iterates a second time.
    def partition_dataset(p: int, start: int, end: int):
        def read(_):
            resource = core_ops.io_kafka_readable_init(
                rng.topic, p, offset=0, metadata=[f"bootstrap.servers={bootstrap}"]
            )
            windows = tf.data.Dataset.range(start, end, _WINDOW)
            windows = tf.data.Dataset.zip(
                (windows, windows.skip(1).concatenate(tf.data.Dataset.from_tensors(tf.constant(end, tf.int64))))
            )
            messages = windows.map(lambda a, b: core_ops.io_kafka_readable_read(resource, start=a, stop=b).message)
            return messages.unbatch()

        return tf.data.Dataset.range(1).flat_map(read)

    # ``readers`` groups of partitions are read at once (each group prefetches on its own thread).
    at_once = max(1, min(readers, len(spans)))
    groups = [spans[i::at_once] for i in range(at_once)]
    streams = []
    for group in groups:
        parts = [partition_dataset(p, start, end) for p, start, end in group]
        stream = parts[0]
        for other in parts[1:]:
            stream = stream.concatenate(other)
        streams.append(stream.batch(4096).prefetch(1))
    ds = streams[0] if len(streams) == 1 else tf.data.Dataset.sample_from_datasets(streams, stop_on_empty_dataset=False)
    ds = ds.map(lambda m: tf.numpy_function(decode, [m], tf.float32), num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    ds = ds.map(lambda x: tf.ensure_shape(x, (n,)))
    return ds.batch(batch_size).map(lambda x: (x, x)).prefetch(tf.data.AUTOTUNE)
