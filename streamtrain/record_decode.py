"""Feature records (JSON) to numpy rows: one record at a time, or a whole consumed batch at once.

``BatchDecoder`` decodes a batch of record values with one call into msgspec's C decoder
(the values joined into one JSON array, typed by a struct of the wanted fields) and builds
the arrays with numpy; only a batch holding a record that does not fit that strict shape
(a missing or non-numeric feature, a string label, a non-object) is decoded again record by
record with ``decode_body`` / ``decode_window``, the reference rules, which then decide what
is skipped. Both paths give the same rows for the same records.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Union

import msgspec
import numpy as np


def decode(value: bytes, feature_names: list[str]) -> tuple[list[float], int] | None:
    """Feature vector and label (-1 when absent) of one record, or None when unusable."""
    try:
        body = json.loads(value)
    except (ValueError, RecursionError):
        return None
    row = decode_body(body, feature_names) if isinstance(body, dict) else None
    if row is None:
        return None
    label = body.get("label")
    return row, (int(label) if isinstance(label, (int, bool)) else -1)


def decode_body(body: dict, feature_names: list[str]) -> list[float] | None:
    try:
        row = [float(body[f]) for f in feature_names]
    except (ValueError, KeyError, TypeError):
        return None
    return row if all(math.isfinite(v) for v in row) else None


def decode_window(body: dict, feature_names: list[str], window: int) -> list[list[float]] | None:
    """The [window, features] rows of a sequence record (oldest first), or None when unusable."""
    names, values = body.get("features"), body.get("values")
    if not isinstance(names, list) or not isinstance(values, list) or len(values) != window:
        return None
    try:
        cols = [names.index(f) for f in feature_names]
        rows = [[float(r[c]) for c in cols] for r in values]
    except (ValueError, TypeError, IndexError):
        return None
    if not all(math.isfinite(v) for r in rows for v in r):
        return None
    return rows


@dataclass
class Decoded:
    """The usable records of one batch."""

    x: np.ndarray  # float32 [rows, features] or [rows, window, features]
    labels: np.ndarray  # int32, -1 where absent
    devices: list  # device_id of each row (None where absent)
    skipped: int  # records of the batch that were not usable


_Label = Union[int, bool, None]  # noqa: UP007 - msgspec reads the annotation at run time


class BatchDecoder:
    """Decodes batches of feature records (``window=None``) or sequence records.

    Without ``identities`` the labels and device ids are not decoded (all labels -1, no
    devices): about twice as fast, for readers that need the inputs only."""

    def __init__(self, feature_names: list[str], window: int | None = None, identities: bool = True) -> None:
        self.feature_names, self.window, self.identities = list(feature_names), window, identities
        n = len(self.feature_names)
        fields: list[tuple[Any, ...]]
        if window is None:
            fields = [(f"f{i}", float) for i in range(n)]
            rename = {f"f{i}": name for i, name in enumerate(self.feature_names)}
        else:
            fields = [("features", list[str]), ("values", list[list[float]])]
            rename = {"features": "features", "values": "values"}
        if identities:
            fields += [("label", _Label, -1), ("device_id", Any, None)]
            rename.update({"label": "label", "device_id": "device_id"})
        if window is None and identities and ({"label", "device_id"} & set(self.feature_names)):
            self._decoder = None  # a feature named like an identity field: the reference path only
        else:
            # gc=False: decoded JSON cannot form reference cycles, so the structs skip the cycle collector.
            record = msgspec.defstruct("Record", fields, rename=rename, gc=False)
            self._decoder = msgspec.json.Decoder(list[record])  # type: ignore[valid-type]
        #: Batches decoded record by record because a record did not fit the strict shape.
        self.fallbacks = 0
        names = [f"f{i}" for i in range(n)] if window is None else ["features", "values"]
        self._get = attrgetter(*(["label", "device_id"] if identities else []), *names)

    def decode(self, values: list[bytes]) -> Decoded:
        if not values:
            return self._empty()
        if self._decoder is not None:
            try:
                records = self._decoder.decode(b"[" + b",".join(values) + b"]")
            except (msgspec.DecodeError, msgspec.ValidationError):
                records = None
            if records is not None:
                fast = self._arrays(records)
                if fast is not None:
                    return fast
        self.fallbacks += 1
        return self._one_by_one(values)

    def _arrays(self, records: list) -> Decoded | None:
        """Arrays from structs, or None when a record needs the reference rules."""
        n = len(records)
        if self.identities:
            cols = list(zip(*map(self._get, records)))
            labels = cols[0] if None not in cols[0] else tuple(-1 if v is None else v for v in cols[0])
            devices, inputs = list(cols[1]), cols[2:]
        else:
            labels, devices = (-1,) * n, [None] * n
            inputs = list(map(self._get, records))  # one value (a single feature) or a tuple per record
        if self.window is None:
            x = np.asarray(inputs, np.float64).T if self.identities else np.asarray(inputs, np.float64).reshape(n, -1)
        else:
            names, values = inputs if self.identities else zip(*inputs)
            x = self._windows(list(names), list(values))
            if x is None:
                return None
        usable = np.isfinite(x.reshape(n, -1)).all(axis=1)
        label_arr = np.asarray(labels, dtype=np.int32)
        if usable.all():
            return Decoded(x.astype(np.float32), label_arr, devices, 0)
        return Decoded(
            x[usable].astype(np.float32),
            label_arr[usable],
            [d for d, ok in zip(devices, usable) if ok],
            int((~usable).sum()),
        )

    def _windows(self, names: list, values: list) -> np.ndarray | None:
        """[records, window, features] when every record names the same features in the same order."""
        first = names[0]
        if any(other != first for other in names):
            return None
        try:
            x = np.asarray(values, dtype=np.float64)
            if x.ndim != 3 or x.shape[1] != self.window:
                return None
            return x[:, :, [first.index(f) for f in self.feature_names]]
        except (ValueError, IndexError):  # ragged windows or rows, a feature the record lacks
            return None

    def _one_by_one(self, values: list[bytes]) -> Decoded:
        rows, labels, devices, skipped = [], [], [], 0
        for value in values:
            try:
                body = json.loads(value)
            except (ValueError, RecursionError):
                body = None
            if not isinstance(body, dict):
                skipped += 1
                continue
            row = (
                decode_body(body, self.feature_names)
                if self.window is None
                else decode_window(body, self.feature_names, self.window)
            )
            if row is None:
                skipped += 1
                continue
            label = body.get("label")
            rows.append(row)
            labels.append(int(label) if isinstance(label, (int, bool)) else -1)
            devices.append(body.get("device_id"))
        if not rows:
            out = self._empty()
            out.skipped = skipped
            return out
        if not self.identities:
            labels, devices = [-1] * len(rows), [None] * len(rows)
        return Decoded(np.asarray(rows, dtype=np.float32), np.asarray(labels, dtype=np.int32), devices, skipped)

    def _empty(self) -> Decoded:
        shape = (0, len(self.feature_names)) if self.window is None else (0, self.window, len(self.feature_names))
        return Decoded(np.zeros(shape, np.float32), np.zeros(0, np.int32), [], 0)
