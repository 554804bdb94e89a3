"""The declarative preprocessing spec: the same object locally and in a StreamingTraining resource.

    filter: "temperature > -50 AND temperature < 200"      # SQL condition over raw fields
    features: [temperature, current, vibration, pressure] # raw fields the model uses
    derived:                                               # SQL expressions, in order
      - {name: power, expr: "current * pressure"}
    windows:                                               # per-device tumbling windows
      size_seconds: 10
      aggregates:
        - {name: temperature_avg, fn: avg, field: temperature}
    sequences:                                             # per-device sliding windows of the last N
      length: 16                                           #   readings (for windowed models)
    label: label                                           # ground truth: passed through, never a feature

Expressions are parsed with sqlglot and checked before anything runs: only arithmetic,
comparisons, boolean logic and a few scalar functions that both ksqlDB and the embedded
engine implement; only known fields; never the label.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import sqlglot
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from sqlglot import exp

NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Deeper expressions are refused: compiling and rendering them recursively must not exhaust the stack.
MAX_DEPTH = 64
IDENTITY = ("device_id", "ts", "seq")
GROUND_TRUTH = ("label", "anomaly")
RESERVED = set(IDENTITY) | set(GROUND_TRUTH) | {"device_type"}

#: Expression nodes both renderings implement. Anything else is rejected up front.
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg, exp.Paren)
FUNCTIONS = (exp.Abs, exp.Sqrt, exp.Ln, exp.Exp, exp.Round, exp.Floor, exp.Ceil, exp.Sign, exp.Greatest, exp.Least)
COMPARISONS = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ, exp.NEQ)
BOOLEAN = (exp.And, exp.Or, exp.Not)
LEAVES = (exp.Column, exp.Identifier, exp.Literal)


class SpecError(ValueError):
    """A spec that cannot be expressed; the message says what and where."""


class Derived(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Name of the derived feature")
    expr: str = Field(description="SQL arithmetic over raw fields and earlier derived fields")


class Aggregate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Output column name")
    fn: Literal["avg", "min", "max", "sum", "count"] = Field(description="Aggregate function")
    field: str = Field(description="Feature (raw or derived) to aggregate")


class Windows(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size_seconds: PositiveInt = Field(10, description="Tumbling window size in seconds (event time)")
    aggregates: list[Aggregate] = Field(default_factory=list, description="Aggregates per device and window")


class Sequences(BaseModel):
    model_config = ConfigDict(extra="forbid")
    length: int = Field(16, ge=2, le=512, description="Readings per window: a device's last N feature records")


class PreprocessSpec(BaseModel):
    """Filter, features, derived fields, windows and the label field of a pipeline."""

    model_config = ConfigDict(extra="forbid")
    filter: str | None = Field(None, description="SQL condition over raw fields; records failing it are dropped")
    features: list[str] = Field(min_length=1, description="Raw numeric fields used as model features")
    derived: list[Derived] = Field(default_factory=list, description="Derived features, computed in order")
    windows: Windows | None = Field(None, description="Per-device tumbling-window aggregates")
    sequences: Sequences | None = Field(
        None,
        description="Per-device sliding windows of the last N feature records "
        "(sequences topic, input of windowed models)",
    )
    label: str | None = Field("label", description="Ground-truth field, passed through and never a feature")

    @property
    def feature_names(self) -> list[str]:
        """What the model sees, in order: the raw features, then the derived ones."""
        return list(self.features) + [d.name for d in self.derived]

    @model_validator(mode="after")
    def _check(self) -> "PreprocessSpec":
        try:
            check(self)
        except RecursionError:
            raise SpecError(f"an expression is nested too deeply (at most {MAX_DEPTH} levels)") from None
        return self

    @classmethod
    def load(cls, path: str | Path) -> "PreprocessSpec":
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(f"{path}: {exc}") from None
        return cls.model_validate(data)

    @classmethod
    def default(cls) -> "PreprocessSpec":
        return cls.load(Path(__file__).with_name("default_spec.yaml"))


def parse_expression(text: str, where: str) -> exp.Expression:
    try:
        tree = sqlglot.parse_one(text)
    except sqlglot.errors.ParseError as exc:
        raise SpecError(f"{where}: cannot parse {text[:200]!r}: {str(exc).splitlines()[0]}") from None
    except (sqlglot.errors.SqlglotError, RecursionError) as exc:
        raise SpecError(f"{where}: cannot parse {text[:200]!r}: {type(exc).__name__}") from None
    if tree is None:
        raise SpecError(f"{where}: empty expression")
    return tree


def columns(tree: exp.Expression) -> list[str]:
    return [c.name for c in tree.find_all(exp.Column)]


def _check_nodes(tree: exp.Expression, allowed: tuple, where: str) -> None:
    for node in tree.walk():
        if node.depth > MAX_DEPTH:
            raise SpecError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, LEAVES):
            if isinstance(node, exp.Literal) and node.is_string:
                raise SpecError(f"{where}: string literal {node.sql()} not supported; numbers only")
            if isinstance(node, exp.Column) and node.table:
                raise SpecError(f"{where}: qualified column {node.sql()} not supported")
            continue
        if not isinstance(node, allowed):
            raise SpecError(
                f"{where}: {node.key.upper()} ({node.sql()[:60]}) is not supported; allowed: "
                "+ - * /, comparisons, AND/OR/NOT, ABS SQRT LN EXP ROUND FLOOR CEIL SIGN GREATEST LEAST"
            )


def check(spec: PreprocessSpec) -> None:
    """Reject, with a clear message, anything the two renderings cannot both express."""
    names = [*spec.features, *(d.name for d in spec.derived)]
    for n in names + ([a.name for a in spec.windows.aggregates] if spec.windows else []):
        if not NAME.match(n):
            raise SpecError(f"name {n!r} must be lower_snake_case (letters, digits, _), at most 63 characters")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SpecError(f"duplicate feature names {sorted(dup)}")
    forbidden = set(GROUND_TRUTH) | ({spec.label} if spec.label else set())
    for n in spec.features:
        if n in forbidden:
            raise SpecError(f"features: {n!r} is ground truth and can never be a feature")
        if n in RESERVED:
            raise SpecError(f"features: {n!r} is an identity field, not a sensor channel")
    for d in spec.derived:
        if d.name in RESERVED or d.name in forbidden:
            raise SpecError(f"derived: name {d.name!r} clashes with a reserved field")
    raw_known = set(spec.features) | {"ts", "seq"}
    if spec.filter:
        tree = parse_expression(spec.filter, "filter")
        _check_nodes(tree, ARITHMETIC + FUNCTIONS + COMPARISONS + BOOLEAN, "filter")
        _check_refs(columns(tree), raw_known, forbidden, "filter")
        if not isinstance(tree, COMPARISONS + BOOLEAN) and not isinstance(tree, exp.Paren):
            raise SpecError(f"filter: {spec.filter!r} is not a condition")
    known = set(raw_known)
    for d in spec.derived:
        where = f"derived {d.name!r}"
        tree = parse_expression(d.expr, where)
        _check_nodes(tree, ARITHMETIC + FUNCTIONS, where)
        _check_refs(columns(tree), known, forbidden, where)
        known.add(d.name)
    if spec.windows:
        out = [a.name for a in spec.windows.aggregates]
        if len(set(out)) != len(out):
            raise SpecError("windows: duplicate aggregate names")
        for a in spec.windows.aggregates:
            if a.field not in spec.feature_names:
                raise SpecError(
                    f"windows: aggregate {a.name!r} uses {a.field!r}, which is not a feature "
                    f"(features: {spec.feature_names})"
                )


def _check_refs(refs: list[str], known: set[str], forbidden: set[str], where: str) -> None:
    for r in refs:
        if r in forbidden:
            raise SpecError(f"{where}: uses ground-truth field {r!r}; the label may never feed the model")
        if r not in known:
            raise SpecError(f"{where}: unknown field {r!r} (known here: {sorted(known)})")


def json_schema() -> dict:
    """JSON schema of the spec, for the CRD's spec.preprocessing."""
    return PreprocessSpec.model_json_schema()
