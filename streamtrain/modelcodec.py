"""How a model version travels on the compacted models topic.

A version is a set of records with keys under ``model/<version>/``:

    model/<version>/chunk/<i>   artefact bytes, at most CHUNK_BYTES each
    model/<version>/manifest    JSON metadata + sha256, size and chunk count (written last)

A version may carry attachments (e.g. ``onnx``: the same model exported for the JVM scorer).
Their bytes follow the artefact's in the same chunk sequence (chunk numbers from the
artefact's count on) and the manifest's ``attachments`` says which chunks are whose, with
size and sha256. Readers that predate attachments assemble only the first ``chunks``
chunks, so older scorers keep working unchanged.

Chunks let artefacts larger than one Kafka message through; the manifest comes last, so a
reader that sees it has every chunk before it (one partition keeps order). Compaction keeps
the newest record per key, so every version stays complete on the topic. Readers verify size
and checksum before a version is handed on; anything else is a ``ModelRejected`` with a reason.
Who may publish (signatures over the manifest) and how high a version may be numbered is
``streamtrain.modelsign``'s part: the assembler asks it about each manifest before reading it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamtrain.kafka import READER_GROUP, Deliveries, DeliveryFailed, client_config, flush_or_raise, watermarks
from streamtrain.modelsign import ModelSigner, ModelTrust

CHUNK_BYTES = 900 * 1024
MAX_ARTEFACT_BYTES = 256 * 1024 * 1024
FORMAT_VERSION = 1
KEY = re.compile(rb"^model/(\d{1,9})/(manifest|chunk/(\d{1,6}))$")
ATTACHMENT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
REQUIRED = ("version", "feature_names", "threshold", "format")


def publisher_transactional_id(topic: str) -> str:
    """The one transactional id of every trainer publishing to ``topic``: a starting trainer fences the others
    (streamtrain.trainer.publish), and it is the id ``streamtrain.access`` grants the trainer."""
    return f"streamtrain-trainer.{topic}"


class ModelRejected(Exception):
    """A model version (or a record claiming to be part of one) that must not be served."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ModelVersion:
    metadata: dict
    artefact: bytes
    attachments: dict[str, bytes] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return int(self.metadata["version"])


def _split(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]


def encode(artefact: bytes, metadata: dict, attachments: dict[str, bytes] | None = None) -> list[tuple[bytes, bytes]]:
    """(key, value) records of one version, chunks first (artefact, then attachments), manifest last."""
    version = int(metadata["version"])
    total = len(artefact) + sum(len(a) for a in (attachments or {}).values())
    if total > MAX_ARTEFACT_BYTES:
        raise ModelRejected("too_large", f"{total} bytes > {MAX_ARTEFACT_BYTES}")
    chunks = _split(artefact)
    manifest: dict[str, Any] = {
        "codec": FORMAT_VERSION,
        "sha256": hashlib.sha256(artefact).hexdigest(),
        "size": len(artefact),
        "chunks": len(chunks),
        "metadata": {**metadata, "sha256": hashlib.sha256(artefact).hexdigest()},
    }
    if attachments:
        manifest["attachments"] = {}
        for name, data in sorted(attachments.items()):
            if not ATTACHMENT_NAME.match(name):
                raise ValueError(f"attachment name {name!r} must match {ATTACHMENT_NAME.pattern}")
            part = _split(data)
            manifest["attachments"][name] = {
                "first_chunk": len(chunks),
                "chunks": len(part),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            chunks.extend(part)
    records = [(f"model/{version}/chunk/{i}".encode(), c) for i, c in enumerate(chunks)]
    records.append((f"model/{version}/manifest".encode(), json.dumps(manifest).encode()))
    return records


def version_keys(mv: ModelVersion) -> list[bytes]:
    """Every key ``encode`` wrote for ``mv`` (chunks of artefact and attachments, then the manifest): what a
    deletion tombstones, so compaction removes the whole version."""
    chunks = len(_split(mv.artefact)) + sum(len(_split(a)) for a in mv.attachments.values())
    return [f"model/{mv.version}/chunk/{i}".encode() for i in range(chunks)] + [f"model/{mv.version}/manifest".encode()]


def publish_model(
    producer,
    topic: str,
    artefact: bytes,
    metadata: dict,
    timeout: float = 60.0,
    attachments: dict[str, bytes] | None = None,
    signer: ModelSigner | None = None,
) -> None:
    """Write one version to the models topic and wait until Kafka has all of it (its manifest signed by
    ``signer``, if given)."""
    deliveries = Deliveries()
    for key, value in encode(artefact, metadata, attachments):
        headers = [signer.header(value)] if signer is not None and key.endswith(b"/manifest") else None
        while True:
            try:
                producer.produce(topic, value, key=key, headers=headers, on_delivery=deliveries.report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    try:
        flush_or_raise(producer, deliveries, timeout)
    except DeliveryFailed as exc:
        raise DeliveryFailed(f"model v{metadata.get('version')} not fully published: {exc}") from exc


class ModelAssembler:
    """Feed it every record of the models topic in order; it returns each version it completes and
    ``trust`` accepts (default: any signature or none, numbers up to the default bound)."""

    def __init__(self, trust: ModelTrust | None = None) -> None:
        self._chunks: dict[int, dict[int, bytes]] = {}
        self.trust = trust or ModelTrust()

    def add(self, key: bytes | None, value: bytes | None, headers=None) -> ModelVersion | None:
        if key is None:
            raise ModelRejected("bad_key", "record without a key on the models topic")
        m = KEY.match(key)
        if not m:
            raise ModelRejected("bad_key", f"unexpected key {key[:80]!r}")
        version = int(m.group(1))
        if value is None:
            self._chunks.pop(version, None)  # tombstone: the version was deleted
            return None
        if m.group(2) != b"manifest":
            if version > self.trust.max_version:
                return None  # not kept: its manifest, if it comes, is refused and logged as out of range
            parts = self._chunks.setdefault(version, {})
            parts[int(m.group(3))] = value
            if sum(len(p) for p in parts.values()) > MAX_ARTEFACT_BYTES:
                self._chunks.pop(version, None)
                raise ModelRejected("too_large", f"v{version} exceeds {MAX_ARTEFACT_BYTES} bytes")
            return None
        parts = self._chunks.pop(version, {})
        # Before the manifest is even parsed: an unsigned or out-of-range version is not read at all.
        refusal = self.trust.refusal(version, value, headers)
        if refusal is not None:
            raise ModelRejected(*refusal)
        try:
            manifest = json.loads(value)
            if not isinstance(manifest, dict):
                raise ValueError("manifest is not a JSON object")
            count, size, digest = int(manifest["chunks"]), int(manifest["size"]), str(manifest["sha256"])
            metadata = manifest["metadata"]
            if not isinstance(metadata, dict):
                raise ValueError("metadata is not a JSON object")
        except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as exc:
            # OverflowError: "size": Infinity would otherwise escape and stop the model watcher.
            raise ModelRejected("bad_metadata", f"v{version}: {str(exc)[:200]}") from None
        if manifest.get("codec") != FORMAT_VERSION:
            raise ModelRejected(
                "incompatible", f"v{version}: codec {str(manifest.get('codec'))[:40]!r}, expected {FORMAT_VERSION}"
            )
        # Checked before anything loops over them: a manifest claiming 10^9 chunks must not stall the reader.
        if not 0 <= size <= MAX_ARTEFACT_BYTES:
            raise ModelRejected("too_large" if size > 0 else "bad_metadata", f"v{version}: size {size}")
        if not 0 <= count <= MAX_ARTEFACT_BYTES // CHUNK_BYTES + 1:
            raise ModelRejected("bad_metadata", f"v{version}: {count} chunks")
        missing = [i for i in range(count) if i not in parts]
        if missing:
            raise ModelRejected("truncated", f"v{version}: chunks {missing[:5]} of {count} missing")
        artefact = b"".join(parts[i] for i in range(count))
        if len(artefact) != size:
            raise ModelRejected("truncated", f"v{version}: {len(artefact)} bytes, manifest says {size}")
        if hashlib.sha256(artefact).hexdigest() != digest:
            raise ModelRejected("checksum", f"v{version}: sha256 mismatch")
        absent = [k for k in REQUIRED if k not in metadata]
        if absent:
            raise ModelRejected("bad_metadata", f"v{version}: metadata lacks {absent}")
        if metadata.get("version") != version:
            raise ModelRejected("bad_metadata", f"key says v{version}, metadata says {metadata.get('version')!r}")
        return ModelVersion(metadata, artefact, _attachments(version, manifest, parts, count))


def _attachments(version: int, manifest: dict, parts: dict[int, bytes], artefact_chunks: int) -> dict[str, bytes]:
    """Attachments listed in the manifest, each checked like the artefact (a bad one refuses the version)."""
    listed = manifest.get("attachments") or {}
    if not isinstance(listed, dict):
        raise ModelRejected("bad_metadata", f"v{version}: attachments is not a JSON object")
    out = {}
    for name, info in listed.items():
        try:
            first, count = int(info["first_chunk"]), int(info["chunks"])
            size, digest = int(info["size"]), str(info["sha256"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ModelRejected(
                "bad_metadata", f"v{version}: attachment {str(name)[:40]!r}: {str(exc)[:200]}"
            ) from None
        if first < artefact_chunks or count < 1:
            raise ModelRejected("bad_metadata", f"v{version}: attachment {name!r} overlaps the artefact's chunks")
        # As for the artefact: bounds first, so a claim of 10^9 chunks cannot stall the reader.
        if count > MAX_ARTEFACT_BYTES // CHUNK_BYTES + 1 or not 0 <= size <= MAX_ARTEFACT_BYTES:
            raise ModelRejected("bad_metadata", f"v{version}: attachment {name!r}: {count} chunks, {size} bytes")
        missing = [i for i in range(first, first + count) if i not in parts]
        if missing:
            raise ModelRejected("truncated", f"v{version}: attachment {name!r} chunks {missing[:5]} missing")
        data = b"".join(parts[i] for i in range(first, first + count))
        if len(data) != size:
            raise ModelRejected(
                "truncated", f"v{version}: attachment {name!r} has {len(data)} bytes, manifest says {size}"
            )
        if hashlib.sha256(data).hexdigest() != digest:
            raise ModelRejected("checksum", f"v{version}: attachment {name!r} sha256 mismatch")
        out[name] = data
    return out


def read_versions(
    bootstrap: str,
    topic: str,
    timeout: float = 10.0,
    trust: ModelTrust | None = None,
    keep_deleted: bool = False,
    controls: list[tuple[bytes, bytes | None]] | None = None,
) -> list[ModelVersion]:
    """Every complete, valid version on the topic that ``trust`` accepts, in topic order (others are skipped);
    versions deleted since (a manifest tombstone) only with ``keep_deleted``. The control records
    (``streamtrain.modelcontrol``) are appended to ``controls`` in topic order when it is given."""
    c = Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": f"{READER_GROUP}.models",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.message.max.bytes": 4 * 1024 * 1024,
            },
        )
    )
    try:
        _, end = watermarks(c, TopicPartition(topic, 0), timeout)
        if end == 0:
            return []
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assembler = ModelAssembler(trust)
        out: list[ModelVersion] = []
        deadline = time.monotonic() + timeout
        # The consumer's position, not the last record's offset: a transaction's commit marker (the
        # trainer publishes in transactions) takes the last offset and is never returned as a record.
        while c.position([TopicPartition(topic, 0)])[0].offset < end and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            if (msg.key() or b"").startswith(b"control/"):
                if controls is not None:
                    controls.append((msg.key(), msg.value()))
                continue
            deleted = KEY.match(msg.key() or b"")
            if msg.value() is None and deleted and deleted.group(2) == b"manifest" and not keep_deleted:
                # A deleted version (the trainer keeps only the newest few): gone even before compaction runs.
                out = [mv for mv in out if mv.version != int(deleted.group(1))]
            try:
                mv = assembler.add(msg.key(), msg.value(), msg.headers())
            except ModelRejected:
                continue
            if mv is not None:
                out.append(mv)
        return out
    finally:
        c.close()
