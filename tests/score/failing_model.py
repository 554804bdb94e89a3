"""A model version that passes load and warm-up and then fails on live input, for both scorer engines.

Warm-up feeds the training mean (streamtrain/model.py ``LoadedModel.warm``; OnnxModel.warm in the Java
scorer), which normalises to exactly 0. Both artefacts look a value up in a one-entry table by
``int(1000 * (x - mean) / std)``: index 0 at warm-up, out of the table for any live reading that is not
exactly the mean, so TensorFlow's gather (the Keras model) and ONNX Runtime's Gather (the graph for the
JVM) raise there. Real artefacts, published with the trainer's codec like any version.
"""

from __future__ import annotations

import os
import tempfile

from streamtrain.onnx_export import ONNX_ATTACHMENT


def keras_artefact(n_features: int) -> bytes:
    """A ``.keras`` archive mapping ``(rows, n)`` to ``(rows, n)`` that fails unless every input is 0."""
    import keras  # noqa: PLC0415 - TensorFlow only where a model is built

    inputs = keras.Input((n_features,))
    scaled = keras.layers.Rescaling(1000.0)(inputs)
    looked_up = keras.layers.Embedding(1, 1)(scaled)  # casts to int: index 0 only for inputs within 1/1000 of 0
    outputs = keras.layers.Reshape((n_features,))(looked_up)
    model = keras.Model(inputs, outputs)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def onnx_graph(mean: list[float], std: list[float]) -> bytes:
    """A scoring graph (raw features -> one score per row) that fails unless every reading is the mean."""
    from onnx import TensorProto, helper  # noqa: PLC0415

    n = len(mean)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])
    inits = [
        helper.make_tensor("mean", TensorProto.FLOAT, [n], mean),
        helper.make_tensor("scale", TensorProto.FLOAT, [n], [1000.0 / s if s > 1e-9 else 1000.0 for s in std]),
        helper.make_tensor("table", TensorProto.FLOAT, [1], [0.0]),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "scale"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["looked_up"], axis=0),
        helper.make_node("Add", ["centred", "looked_up"], ["residual"]),
        helper.make_node("ReduceSumSquare", ["residual"], ["score"], axes=[1], keepdims=0),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "fails_after_warm_up", [x], [y], initializer=inits),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def failing_version(metadata: dict, version: int) -> tuple[bytes, dict, dict[str, bytes]]:
    """Artefact, manifest and attachments of ``version``: ``metadata`` (a real version's) with both failing models."""
    norm = metadata["normalization"]
    meta = {**metadata, "version": version}
    return keras_artefact(len(meta["feature_names"])), meta, {ONNX_ATTACHMENT: onnx_graph(norm["mean"], norm["std"])}
