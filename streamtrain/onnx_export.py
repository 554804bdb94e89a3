"""The scoring function of a model version as an ONNX graph, for scorers outside Python.

The graph takes raw feature rows and returns the anomaly score, exactly what
``LoadedModel.score`` computes: normalize with the training statistics, run the dense
autoencoder, mean squared reconstruction error per row. Only float32 operations, in the
same order as numpy/Keras, so scores agree to float32 rounding. Built from the Keras
weights with the ``onnx`` helpers; architectures other than a chain of Dense layers are
not exported (``NotExportable``), and the version then travels without an ONNX attachment.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ONNX_ATTACHMENT = "onnx"
OPSET = 17
INPUT, OUTPUT = "features", "score"
_ACTIVATIONS = {"linear": None, "tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}
_NUMPY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda a: a,
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0),
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
}


class NotExportable(Exception):
    pass


def dense_chain(keras_model) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(kernel, bias, activation) of each Dense layer, in order; anything else is refused."""
    layers = []
    for layer in keras_model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind != "Dense":
            raise NotExportable(f"layer {layer.name} is {kind}; only Dense chains are exported")
        act = layer.get_config().get("activation", "linear")
        if act not in _ACTIVATIONS:
            raise NotExportable(f"layer {layer.name}: activation {act!r} not exported")
        weights = layer.get_weights()
        if len(weights) != 2:
            raise NotExportable(f"layer {layer.name}: expected kernel and bias")
        layers.append((np.asarray(weights[0], np.float32), np.asarray(weights[1], np.float32), act))
    if not layers:
        raise NotExportable("no Dense layers")
    return layers


def export_scoring_graph(keras_model, mean, std, check_rows: np.ndarray | None = None) -> bytes:
    """Serialized ONNX model: features[N, n] float32 -> score[N] float32."""
    import onnx  # noqa: PLC0415 - only the trainer exports
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    std = np.where(std > 1e-9, std, 1.0).astype(np.float32)  # as LoadedModel does
    layers = dense_chain(keras_model)
    n = len(mean)
    if layers[0][0].shape[0] != n or layers[-1][0].shape[1] != n:
        raise NotExportable(f"dense chain maps {layers[0][0].shape[0]} -> {layers[-1][0].shape[1]}, expected {n}")
    if check_rows is not None:
        _check_against_keras(keras_model, layers, mean, std, check_rows)

    inits = [numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(std, "std")]
    nodes = [
        helper.make_node("Sub", [INPUT, "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalized"]),
    ]
    h = "normalized"
    for i, (kernel, bias, act) in enumerate(layers):
        inits += [numpy_helper.from_array(kernel, f"kernel_{i}"), numpy_helper.from_array(bias, f"bias_{i}")]
        nodes += [
            helper.make_node("MatMul", [h, f"kernel_{i}"], [f"matmul_{i}"]),
            helper.make_node("Add", [f"matmul_{i}", f"bias_{i}"], [f"dense_{i}"]),
        ]
        h = f"dense_{i}"
        if _ACTIVATIONS[act]:
            nodes.append(helper.make_node(_ACTIVATIONS[act], [h], [f"act_{i}"]))
            h = f"act_{i}"
    nodes += [
        helper.make_node("Sub", ["normalized", h], ["residual"]),
        helper.make_node("Mul", ["residual", "residual"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], [OUTPUT], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "streamtrain_score",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["rows", n])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["rows"])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="streamtrain", ir_version=8
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _check_against_keras(keras_model, layers, mean, std, rows) -> None:
    """The exported chain must reproduce Keras (catches models that are not a plain chain)."""
    xn = (np.asarray(rows, np.float32) - mean) / std
    h = xn
    for kernel, bias, act in layers:
        h = _NUMPY[act](h @ kernel + bias).astype(np.float32)
    expected = keras_model(xn, training=False).numpy()
    if not np.allclose(h, expected, rtol=1e-4, atol=1e-5):
        raise NotExportable(f"dense chain differs from the Keras model by {float(np.abs(h - expected).max()):.3g}")
