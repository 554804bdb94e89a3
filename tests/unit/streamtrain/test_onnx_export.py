"""Unit tests of what the JVM scorer relies on: codec attachments and the ONNX scoring graph."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamtrain.modelcodec import ModelAssembler, ModelRejected, encode


def _assemble(records):
    asm, out = ModelAssembler(), []
    for k, v in records:
        mv = asm.add(k, v)
        if mv is not None:
            out.append(mv)
    return out


META = {"version": 3, "feature_names": ["a"], "threshold": 1.0, "format": "keras-v3"}


def test_attachments_round_trip_and_old_readers_see_only_the_artefact(monkeypatch):
    import streamtrain.modelcodec as codec

    monkeypatch.setattr(codec, "CHUNK_BYTES", 7)
    artefact, onnx_bytes = b"artefact-bytes" * 3, b"onnx-graph" * 5
    records = encode(artefact, META, {"onnx": onnx_bytes})
    [mv] = _assemble(records)
    assert mv.artefact == artefact and mv.attachments == {"onnx": onnx_bytes}
    manifest = json.loads(records[-1][1])
    # A reader that predates attachments joins chunks 0..chunks-1 and checks size and sha256 of those.
    assert manifest["chunks"] == 6 and manifest["attachments"]["onnx"]["first_chunk"] == 6
    [plain] = _assemble(encode(artefact, META))
    assert plain.attachments == {} and "attachments" not in json.loads(encode(artefact, META)[-1][1])


def test_corrupt_attachment_refuses_the_version():
    records = encode(b"artefact", META, {"onnx": b"graph"})
    key, _ = records[1]
    records[1] = (key, b"grapH")
    with pytest.raises(ModelRejected) as err:
        _assemble(records)
    assert err.value.reason == "checksum"
    with pytest.raises(ModelRejected) as err:
        _assemble(records[:1] + records[2:])
    assert err.value.reason == "truncated"


def test_onnx_scoring_graph_matches_loaded_model_scores():
    from onnx.reference import ReferenceEvaluator

    from streamtrain.model import LoadedModel
    from streamtrain.onnx_export import export_scoring_graph
    from streamtrain.trainer.train import build_autoencoder

    rng = np.random.default_rng(1)
    km = build_autoencoder(4, [16, 3, 16], 1e-3, seed=2)
    x = rng.normal([60, 2, 0.5, 4], [5, 0.5, 0.1, 0.4], size=(300, 4)).astype(np.float32)
    mean, std = x.mean(0), x.std(0)
    std[2] = 0.0  # a constant feature: both sides must fall back to 1
    meta = {
        "version": 1,
        "feature_names": list("abcd"),
        "threshold": 0.5,
        "format": "keras-v3",
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
    }
    expected = LoadedModel(km, meta).score(x)
    graph = export_scoring_graph(km, mean, std, check_rows=x[:32])
    got = ReferenceEvaluator(graph).run(None, {"features": x})[0]
    assert got.shape == (300,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_non_dense_models_are_not_exported():
    import keras

    from streamtrain.onnx_export import NotExportable, export_scoring_graph

    inp = keras.Input((4,))
    km = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Dropout(0.1)(inp)))
    with pytest.raises(NotExportable):
        export_scoring_graph(km, np.zeros(4), np.ones(4))


def test_topology_test_fixture_holds_what_the_python_scorer_scores():
    """The Java topology tests (scorer/streams/src/test) expect the numbers in their fixture; those must be
    what the Python scorer makes of the same model records and rows (tests/score_streams/topology_fixture.py)."""
    import base64

    from streamtrain.model import LoadedModel
    from tests.score_streams.topology_fixture import FEATURES, FIXTURE, rows

    data = json.loads(FIXTURE.read_text())
    x = rows()
    assert data["features"] == FEATURES and np.array_equal(np.asarray(data["rows"], np.float32), x)
    for version, expected in data["versions"].items():
        [mv] = _assemble([(k.encode(), base64.b64decode(v)) for k, v in expected["records"]])
        assert mv.version == int(version) and "onnx" in mv.attachments
        judged = LoadedModel.from_version(mv).assess(x, data["devices"])
        # A score is a mean of squared differences of nearly equal float32 numbers: on another CPU the
        # same graph rounds differently (seen: 1.9e-5 relative on a score of 2.8e-4, 1.8e-9 absolute).
        # The absolute floor is 1e-7 of the thresholds (~0.07): no flag can turn on it; flags stay exact.
        np.testing.assert_allclose(expected["scores"], judged.scores, rtol=1e-6, atol=1e-8)
        assert expected["flags"] == judged.flags.tolist()
        assert any(expected["flags"]) and not all(expected["flags"])
