"""The crafted graphs OnnxHostileGraphTest.java refuses are what hostile_onnx_fixture.py makes today, and
the good one among them is a valid ONNX model (so a refusal is for the crafted part, not a broken file)."""

from __future__ import annotations

import base64
import json

from tests.score_streams.hostile_onnx_fixture import FIXTURE, build


def test_the_committed_fixture_is_current_and_its_good_graph_checks():
    import onnx  # noqa: PLC0415

    committed = json.loads(FIXTURE.read_text())
    assert committed == build()
    good = next(c for c in committed["cases"] if c["name"] == "good")
    onnx.checker.check_model(onnx.load_from_string(base64.b64decode(good["graph"])), full_check=True)
