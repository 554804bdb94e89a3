"""The preprocessor's per-device state, rebuilt when partitions are assigned.

Everything a preprocessor remembers about a device (the seen readings for de-duplication, the open
window, the last N feature records for sequences) follows from what it already committed: the
windows topic says which windows were emitted, the features topic holds every feature record with
a fingerprint of its reading. Both are keyed by device like the raw topic, so with equal partition
counts raw partition p feeds partition p of each; a partition moving to another replica (or this
one restarting) takes its devices' state with it, read back with read_committed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamtrain import logs
from streamtrain.dedup import FINGERPRINT_HEADER, Deduplicator
from streamtrain.kafka import client_config, watermarks
from streamtrain.preprocessing.engine import Engine

log = logs.get("preprocess")


def read_tail(reader: Consumer, topic: str, partitions: list[int], limit: int, handle: Callable[[object], None]) -> int:
    """Hand the newest ``limit`` committed records of each partition (none with 0) to ``handle``, in
    order per partition; returns how many were read."""
    md = reader.list_topics(topic, timeout=10).topics[topic]
    parts = [p for p in partitions if p in md.partitions] if len(md.partitions) else []
    assign, ends = [], {}
    for p in parts:
        lo, hi = watermarks(reader, TopicPartition(topic, p))
        if hi > lo:
            start = max(lo, hi - limit) if limit else hi
            assign.append(TopicPartition(topic, p, start if start > lo else OFFSET_BEGINNING))
            ends[p] = hi
    count = 0
    if not assign:
        return 0
    reader.assign(assign)
    while ends:
        for m in reader.consume(1000, 1.0):
            if m.error() or m.partition() not in ends:
                continue
            handle(m)
            count += 1
        # position() moves past transaction markers and aborted records too.
        for tp in reader.position([TopicPartition(topic, p) for p in list(ends)]):
            if tp.offset >= ends[tp.partition]:
                del ends[tp.partition]
    reader.unassign()
    return count


def source_partitions(reader: Consumer, raw: str, other: str, assigned: list[int]) -> tuple[list[int], bool]:
    """The partitions of ``other`` holding the devices of raw partitions ``assigned``, and whether they
    are exactly those (equal partition counts); otherwise all of them, since a device's partition there
    is not p."""
    md = reader.list_topics(timeout=10).topics
    if other not in md or md[other].error is not None:
        return [], False
    if len(md[raw].partitions) == len(md[other].partitions):
        return assigned, True
    return sorted(md[other].partitions), False


def rebuild(settings, engine: Engine, dedup: Deduplicator | None, assigned: list[int]) -> dict[int, set[str]]:
    """Rebuild the state of the devices of raw partitions ``assigned``: first the emitted windows
    (so a window is never emitted twice), then every committed feature record replayed. Returns the
    devices restored per raw partition.

    With partition counts that differ from the raw topic's, only the de-duplication state is rebuilt
    (from every features partition, as it is keyed by device alone): windows and histories would
    mix in devices of other replicas."""
    t0 = time.monotonic()
    reader = Consumer(
        client_config(
            settings.kafka_bootstrap,
            **{
                "group.id": f"{settings.group_id}-restore",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
        )
    )
    counts = {"windows": 0, "features": 0}
    limit = settings.dedup_restore_records
    devices: dict[int, set[str]] = {p: set() for p in assigned}
    same = [True]

    def window(m) -> None:
        try:
            engine.emitted(json.loads(m.value()))
        except (ValueError, KeyError, TypeError, RecursionError):
            pass

    def feature(m) -> None:
        try:
            body = json.loads(m.value())
            if dedup is not None and isinstance(body.get("seq"), int):
                reading = dict(m.headers() or []).get(FINGERPRINT_HEADER)
                dedup.add(str(body["device_id"]), body["seq"], reading.decode() if reading else None)
            if same[0]:
                engine.restore(body)
                devices[m.partition()].add(str(body["device_id"]))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass

    try:
        parts, same[0] = source_partitions(reader, settings.topic_raw, settings.topic_features, assigned)
        if not same[0] and (engine.size or engine.seq_length):
            log.warning(
                "state_not_restored",
                what="open windows and sequence histories",
                why=f"{settings.topic_features} has another partition count than {settings.topic_raw}",
            )
        if engine.size and same[0]:
            windows, same_windows = source_partitions(reader, settings.topic_raw, settings.topic_windows, assigned)
            if same_windows:
                counts["windows"] = read_tail(reader, settings.topic_windows, windows, limit, window)
        if dedup is not None or same[0]:
            counts["features"] = read_tail(reader, settings.topic_features, parts, limit, feature)
    finally:
        reader.close()
    log.info(
        "state_restored",
        partitions=assigned,
        features=counts["features"],
        windows=counts["windows"],
        open_windows=len(engine.open),
        histories=len(engine.history),
        dedup_devices=len(dedup) if dedup is not None else None,
        ms=round((time.monotonic() - t0) * 1000),
    )
    return devices
