"""A ``tf.data`` source fed straight from a Kafka topic with confluent-kafka: no files.

The bounds (an offset range per partition, a record count, or a time window) are resolved
once into exact ``[start, end)`` offsets per partition, so every epoch reads the same records
and the model's metadata can say exactly what it was trained on. Partitions are assigned
directly (no consumer group): reading for training never commits anything.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import queue
import signal
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from streamtrain import logs
from streamtrain.kafka import READER_GROUP, client_config, watermarks
from streamtrain.record_decode import BatchDecoder, Decoded, decode, decode_body, decode_window

__all__ = [
    "KafkaSource",
    "SourceRange",
    "decode",
    "decode_body",
    "decode_window",
    "infer_features",
    "infer_window",
    "iter_json",
    "iter_messages",
    "read_decoded",
    "ReaderProcess",
    "resolve_range",
]

log = logs.get("kafka_dataset")
RESERVED = {"device_id", "ts", "seq", "label", "anomaly", "device_type"}


@dataclass(frozen=True)
class SourceRange:
    topic: str
    partitions: dict[int, tuple[int, int]]  # partition -> [start, end)
    #: Offsets before the range that the bounds asked for but Kafka no longer holds (retention or
    #: deletion): the range starts at the oldest retained record of those partitions.
    gone: int = 0

    @property
    def records(self) -> int:
        return sum(e - s for s, e in self.partitions.values())

    def as_dict(self) -> dict:
        return {"topic": self.topic, "partitions": {str(p): [s, e] for p, (s, e) in sorted(self.partitions.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> "SourceRange":
        return cls(d["topic"], {int(p): (int(v[0]), int(v[1])) for p, v in d["partitions"].items()})


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": f"{READER_GROUP}.trainer",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "fetch.max.bytes": 64 * 1024 * 1024,
            },
        )
    )


def resolve_range(
    bootstrap: str,
    topic: str,
    *,
    max_records: int | None = None,
    newest: bool = False,
    after: SourceRange | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> SourceRange:
    """Exact per-partition offsets for the requested bounds.

    ``max_records`` takes the oldest (or, with ``newest``, the newest) records, split across
    partitions in proportion to what each holds; ``after`` starts where a previous range ended;
    ``since_ms``/``until_ms`` bound by record timestamps (arrival times: the stream topics append with
    LogAppendTime).
    """
    c = _consumer(bootstrap)
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap}")
        parts = sorted(md.topics[topic].partitions)
        bounds, oldest = {}, {}
        for p in parts:
            low, high = watermarks(c, TopicPartition(topic, p))
            oldest[p] = low
            if after is not None and p in after.partitions:
                low = max(low, after.partitions[p][1])
            bounds[p] = [low, high]
        for ms, idx in ((since_ms, 0), (until_ms, 1)):
            if ms is None:
                continue
            found = c.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], timeout=10)
            for tp in found:
                if tp.offset >= 0:
                    bounds[tp.partition][idx] = (
                        max(bounds[tp.partition][0], tp.offset) if idx == 0 else min(bounds[tp.partition][1], tp.offset)
                    )
                elif idx == 0:
                    bounds[tp.partition][0] = bounds[tp.partition][1]  # nothing that new
        total = sum(max(0, e - s) for s, e in bounds.values())
        if max_records is not None and total > max_records:
            quota = {p: int(math.floor(max_records * max(0, e - s) / total)) for p, (s, e) in bounds.items()}
            short = max_records - sum(quota.values())
            for p in sorted(bounds, key=lambda p: -(bounds[p][1] - bounds[p][0]))[:short]:
                quota[p] += 1
            for p, (s, e) in bounds.items():
                bounds[p] = [e - quota[p], e] if newest else [s, s + quota[p]]
        # Starting at a partition's oldest retained record when that is not offset 0 (and no earlier bound
        # cut the range there) means records the range would have held are gone.
        gone = sum(
            oldest[p]
            for p, (s, e) in bounds.items()
            if s == oldest[p] > 0 and since_ms is None and not (after and p in after.partitions)
        )
        return SourceRange(topic, {p: (s, max(s, e)) for p, (s, e) in bounds.items()}, gone)
    finally:
        c.close()


def infer_features(bootstrap: str, rng: SourceRange, sample: int = 200) -> list[str]:
    """Numeric fields of the first records, minus identity and ground-truth fields, sorted.

    For sequence records (``features`` + ``values``) the window's feature names, in order."""
    names: set[str] = set()
    for body in iter_json(bootstrap, rng, limit=sample):
        if isinstance(body.get("features"), list) and isinstance(body.get("values"), list):
            return [str(n) for n in body["features"]]
        names |= {
            k for k, v in body.items() if k not in RESERVED and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    return sorted(names)


def infer_window(bootstrap: str, rng: SourceRange) -> int | None:
    """Length of the sequence records of a range (None when they are plain feature records)."""
    for body in iter_json(bootstrap, rng, limit=1):
        values = body.get("values")
        return len(values) if isinstance(values, list) else None
    return None


def iter_json(bootstrap: str, rng: SourceRange, limit: int | None = None) -> Iterator[dict]:
    n = 0
    for msgs in iter_messages(bootstrap, rng):
        for m in msgs:
            try:
                body = json.loads(m.value())
            except (ValueError, RecursionError):
                continue
            if not isinstance(body, dict):
                continue
            yield body
            n += 1
            if limit is not None and n >= limit:
                return


def iter_messages(bootstrap: str, rng: SourceRange, batch: int = 5000, on_drained=None):
    """Batches of messages of the range, each partition from start up to (not including) end.

    ``on_drained()`` is called once the last batch is handed out, before the consumer closes
    (closing a consumer can take a second: a reader that waits for it would idle)."""
    todo = {p: se for p, se in rng.partitions.items() if se[1] > se[0]}
    if not todo:
        return
    c = _consumer(bootstrap)
    try:
        c.assign([TopicPartition(rng.topic, p, s) for p, (s, _) in todo.items()])
        nxt = {p: s for p, (s, _) in todo.items()}
        while todo:
            # No more than the range still holds: consume() waits its whole timeout for a batch it cannot fill.
            want = max(1, min(batch, sum(todo[p][1] - nxt[p] for p in todo)))
            msgs = c.consume(want, 0.5)
            out = []
            for m in msgs:
                if m.error():
                    continue  # partition EOF events; ends are known in advance
                p = m.partition()
                if p not in todo:
                    continue
                nxt[p] = m.offset() + 1
                if m.offset() < todo[p][1]:
                    out.append(m)
                if m.offset() >= todo[p][1] - 1:
                    del todo[p]
                    c.incremental_unassign([TopicPartition(rng.topic, p)])
            # A transactional producer's commit markers take offsets but are never returned as
            # messages: a partition whose range ends in one is done once the position passes it.
            if todo:
                for tp in c.position([TopicPartition(rng.topic, p) for p in todo]):
                    if tp.offset >= 0 and tp.offset >= todo[tp.partition][1]:
                        del todo[tp.partition]
                        c.incremental_unassign([TopicPartition(rng.topic, tp.partition)])
            if out:
                yield out
        if on_drained is not None:
            on_drained()
    finally:
        c.close()


_DONE = object()


def split_range(rng: SourceRange, parts: int) -> list[SourceRange]:
    """The range's non-empty partitions dealt round-robin into at most ``parts`` ranges."""
    busy = sorted(p for p, (s, e) in rng.partitions.items() if e > s)
    groups = [busy[i::parts] for i in range(min(parts, len(busy)))]
    return [SourceRange(rng.topic, {p: rng.partitions[p] for p in g}) for g in groups]


def read_decoded(
    bootstrap: str, rng: SourceRange, decoder: BatchDecoder, readers: int = 3, depth: int = 8
) -> Iterator[Decoded]:
    """Decoded batches of the range, read and decoded off the caller's thread.

    ``readers`` threads each read a share of the partitions with a consumer of their own and
    decode whole consumed batches at once (``BatchDecoder``); up to ``depth`` decoded batches wait
    in a queue, so reading runs ahead of whoever iterates (the training step). Batches of
    different partitions interleave; within a partition they keep offset order."""
    shares = split_range(rng, readers)
    if not shares:
        return
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(share: SourceRange) -> None:
        done = []

        def drained() -> None:
            done.append(put(_DONE))

        try:
            for msgs in iter_messages(bootstrap, share, on_drained=drained):
                if not put(decoder.decode([m.value() for m in msgs])):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the iterating thread, raised there
            if not done:
                put(exc)
        finally:
            if not done:
                put(_DONE)

    threads = [
        threading.Thread(target=read, args=(share,), name=f"kafka-read-{i}", daemon=True)
        for i, share in enumerate(shares)
    ]
    for t in threads:
        t.start()
    try:
        running = len(threads)
        while running:
            item = out.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()  # the threads close their consumers on their own: nobody waits for that


_END = "end"  # what the reader process sends after the last batch of a read


def _reader_process(env: dict, conn) -> None:
    """The child of ``ReaderProcess``: with the parent's environment (its Kafka security settings), it
    serves one read request at a time, sending back the decoded batches and then ``_END``; it ends
    when the parent closes the pipe."""
    # Ctrl-C reaches the whole process group: the trainer decides when reading stops. SIGTERM is how
    # the trainer (or multiprocessing at its exit) ends a child that does not stop on its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(env)
    try:
        while True:
            bootstrap, rng, spec, readers, depth = conn.recv()
            try:
                for item in read_decoded(bootstrap, rng, BatchDecoder(*spec), readers, depth):
                    conn.send(item)
                conn.send(_END)
            except (BrokenPipeError, ConnectionResetError, EOFError):
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the parent, raised there
                try:
                    conn.send(exc)
                except Exception:  # noqa: BLE001 - an exception that does not pickle: its text then
                    conn.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
    except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
        return  # the parent went away
    finally:
        conn.close()


class ReaderProcess:
    """``read_decoded`` in a child process: the same batches, in the same order per partition.

    Reading and decoding (confluent-kafka messages, msgspec, numpy) hold the GIL; in threads of the
    training process they starve its training step, which needs the GIL between TensorFlow calls
    (bench/profiles/training.txt). In a child process they run on another core; the decoded arrays
    come back pickled through a pipe, whose buffer and the child's queue of ``depth`` batches bound
    how far reading runs ahead. The child is forked from a forkserver (no TensorFlow in it) at the
    first read and serves every later read (each epoch) of this object; it reads with this process's
    environment. A read abandoned before its end stops the child; the next read starts another."""

    def __init__(self) -> None:
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Any = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        parent, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(
            target=_reader_process, args=(dict(os.environ), child), name="kafka-reader", daemon=True
        )
        self._proc.start()
        child.close()
        self._conn = parent

    def read(self, bootstrap: str, rng: SourceRange, decoder: BatchDecoder, readers: int = 3, depth: int = 8):
        if not split_range(rng, readers):
            return
        if self._proc is None or not self._proc.is_alive():
            self.close()
            self._start()
        assert self._conn is not None
        self._conn.send((bootstrap, rng, (decoder.feature_names, decoder.window, decoder.identities), readers, depth))
        done = False
        try:
            while True:
                try:
                    item = self._conn.recv()
                except EOFError:
                    if self._proc is not None:
                        self._proc.join(5)
                    code = self._proc.exitcode if self._proc is not None else None
                    raise RuntimeError(
                        f"the Kafka reader process ended before the read was done (exit code {code})"
                    ) from None
                if isinstance(item, str) and item == _END:
                    done = True
                    return
                if isinstance(item, BaseException):
                    done = True  # the child reported it and waits for the next request
                    raise item
                yield item
        finally:
            if not done:
                self.close()  # abandoned mid-read: the child may still be sending

    def close(self) -> None:
        """Stop the child (its pipe closed, then terminated if it lingers)."""
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.join(2)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def shuffled_batches(
    chunks: Iterator[np.ndarray], batch_size: int, buffer: int, rng: np.random.Generator | None
) -> Iterator[np.ndarray]:
    """Rows of ``chunks`` in full batches of ``batch_size`` (the last may be short), shuffled within
    windows of at least ``buffer`` rows (in arrival order without ``rng``)."""
    pool: list[np.ndarray] = []
    held = 0
    for x in chunks:
        pool.append(x)
        held += len(x)
        if held < buffer:
            continue
        rows = np.concatenate(pool)
        rows = rows[rng.permutation(len(rows))] if rng is not None else rows
        full = len(rows) // batch_size * batch_size
        for i in range(0, full, batch_size):
            yield rows[i : i + batch_size]
        pool, held = [rows[full:]], len(rows) - full
    if held:
        rows = np.concatenate(pool)
        rows = rows[rng.permutation(len(rows))] if rng is not None else rows
        for i in range(0, len(rows), batch_size):
            yield rows[i : i + batch_size]


class KafkaSource:
    """Feature rows (or, with ``window``, sequences of rows) of a fixed range, as numpy batches
    or a re-readable ``tf.data.Dataset``. ``readers`` threads read the partitions in parallel; with
    ``apart`` they run in a child process."""

    def __init__(
        self,
        bootstrap: str,
        rng: SourceRange,
        feature_names: list[str],
        window: int | None = None,
        readers: int = 3,
        apart: bool = False,
    ) -> None:
        self.bootstrap, self.range, self.feature_names = bootstrap, rng, list(feature_names)
        self.window = window
        self.readers = readers
        #: Read and decode in a child process (``ReaderProcess``) rather than in threads of this one.
        self.process = ReaderProcess() if apart else None
        self.decoder = BatchDecoder(self.feature_names, window)
        self.inputs_only = BatchDecoder(self.feature_names, window, identities=False)
        self.skipped = 0
        self.reads = 0

    def close(self) -> None:
        """Stop the reader process, if any (a later read starts it again)."""
        if self.process is not None:
            self.process.close()

    def __enter__(self) -> "KafkaSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def shape(self) -> tuple:
        n = len(self.feature_names)
        return (n,) if self.window is None else (self.window, n)

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for x, labels, _ in self.batches_with_devices():
            yield x, labels

    def batches_with_devices(self) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
        """(inputs, labels, device ids) per consumed batch."""
        for d in self._read(self.decoder):
            yield d.x, d.labels, d.devices

    def inputs(self) -> Iterator[np.ndarray]:
        """The inputs alone per consumed batch (labels and device ids are not decoded)."""
        for d in self._read(self.inputs_only):
            yield d.x

    def _read(self, decoder: BatchDecoder) -> Iterator[Decoded]:
        self.reads += 1
        skipped = 0
        read = self.process.read if self.process is not None else read_decoded
        for d in read(self.bootstrap, self.range, decoder, self.readers):
            skipped += d.skipped
            if len(d.x):
                yield d
        self.skipped = skipped

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for x, y in self.batches():
            xs.append(x)
            ys.append(y)
        if not xs:
            return np.zeros((0, *self.shape), np.float32), np.zeros(0, np.int32)
        return np.concatenate(xs), np.concatenate(ys)

    def dataset(self, batch_size: int, *, cache: bool = False, shuffle: int = 0, seed: int = 0, transform=None):
        """Rows as ``(x, x)`` pairs for an autoencoder; each epoch re-reads Kafka unless ``cache``.

        ``transform(x, devices) -> x`` (numpy, e.g. per-device normalization) runs on each batch
        before it enters TensorFlow; it may drop rows. Re-read epochs are batched and shuffled in
        numpy (one tensor per training step crosses into TensorFlow); a cached range is shuffled
        row by row by tf.data."""
        import tensorflow as tf  # noqa: PLC0415

        def chunks():
            if transform is None:
                yield from self.inputs()
                return
            for x, _, devices in self.batches_with_devices():
                x = transform(x, devices)
                if len(x):
                    yield x

        spec = tf.TensorSpec((None, *self.shape), tf.float32)
        if cache:
            ds = tf.data.Dataset.from_generator(chunks, output_signature=spec).unbatch().cache()
            if shuffle:
                ds = ds.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
            return ds.batch(batch_size).map(lambda x: (x, x)).prefetch(tf.data.AUTOTUNE)
        passes = [0]

        def batches():
            passes[0] += 1
            order = np.random.default_rng([seed, passes[0]]) if shuffle else None
            yield from shuffled_batches(chunks(), batch_size, max(shuffle, batch_size), order)

        ds = tf.data.Dataset.from_generator(batches, output_signature=spec)
        return ds.map(lambda x: (x, x)).prefetch(tf.data.AUTOTUNE)
