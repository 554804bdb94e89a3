"""The spec's filter and derived expressions over a whole batch at once (numpy), and fast JSON.

The record-by-record engine (engine.py) stays the definition: this module only computes, for the
rows where the answer is certainly the same, what the engine's compiled expressions would answer.
A row is evaluated here when every field the filter, the features and the derived expressions read
is a finite Python ``float`` (IEEE arithmetic, the same in numpy and in Python); a division by zero,
a non-finite derived value or any other field type sends the row back to the engine's own closures,
which give its exact error (reason and detail). Expressions using functions whose Python results
are not floats (FLOOR, ROUND, SIGN, ...) are not vectorised at all.

JSON: msgspec decodes and encodes a record when that gives exactly what the standard library gives;
anything else (NaN literals, numbers out of range, lone surrogates, a missing value) goes through
``json`` so errors and their texts stay the same.
"""

from __future__ import annotations

import json
import math
import operator
import re
from hashlib import blake2b
from typing import Callable

import msgspec
import numpy as np
from sqlglot import exp

from streamtrain.preprocessing.spec import IDENTITY, PreprocessSpec, parse_expression

Columns = dict[str, np.ndarray]
VecFn = Callable[[Columns, list[np.ndarray]], np.ndarray]

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_sorted_encoder = msgspec.json.Encoder(order="sorted")
#: JSON of a record with no NaN or infinity in it (``dumps`` checks that first).
msgspec_encode = _encoder.encode
#: Beyond this an int literal is not exactly a float64.
_EXACT_INT = 2**53


def loads(payload):
    """``json.loads(payload)``, faster: the same value, or the same exception."""
    return decode(payload)[0]


def decode(payload) -> tuple[object, bool]:
    """``json.loads(payload)`` and whether msgspec decoded it: then it holds no NaN or infinity (msgspec
    refuses those literals and numbers beyond a double, which ``json`` reads)."""
    if type(payload) is bytes:
        try:
            return _decoder.decode(payload), True
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
            pass
    return json.loads(payload), False


def _plain(value) -> bool:
    """A value msgspec writes as json does (compact separators), short of float formatting."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    return False


def dumps(record: dict, check=None) -> bytes:
    """A record as JSON: msgspec when every value is a plain scalar, else ``json.dumps`` (NaN stays NaN).
    ``check``: only these keys can hold anything else (the others are known finite numbers or text)."""
    if check is None or check:
        for k in record if check is None else check:
            if k in record and not _plain(record[k]):
                return json.dumps(record).encode()
    try:
        return _encoder.encode(record)
    except (UnicodeEncodeError, TypeError, OverflowError):
        return json.dumps(record).encode()


def fingerprint_text(record: dict, finite: bool = False) -> str:
    """Exactly ``json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)`` (dedup's
    fingerprint input), by msgspec where both write the same bytes. ``finite``: the record holds no NaN or
    infinity (msgspec decoded it), which msgspec would write as null. Otherwise the two differ only in
    floats Python writes with an exponent (below 1e-4 or from 1e16 on), in nested values (not looked into
    here) and in text beyond ASCII: such records go through ``json``."""
    return _fingerprint_input(record, finite).decode()


def _fingerprint_input(record: dict, finite: bool) -> bytes:
    if finite:
        for v in record.values():
            t = type(v)
            if t is float:
                if not (1e-4 <= v < 1e16 or -1e16 < v <= -1e-4 or v == 0.0):
                    break
            elif t is dict or t is list:
                break
        else:
            try:
                out = _sorted_encoder.encode(record)
            except (UnicodeEncodeError, TypeError, OverflowError):
                out = b"\x80"
            if out.isascii() and out.find(b"\x7f") < 0:  # find: faster than `in` on bytes
                return out
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()


# ------------------------------------------------------------ expressions over columns
_ARITH: dict[type, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    exp.Add: np.add,
    exp.Sub: np.subtract,
    exp.Mul: np.multiply,
}
_COMPARE: dict[type, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    exp.GT: np.greater,
    exp.GTE: np.greater_equal,
    exp.LT: np.less,
    exp.LTE: np.less_equal,
    exp.EQ: np.equal,
    exp.NEQ: np.not_equal,
}


def _truth(a: np.ndarray) -> np.ndarray:
    return (a != 0).astype(np.float64)  # Python's bool() of a float; NaN is true in both


def vectorise(node: exp.Expression) -> VecFn | None:
    """The expression over float64 columns (booleans as 0.0/1.0, as Python's True/False compute), or None
    when it uses something whose Python result is not a float. ``bad`` collects rows the engine must redo."""
    if isinstance(node, exp.Paren):
        return vectorise(node.this)
    if isinstance(node, exp.Column):
        name = node.name
        return lambda cols, bad: cols[name]
    if isinstance(node, exp.Literal):
        value = float(node.this) if any(c in node.this for c in ".eE") else int(node.this)
        if isinstance(value, int) and abs(value) > _EXACT_INT:
            return None
        constant = float(value)
        return lambda cols, bad: np.float64(constant)  # type: ignore[return-value]
    if isinstance(node, (exp.And, exp.Or)):
        a, b = vectorise(node.this), vectorise(node.expression)
        if a is None or b is None:
            return None
        both = np.logical_and if isinstance(node, exp.And) else np.logical_or
        return lambda cols, bad: both(a(cols, bad) != 0, b(cols, bad) != 0).astype(np.float64)
    if isinstance(node, exp.Not):
        a = vectorise(node.this)
        return None if a is None else (lambda cols, bad: (a(cols, bad) == 0).astype(np.float64))
    if isinstance(node, exp.Neg):
        a = vectorise(node.this)
        return None if a is None else (lambda cols, bad: np.negative(a(cols, bad)))
    if isinstance(node, exp.Abs):
        a = vectorise(node.this)
        return None if a is None else (lambda cols, bad: np.abs(a(cols, bad)))
    if type(node) in _ARITH or type(node) in _COMPARE or isinstance(node, exp.Div):
        a, b = vectorise(node.this), vectorise(node.expression)
        if a is None or b is None:
            return None
        if isinstance(node, exp.Div):

            def divide(cols, bad):
                den = b(cols, bad)
                bad.append(np.broadcast_to(den == 0, _rows(cols)))  # the engine says division_by_zero
                return np.divide(a(cols, bad), np.where(den == 0, 1.0, den))

            return divide
        if type(node) in _ARITH:
            op = _ARITH[type(node)]
            return lambda cols, bad: op(a(cols, bad), b(cols, bad))
        cmp = _COMPARE[type(node)]
        return lambda cols, bad: cmp(a(cols, bad), b(cols, bad)).astype(np.float64)
    return None


def _rows(cols: Columns) -> tuple[int]:
    return (len(next(iter(cols.values()))),)


def _columns_of(node: exp.Expression) -> set[str]:
    return {c.name for c in node.find_all(exp.Column)}


class BatchExpressions:
    """The spec's filter and derived values for a batch's rows, where numpy gives the engine's answer.

    ``evaluate(records)`` answers one entry per record: None (the engine evaluates it: a row that is
    not all finite floats, a division by zero, a non-finite derived value), False (filtered out), or
    the derived values in the spec's order (floats)."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec
        self.features = list(spec.features)
        self.filter = parse_expression(spec.filter, "filter") if spec.filter else None
        self.derived = [(d.name, parse_expression(d.expr, d.name)) for d in spec.derived]
        vec_filter = vectorise(self.filter) if self.filter is not None else None
        vec_derived = [vectorise(e) for _, e in self.derived]
        self.enabled = (self.filter is None or vec_filter is not None) and all(v is not None for v in vec_derived)
        self.vec_filter = vec_filter
        self.vec_derived = [(name, v) for (name, _), v in zip(self.derived, vec_derived)]
        derived_names = {n for n, _ in self.derived}
        for i, (_, e) in enumerate(self.derived):
            if _columns_of(e) & {n for n, _ in self.derived[i:]}:
                self.enabled = False  # reads a raw field that a later derived value shadows: the engine's way
        read = set(self.features)
        if self.filter is not None:
            read |= _columns_of(self.filter)
        for _, e in self.derived:
            read |= _columns_of(e) - derived_names
        # Derived expressions may read earlier derived names: those come from the columns computed here.
        self.read = sorted(read)
        getter = operator.itemgetter(*self.read)
        self._read = getter if len(self.read) > 1 else (lambda r: (getter(r),))  # always a tuple
        if self.filter is not None and _columns_of(self.filter) & derived_names:
            self.enabled = False

    def evaluate(self, records: list) -> list:
        n = len(records)
        answers: list = [None] * n
        if not self.enabled or n == 0:
            return answers
        rows, values = [], []
        read = self._read
        for i, r in enumerate(records):
            if type(r) is not dict:
                continue
            try:
                row = read(r)
            except KeyError:
                continue
            for v in row:
                if type(v) is not float:
                    break
            else:
                rows.append(i)
                values.append(row)
        if not rows:
            return answers
        matrix = np.array(values, dtype=np.float64).reshape(len(rows), len(self.read))
        infinite = ~np.isfinite(matrix).all(axis=1)  # inf/NaN read: the engine's answer
        cols: Columns = {k: matrix[:, j] for j, k in enumerate(self.read)}
        bad: list[np.ndarray] = []
        with np.errstate(all="ignore"):
            keep = np.ones(len(rows), dtype=bool)
            if self.vec_filter is not None:
                keep = np.broadcast_to(self.vec_filter(cols, bad) != 0, (len(rows),))
            # The engine evaluates derived values only for rows the filter keeps: a division by zero in a
            # filtered-out row is no error there.
            redo = infinite.copy()
            for m in bad:
                redo |= m
            bad.clear()
            derived = []
            for name, fn in self.vec_derived:
                v = np.broadcast_to(fn(cols, bad), (len(rows),)).astype(np.float64)
                cols[name] = v
                derived.append(v)
            for m in bad:
                redo |= m & keep
            for v in derived:
                redo |= keep & ~np.isfinite(v)
        keep_l = keep.tolist()
        redo_l = redo.tolist()
        derived_rows = np.stack(derived, axis=1).tolist() if derived else [[] for _ in rows]
        for j, i in enumerate(rows):
            if redo_l[j]:
                continue
            answers[i] = derived_rows[j] if keep_l[j] else False
        return answers


def fast_fingerprint(record: dict, finite: bool = False) -> str:
    """``streamtrain.dedup.fingerprint``, the same digest, with the text written by msgspec where it can
    (``finite``: as ``fingerprint_text``)."""
    digest = _blake2b_8.copy()  # a copy: cheaper than the constructor's keyword arguments
    digest.update(_fingerprint_input(record, finite))
    return digest.hexdigest()


_blake2b_8 = blake2b(digest_size=8)


#: What msgspec refuses in a renamed field's name.
_UNWRITABLE = re.compile(r'["\\\x00-\x1f]')


class FeatureRecords:
    """Feature records of rows ``BatchExpressions`` evaluated, as msgspec structs: the engine's
    ``process_evaluated`` record (identity, features, derived values, then the pass-through fields the
    reading carries, in that order) without building a dict, and written by msgspec in one call.
    ``make`` answers None when the spec's names overlap (a label named like an identity field), where only
    a dict keeps the engine's order."""

    def __init__(self, spec: PreprocessSpec, passthrough: list[str]) -> None:
        fixed = [*IDENTITY, *spec.features]
        names = [*fixed, *(d.name for d in spec.derived), *passthrough]
        # msgspec renames to a JSON name it writes verbatim: one with a quote, a backslash or a control
        # character (a spec may name its label so) stays with the dict, which msgspec escapes.
        self.enabled = len(set(names)) == len(names) and not any(_UNWRITABLE.search(n) for n in names)
        fields = [f"f{i}" for i in range(len(names))]  # any JSON name, renamed: no clash with Struct's own
        self._fixed = operator.itemgetter(*fixed)
        self._passthrough = operator.itemgetter(*passthrough) if len(passthrough) > 1 else None
        self._passthrough_fields = list(zip(passthrough, fields[len(names) - len(passthrough) :]))
        optional = len(names) - len(passthrough)
        self.Record = (
            msgspec.defstruct(
                "FeatureRecord",
                [f if i < optional else (f, object, msgspec.UNSET) for i, f in enumerate(fields)],
                rename=dict(zip(fields, names)),
            )
            if self.enabled
            else None
        )
        self._field_of = dict(zip(names, fields))

    def getter(self, names: list[str]) -> Callable[[object], tuple]:
        """The values of ``names`` in a feature record, as a tuple."""
        get = operator.attrgetter(*(self._field_of[n] for n in names)) if names else (lambda r: ())
        return get if len(names) != 1 else (lambda r: (get(r),))

    def make(self, record: dict, derived: list[float]):
        """The feature record of ``record`` (identity checked, features finite floats) with ``derived``."""
        if self._passthrough is not None:
            try:
                return self.Record(*self._fixed(record), *derived, *self._passthrough(record))
            except KeyError:  # a pass-through field it does not carry
                pass
        return self.Record(
            *self._fixed(record), *derived, **{f: record[k] for k, f in self._passthrough_fields if k in record}
        )
