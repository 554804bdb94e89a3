"""The embedded engine: the spec's semantics record by record, no broker needed.

filter -> features + derived (+ identity and ground truth passed through) -> per-device
event-time tumbling windows over the records that passed. A window [k*size, (k+1)*size) of a
device is emitted when a later record of that device arrives past its end, when the caller
closes it (``close``: the device fell silent, or its state is evicted), or on flush(). A record
older than its device's open or last emitted window is ``late``: in the features, in no window.

A record whose identity (``device_id``, ``ts``, ``seq``) is missing or ill-typed is answered
with an error (streamtrain.telemetry.check_identity's reason), never an exception: anything
that can write the raw topic can send one, and an exception would crash-loop every replica.

With ``sequences``, every feature record of a device that has at least N records also yields
a sequence: the device's last N feature vectors (oldest first), with the identity and ground
truth of the newest one. Sequences follow arrival order per device (the raw topic is keyed by
device, so one partition holds a device's records in order).

Windows and histories live in memory and are a function of a device's feature records: ``restore``
replays committed feature records (and ``emitted`` the windows already written) to rebuild them
when a device's partition moves to this process (a restart, another replica's partitions).
"""

from __future__ import annotations

import math
import operator
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from streamtrain import telemetry
from streamtrain.preprocessing.batch import FeatureRecords
from streamtrain.preprocessing.compile import EvalError, compile_expr, finite
from streamtrain.preprocessing.spec import IDENTITY, PreprocessSpec, parse_expression

PASSTHROUGH = ("device_type", "label", "anomaly")


@dataclass
class Result:
    features: Any = None  # the feature record (a dict, or a struct: process_evaluated), None when filtered out / failed
    windows: list[dict] = field(default_factory=list)
    sequences: list[dict] = field(default_factory=list)
    error: EvalError | None = None  # why the record could not be processed (dead letter)
    filtered: bool = False
    late: bool = False  # older than its device's open (or last emitted) window: aggregated in none


class _Window:
    __slots__ = ("start", "values", "lists")

    def __init__(self, start: float, names: list[str]) -> None:
        self.start = start
        self.values: dict[str, list[float]] = {n: [] for n in names}
        self.lists = list(self.values.values())  # the same lists, in the order of ``names``


class Engine:
    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self.filter = compile_expr(parse_expression(spec.filter, "filter")) if spec.filter else None
        self.derived = [(d.name, compile_expr(parse_expression(d.expr, d.name))) for d in spec.derived]
        self.size = spec.windows.size_seconds if spec.windows else None
        self.aggs = spec.windows.aggregates if spec.windows else []
        self.agg_fields = sorted({a.field for a in self.aggs})
        self.open: dict[str, _Window] = {}
        self.closed: dict[str, float] = {}  # per device, the start of the newest window emitted
        self.passthrough = [f for f in PASSTHROUGH if f != spec.label] + ([spec.label] if spec.label else [])
        self.seq_length = spec.sequences.length if spec.sequences else None
        self.history: dict[str, deque] = {}
        self._identity_and_features = (*IDENTITY, *spec.features)
        self._get_identity_and_features = operator.itemgetter(*self._identity_and_features)
        self._derived_names = [name for name, _ in self.derived]
        self._records = FeatureRecords(spec, self.passthrough)
        self._window_values = self._records.getter(self.agg_fields)

    def process(self, record: dict) -> Result:
        identity = telemetry.check_identity(record)
        if isinstance(identity, telemetry.Rejection):
            return Result(error=EvalError(identity.reason, identity.detail))
        try:
            if self.filter is not None and not self.filter(record):
                return Result(filtered=True)
            out = {k: record[k] for k in IDENTITY if k in record}
            for name in self.spec.features:
                if name not in record or record[name] is None:
                    raise EvalError("missing_field", f"feature {name!r} is missing")
                out[name] = finite(record[name], name)
            scope = {**record, **out}
            for name, fn in self.derived:
                scope[name] = out[name] = finite(fn(scope), name)
            for k in self.passthrough:
                if k in record:
                    out[k] = record[k]
        except EvalError as exc:
            return Result(error=exc)
        except (TypeError, ValueError, OverflowError) as exc:
            return Result(error=EvalError("expression_error", str(exc)))
        return self._accepted(out)

    def process_evaluated(self, record: dict, derived: list[float], struct: bool = False) -> Result:
        """``process`` of a record whose identity was checked (all three present), which the filter keeps,
        whose features are finite floats and whose derived values (in the spec's order) were computed
        already (batch.py). ``struct``: the features may come as a msgspec struct (FeatureRecords), which
        msgspec writes as it writes the dict (for a record without NaN: msgspec writes NaN as null)."""
        if struct and self._records.enabled and not self.seq_length:
            row = self._records.make(record, derived)
            if not self.size:
                return Result(features=row)
            windows, late = self.window(record["device_id"], float(record["ts"]), self._window_values(row))
            return Result(features=row, windows=windows, late=late)
        out = dict(zip(self._identity_and_features, self._get_identity_and_features(record)))
        out.update(zip(self._derived_names, derived))
        for k in self.passthrough:
            if k in record:
                out[k] = record[k]
        if self.size and not self.seq_length:
            # The usual case first: the reading falls in its device's open window (what _window does then).
            w = self.open.get(out["device_id"])
            if w is not None and math.floor(float(out["ts"]) / self.size) * self.size == w.start:
                values = w.values
                for f in self.agg_fields:
                    values[f].append(out[f])
                return Result(features=out)
        return self._accepted(out)

    def _accepted(self, out: dict) -> Result:
        windows, late = self._window(out) if self.size else ([], False)
        sequences = self._sequence(out) if self.seq_length else []
        return Result(features=out, windows=windows, sequences=sequences, late=late)

    def _sequence(self, rec: dict) -> list[dict]:
        names = self.spec.feature_names
        h = self.history.get(rec["device_id"])
        if h is None:
            h = self.history[rec["device_id"]] = deque(maxlen=self.seq_length)
        h.append([rec[n] for n in names])
        if len(h) < self.seq_length:
            return []
        out = {k: rec[k] for k in IDENTITY if k in rec}
        out["features"] = names
        out["values"] = [list(v) for v in h]
        for k in self.passthrough:
            if k in rec:
                out[k] = rec[k]
        return [out]

    def _window(self, rec: dict) -> tuple[list[dict], bool]:
        return self.window(rec["device_id"], float(rec["ts"]), (rec[f] for f in self.agg_fields))

    def window(self, device: str, ts: float, values: Iterable) -> tuple[list[dict], bool]:
        """The windows a reading of ``device`` at ``ts`` closes, and whether it came too late for any window;
        if not, its ``values`` (of ``agg_fields``, in order; read only then) join its window."""
        start = math.floor(ts / self.size) * self.size
        w = self.open.get(device)
        emitted = []
        if w is None or start != w.start:  # not the usual case, its device's open window
            if w is not None and start > w.start:
                emitted.append(self._close(device, w))
                w = None
            if w is None:
                if start <= self.closed.get(device, -math.inf):
                    return emitted, True  # its window was emitted already (closed by a timer or a stop's flush)
                w = self.open[device] = _Window(start, self.agg_fields)
            if start < w.start:
                return emitted, True  # for a window already emitted: counted by the caller as late
        for values_of_field, v in zip(w.lists, values):
            values_of_field.append(v)
        return emitted, False

    def _close(self, device: str, w: _Window) -> dict:
        self.closed[device] = w.start
        out = {
            "device_id": device,
            "window_start_ms": int(w.start * 1000),
            "window_end_ms": int((w.start + self.size) * 1000),
        }
        for a in self.aggs:
            vals = w.values[a.field]
            if a.fn == "avg":
                out[a.name] = sum(vals) / len(vals)
            elif a.fn == "min":
                out[a.name] = min(vals)
            elif a.fn == "max":
                out[a.name] = max(vals)
            elif a.fn == "sum":
                out[a.name] = sum(vals)
            elif a.fn == "count":
                out[a.name] = len(vals)
        return out

    def close(self, devices) -> list[dict]:
        """Emit the open windows of ``devices`` now (they fell silent, or their state is being evicted);
        a later record of theirs for the same window is late."""
        out = []
        for d in devices:
            w = self.open.pop(d, None)
            if w is not None and (any(w.values.values()) or not self.agg_fields):
                out.append(self._close(d, w))
        return out

    def flush(self) -> list[dict]:
        """Emit every open window (at shutdown or when a test ends)."""
        out = [self._close(d, w) for d, w in self.open.items() if any(w.values.values()) or not self.agg_fields]
        self.open.clear()
        return out

    # ------------------------------------------------------------ state that moves with partitions
    def restore(self, features: dict) -> None:
        """Replay one committed feature record into the device's window and history, emitting nothing:
        what was emitted from it is in the output topics already."""
        if self.size:
            self._window(features)
        if self.seq_length:
            self._sequence(features)

    def emitted(self, window: dict) -> None:
        """A window record already written: its window (and older ones) are closed for its device."""
        device, start = str(window["device_id"]), window["window_start_ms"] / 1000
        if start > self.closed.get(device, -math.inf):
            self.closed[device] = start
        w = self.open.get(device)
        if w is not None and w.start <= start:
            del self.open[device]

    def forget(self, devices) -> None:
        """Drop the state of devices whose partitions went to another process (it rebuilds them)."""
        for d in devices:
            self.open.pop(d, None)
            self.closed.pop(d, None)
            self.history.pop(d, None)
