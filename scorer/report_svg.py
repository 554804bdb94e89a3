"""One device's anomaly score over event time as a small SVG image, written directly: hundreds of devices in
well under a second, where a matplotlib figure per device takes a second each on a busy machine. Log score
axis scaled to the data, UTC time axis, the applied threshold, true anomalies, alarms and model switches."""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from html import escape

#: Tick spacings for the time axis, seconds.
STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800)
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 10, 30


@dataclass
class Series:
    """One device's first score per reading, in event-time order (``ts`` epoch seconds)."""

    ts: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    label: list[bool] = field(default_factory=list)
    alarm: list[bool] = field(default_factory=list)
    counted: list[bool] = field(default_factory=list)
    version: list[int | None] = field(default_factory=list)

    def sort(self) -> None:
        order = sorted(range(len(self.ts)), key=self.ts.__getitem__)
        for name in ("ts", "score", "threshold", "label", "alarm", "counted", "version"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in order])


def _time_ticks(t0: float, t1: float) -> tuple[list[float], str]:
    span = max(t1 - t0, 1.0)
    step = next((s for s in STEPS_S if span / s <= 6), STEPS_S[-1] * math.ceil(span / (6 * STEPS_S[-1])))
    fmt = "%H:%M:%S" if step < 60 else "%H:%M" if span <= 86400 else "%m-%d %H:%M"
    first = math.ceil(t0 / step) * step
    return [first + i * step for i in range(int((t1 - first) // step) + 1)], fmt


def _score_ticks(low: float, high: float) -> list[float]:
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    mantissas = (1,) if math.log10(high / low) > 2.5 else (1, 2, 5)
    return [m * 10.0**d for d in decades for m in mantissas if low <= m * 10.0**d <= high]


def _line_points(ts: list[float], score: list[float], x) -> list[int]:
    """Indices of the readings the line goes through: all of them when they fit the width, else each pixel
    column's lowest and highest score in time order, so every spike still shows."""
    if len(ts) <= 2 * (x(ts[-1]) - x(ts[0]) + 1):
        return list(range(len(ts)))
    keep: list[int] = []
    column, low, high = None, 0, 0
    for i, t in enumerate(ts):
        c = int(x(t))
        if c != column:
            if column is not None:
                keep += sorted({low, high})
            column, low, high = c, i, i
        elif score[i] < score[low]:
            low = i
        elif score[i] > score[high]:
            high = i
    return keep + sorted({low, high})


def score_svg(s: Series, width: int = 860, height: int = 200) -> str:
    """The series as an SVG document, base64-encoded for a ``data:image/svg+xml`` URI."""
    t0, t1 = (s.ts[0], s.ts[-1]) if s.ts else (0.0, 1.0)
    t1 = max(t1, t0 + 1.0)
    positive = [v for v in (*s.score, *s.threshold) if v > 0] or [1.0]
    low, high = min(positive) / 1.5, max(positive) * 1.5
    w, h = width - LEFT - RIGHT, height - TOP - BOTTOM
    lg_low, lg_span = math.log10(low), math.log10(high) - math.log10(low)

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * w

    def y(v: float) -> float:
        v = min(max(v, low), high)
        return TOP + h - (math.log10(v) - lg_low) / lg_span * h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="10"><rect width="{width}" height="{height}" fill="white"/>'
        f'<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#999"/>'
    ]
    for v in _score_ticks(low, high):
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{v:g}</text>'
        )
    ticks, fmt = _time_ticks(t0, t1)
    for t in ticks:
        out.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP + h}" y2="{TOP + h + 4}" stroke="#999"/>'
            f'<text x="{x(t):.1f}" y="{TOP + h + 15}" text-anchor="middle">{time.strftime(fmt, time.gmtime(t))}</text>'
        )
    out.append(
        f'<text x="{LEFT}" y="{height - 3}">UTC, from {time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0))}</text>'
        f'<text x="12" y="{TOP + h / 2:.0f}" transform="rotate(-90 12 {TOP + h / 2:.0f})" '
        'text-anchor="middle">score (log)</text>'
    )
    for i in range(1, len(s.ts)):
        if s.version[i] != s.version[i - 1]:
            out.append(
                f'<line x1="{x(s.ts[i]):.1f}" x2="{x(s.ts[i]):.1f}" y1="{TOP}" y2="{TOP + h}" stroke="green"/>'
                f'<text x="{x(s.ts[i]) + 3:.1f}" y="{TOP + 10}" fill="green">v{escape(str(s.version[i]))}</text>'
            )
    if s.ts:
        # The threshold as steps, a corner only where it changes.
        steps = [f"{x(s.ts[0]):.1f},{y(s.threshold[0]):.1f}"]
        for i in range(1, len(s.ts)):
            if s.threshold[i] != s.threshold[i - 1]:
                steps += [f"{x(s.ts[i]):.1f},{y(s.threshold[i - 1]):.1f}", f"{x(s.ts[i]):.1f},{y(s.threshold[i]):.1f}"]
        steps.append(f"{x(s.ts[-1]):.1f},{y(s.threshold[-1]):.1f}")
        out.append(f'<polyline points="{" ".join(steps)}" fill="none" stroke="black" stroke-dasharray="4 3"/>')
        line = " ".join(f"{x(s.ts[i]):.1f},{y(s.score[i]):.1f}" for i in _line_points(s.ts, s.score, x))
        out.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="0.9"/>')
    # Markers: one per pixel each (thousands of readings on 800 pixels would repeat the same circle).
    drawn: set[tuple[str, int, int]] = set()
    for i, t in enumerate(s.ts):
        cx, cy = x(t), y(s.score[i])
        for kind, show, mark in (
            ("trained", not s.counted[i], 'r="1.8" fill="#999"'),
            ("label", s.label[i], 'r="2.8" fill="red"'),
            ("alarm", s.alarm[i], 'r="4.8" fill="none" stroke="darkorange" stroke-width="1.3"'),
        ):
            if show and (kind, round(cx), round(cy)) not in drawn:
                drawn.add((kind, round(cx), round(cy)))
                out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" {mark}/>')
    out.append("</svg>")
    return base64.b64encode("".join(out).encode()).decode()
