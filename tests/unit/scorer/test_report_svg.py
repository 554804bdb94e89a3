"""The per-device SVG: a dense series is thinned to the pixels it has without losing a spike."""

from __future__ import annotations

import base64
import random
import xml.etree.ElementTree as ET

from streamtrain.scorer.report_svg import Series, _line_points, score_svg


def _dense(n: int) -> Series:
    rng = random.Random(3)
    s = Series()
    for i in range(n):
        s.ts.append(1_796_000_000.0 + i)
        s.score.append(rng.uniform(0.1, 0.5))
        s.threshold.append(0.8 if i < n // 2 else 1.1)
        s.label.append(i == 4321)
        s.alarm.append(i == 4321)
        s.counted.append(True)
        s.version.append(1 if i < n // 2 else 2)
    s.score[4321] = 50.0  # one spike
    s.score[777] = 0.001  # one dip
    return s


def test_a_dense_series_keeps_its_spike_and_dip_within_two_points_a_pixel():
    s = _dense(20_000)
    width = 800.0

    def x(t: float) -> float:
        return (t - s.ts[0]) / (s.ts[-1] - s.ts[0]) * width

    kept = _line_points(s.ts, s.score, x)
    assert len(kept) <= 2 * (width + 1)
    assert 4321 in kept and 777 in kept and kept == sorted(kept)

    def wide(t: float) -> float:
        return (t - s.ts[0]) / 499 * width

    assert _line_points(s.ts[:500], s.score[:500], wide) == list(range(500))  # fits: every reading


def test_the_svg_parses_and_draws_the_threshold_change_once():
    svg = ET.fromstring(base64.b64decode(score_svg(_dense(20_000))))
    ns = "{http://www.w3.org/2000/svg}"
    threshold, score = svg.findall(f"{ns}polyline")
    assert len(threshold.get("points", "").split()) == 4  # start, the change's two corners, end
    assert len(score.get("points", "").split()) <= 2 * 860
    circles = svg.findall(f"{ns}circle")
    assert [c.get("fill") for c in circles] == ["red", "none"]  # the one labelled reading and its alarm
