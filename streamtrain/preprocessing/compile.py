"""Compile a checked sqlglot expression into a Python function over a record (no eval()).

SQL semantics where they matter: a missing field or a division by zero is an error of that
record (dead-lettered by the caller), a non-finite result too.
"""

from __future__ import annotations

import math
from typing import Callable

from sqlglot import exp


class EvalError(ValueError):
    #: Every reason an evaluation fails with (dead-letter reasons; exported at 0 from the start).
    REASONS = (
        "missing_field",
        "wrong_type",
        "division_by_zero",
        "domain_error",
        "non_finite",
        "expression_error",
        "unsupported",
    )

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


Fn = Callable[[dict], object]


def _num(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise EvalError("wrong_type", f"{v!r} is not a number")
    return v


def _div(a, b):
    if b == 0:
        raise EvalError("division_by_zero", "division by zero")
    return a / b


def _ln(a):
    if a <= 0:
        raise EvalError("domain_error", f"LN({a}) is undefined")
    return math.log(a)


def _sqrt(a):
    if a < 0:
        raise EvalError("domain_error", f"SQRT({a}) is undefined")
    return math.sqrt(a)


def _round(a, d=0):
    # ksqlDB and SQL round half away from zero, Python's round() to even.
    q = 10 ** int(d)
    return math.floor(abs(a) * q + 0.5) / q * (1 if a >= 0 else -1)


BINARY = {
    exp.Add: lambda a, b: a + b,
    exp.Sub: lambda a, b: a - b,
    exp.Mul: lambda a, b: a * b,
    exp.Div: _div,
    exp.GT: lambda a, b: a > b,
    exp.GTE: lambda a, b: a >= b,
    exp.LT: lambda a, b: a < b,
    exp.LTE: lambda a, b: a <= b,
    exp.EQ: lambda a, b: a == b,
    exp.NEQ: lambda a, b: a != b,
}
UNARY = {
    exp.Neg: lambda a: -a,
    exp.Abs: abs,
    exp.Sqrt: _sqrt,
    exp.Ln: _ln,
    exp.Exp: math.exp,
    exp.Floor: math.floor,
    exp.Ceil: math.ceil,
    exp.Sign: lambda a: (a > 0) - (a < 0),
}


def compile_expr(node: exp.Expression) -> Fn:
    if isinstance(node, exp.Paren):
        return compile_expr(node.this)
    if isinstance(node, exp.Column):
        name = node.name

        def column(r, name=name):
            if name not in r or r[name] is None:
                raise EvalError("missing_field", f"field {name!r} is missing")
            return _num(r[name])

        return column
    if isinstance(node, exp.Literal):
        value = float(node.this) if any(c in node.this for c in ".eE") else int(node.this)
        return lambda r: value
    if isinstance(node, exp.And):
        a, b = compile_expr(node.this), compile_expr(node.expression)
        return lambda r: bool(a(r)) and bool(b(r))
    if isinstance(node, exp.Or):
        a, b = compile_expr(node.this), compile_expr(node.expression)
        return lambda r: bool(a(r)) or bool(b(r))
    if isinstance(node, exp.Not):
        a = compile_expr(node.this)
        return lambda r: not bool(a(r))
    for cls, op in BINARY.items():
        if type(node) is cls:
            a, b = compile_expr(node.this), compile_expr(node.expression)
            return lambda r: op(a(r), b(r))
    for unary_cls, unary_op in UNARY.items():
        if type(node) is unary_cls:
            a = compile_expr(node.this)
            return lambda r: unary_op(a(r))
    if isinstance(node, exp.Round):
        a = compile_expr(node.this)
        d = compile_expr(node.args["decimals"]) if node.args.get("decimals") else (lambda r: 0)
        return lambda r: _round(a(r), d(r))
    if isinstance(node, (exp.Greatest, exp.Least)):
        parts = [compile_expr(node.this)] + [compile_expr(e) for e in node.expressions]
        pick: Callable[..., object] = max if isinstance(node, exp.Greatest) else min
        return lambda r: pick(p(r) for p in parts)
    raise EvalError("unsupported", f"{node.key} is not supported")


def finite(value, where: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise EvalError("non_finite", f"{where} evaluated to {value}")
    return value
