"""The scorer's records, a micro-batch at a time: consumed feature records -> model input matrix
(plus the fields passed through), and scores -> score records.

The fast path decodes a whole batch in one msgspec call into typed rows (features must be numbers,
not bools or strings, checked in C) and builds the matrix without a Python loop per field. Anything
it does not accept goes through the reference path, one record at a time (``json.loads`` and
``LoadedModel.extract``), which alone decides each dead letter's reason, so both paths accept and
refuse exactly the same records for the same reasons.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np

from streamtrain.model import FLOAT32_MAX, BadInput, LoadedModel
from streamtrain.topics import ARRIVED_HEADER

#: Fields of a feature record copied into its score (``anomaly`` is renamed ``anomaly_kind``).
GROUND_TRUTH = (("label", "label"), ("anomaly", "anomaly_kind"), ("device_type", "device_type"))
UNSET = msgspec.UNSET


def _row_type(feature_names: list[str]) -> type:
    """A typed row: the model's features (any key spelling, hence f0..fn renamed) and the passed-through
    fields; a passed-through field that is also a feature reads the feature."""
    fields: list = [(f"f{i}", float) for i in range(len(feature_names))]
    passed = [("device_id", None), ("seq", None), ("ts", None)] + [(name, UNSET) for name, _ in GROUND_TRUTH]
    fields += [(name, Any, default) for name, default in passed if name not in feature_names]
    aliases = {
        name: property(attrgetter(f"f{feature_names.index(name)}")) for name, _ in passed if name in feature_names
    }
    return msgspec.defstruct(
        "FeatureRow", fields, rename={f"f{i}": n for i, n in enumerate(feature_names)}, namespace=aliases
    )


@dataclass
class Decoded:
    """A consumed batch split into what the model scores (``x``, one row per ``keep`` message, with its
    passed-through fields in ``rows``) and what goes to the dead-letter topic (message, reason, detail)."""

    x: np.ndarray
    keep: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    bad: list = field(default_factory=list)


class BatchDecoder:
    """Decodes consumed batches for one model version (its feature names and input kind)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.n = len(model.feature_names)
        self.row_type = _row_type(model.feature_names) if model.input_kind == "features" else None
        if self.row_type is not None:
            self._one: Any = msgspec.json.Decoder(self.row_type).decode
            self._lines: Any = msgspec.json.Decoder(self.row_type).decode_lines
            self._features = attrgetter(*(f"f{i}" for i in range(self.n)))

    def decode(self, msgs: list) -> Decoded:
        if self.row_type is None:  # windowed models: the reference path
            return self._reference(msgs, range(len(msgs)), None)
        values = [m.value() for m in msgs]
        rows = self._typed(values)
        typed = [i for i, r in enumerate(rows) if r is not None]
        x = np.array(list(map(self._features, [rows[i] for i in typed])), dtype=np.float64).reshape(-1, self.n)
        # float32 must hold every value finitely (3.5e38 is a finite double but an infinite float32).
        fits = (np.abs(x) <= FLOAT32_MAX).all(axis=1)  # also False for NaN
        if len(typed) == len(msgs) and fits.all():
            return Decoded(x.astype(np.float32), msgs, rows)
        good = {i: j for j, i in enumerate(typed) if fits[j]}
        rest = [i for i in range(len(msgs)) if i not in good]
        return self._reference(msgs, rest, (good, x, rows))

    def _typed(self, values: list) -> list:
        """Typed rows aligned with ``values`` (None where the fast path does not accept the record)."""
        if None not in values:
            joined = b"\n".join(values)
            # One record per line only if no record holds a line break of its own; blank lines are
            # skipped, so a blank record shows as a row too few.
            if joined.count(b"\n") == len(values) - 1:
                try:
                    rows = self._lines(joined)
                    if len(rows) == len(values):
                        return rows
                except (msgspec.DecodeError, ValueError):
                    pass  # some record is not for the fast path: find which, one by one
        return [self._try_one(v) for v in values]

    def _try_one(self, value):
        if value is None:
            return None
        try:
            return self._one(value)
        except (msgspec.DecodeError, ValueError):
            return None

    def _reference(self, msgs: list, indexes, fast) -> Decoded:
        """The reference path for ``indexes``; ``fast`` = (accepted index -> row of x, x, typed rows)."""
        picked: list[tuple[int, list, Any]] = []  # (index, features, passed-through row)
        bad = []
        if fast is not None:
            good, x, rows = fast
            picked += [(i, x[j], rows[i]) for i, j in good.items()]
        for i in indexes:
            m = msgs[i]
            try:
                body = json.loads(m.value())
                if not isinstance(body, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, TypeError, RecursionError) as exc:
                bad.append((m, "malformed_json", str(exc)[:200]))
                continue
            try:
                features = self.model.extract(body)
            except BadInput as exc:
                bad.append((m, exc.reason, str(exc)[:200]))
                continue
            picked.append((i, features, _Passthrough(body)))
        picked.sort(key=lambda p: p[0])
        x = np.asarray([p[1] for p in picked], dtype=np.float32) if picked else self.model.empty_input()
        return Decoded(x, [msgs[i] for i, _, _ in picked], [p[2] for p in picked], bad)


class _Passthrough:
    """The passed-through fields of a record decoded by the reference path, shaped like a typed row."""

    __slots__ = ("device_id", "seq", "ts", "label", "anomaly", "device_type")

    def __init__(self, body: dict) -> None:
        self.device_id, self.seq, self.ts = body.get("device_id"), body.get("seq"), body.get("ts")
        self.label, self.anomaly = body.get("label", UNSET), body.get("anomaly", UNSET)
        self.device_type = body.get("device_type", UNSET)


class _Source(msgspec.Struct, gc=False):
    partition: int
    offset: int


class _Challenger(msgspec.Struct, gc=False):
    model_version: int
    score: float
    is_anomaly: bool


class _Score(msgspec.Struct, gc=False):
    """A score record as msgspec encodes it, fields in the order the records always had; the optional ones
    are left out while UNSET. Built positionally (every field has a default so the optional ones can sit
    between the others) and outside the garbage collector (no cycles): half the cost of keywords."""

    device_id: Any = UNSET
    seq: Any = UNSET
    ts: Any = UNSET
    model_version: int = 0
    score: float = 0.0
    threshold: float = 0.0
    is_anomaly: bool = False
    baseline: str = ""
    baseline_records: Any = UNSET
    scored_at: float = 0.0
    scorer: str = "python"
    instance: str = ""
    source: Any = UNSET
    label: Any = UNSET
    anomaly_kind: Any = UNSET
    device_type: Any = UNSET
    challenger: Any = UNSET


_ENCODE_LINES = msgspec.json.Encoder().encode_lines


def score_records(decoded: Decoded, judged, version: int, challenger, instance: str, now: float) -> list[bytes]:
    """The score record of each kept message, JSON-encoded. ``challenger`` = (version, scores, flags) or None."""
    records = _score_structs(decoded, judged, version, challenger, instance, now)
    if not (np.isfinite(judged.scores).all() and (challenger is None or np.isfinite(challenger[1]).all())):
        # msgspec writes a non-finite float as null; json keeps Infinity, as the score records always had.
        return [json.dumps(msgspec.to_builtins(r)).encode() for r in records]
    # One encoder call for the batch, one line per record (JSON escapes line breaks inside strings).
    return _ENCODE_LINES(records).split(b"\n")[:-1]


def _score_structs(decoded: Decoded, judged, version: int, challenger, instance: str, now: float) -> list[_Score]:
    n = len(decoded.keep)
    scores, thresholds, flags = judged.scores.tolist(), judged.thresholds.tolist(), judged.flags.tolist()
    baselines = judged.baselines
    counts = judged.baseline_records if judged.baseline_records is not None else [UNSET] * n
    shadow: list = [UNSET] * n
    if challenger is not None:
        ch_version = challenger[0]
        shadow = [_Challenger(ch_version, s, f) for s, f in zip(challenger[1].tolist(), challenger[2].tolist())]
    return [
        _Score(
            r.device_id,
            r.seq,
            r.ts,
            version,
            scores[i],
            thresholds[i],
            flags[i],
            baselines[i],
            counts[i],
            now,
            "python",
            instance,
            _Source(m.partition(), m.offset()),
            r.label,
            r.anomaly,
            r.device_type,
            shadow[i],
        )
        for i, (m, r) in enumerate(zip(decoded.keep, decoded.rows))
    ]


def arrivals_s(msgs: list) -> np.ndarray:
    """When each scored record's reading reached Kafka: the preprocessor's header, else the record's own
    (arrival) timestamp."""
    out = np.array([m.timestamp()[1] for m in msgs], dtype=np.float64)
    for i, headers in enumerate([m.headers() for m in msgs]):
        for key, value in headers or ():
            if key == ARRIVED_HEADER and value:
                try:
                    out[i] = int(value)
                except ValueError:
                    pass
                break
    return out / 1000


def event_times_s(rows: list) -> np.ndarray:
    """The readings' own times (``ts``) where they are numbers."""
    ts = [r.ts for r in rows]
    if set(map(type, ts)) <= {float, int}:  # the usual batch (a bool's type is bool, not int)
        return np.array(ts, dtype=np.float64)
    return np.array([t for t in ts if isinstance(t, (int, float)) and not isinstance(t, bool)], dtype=np.float64)
