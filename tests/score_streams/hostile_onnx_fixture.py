"""Crafted ONNX scoring graphs for the Kafka Streams scorer's tests (scorer/streams/src/test/resources/
hostile_graphs.json, read by OnnxHostileGraphTest.java): one good graph, graphs whose tensors live
outside the model (a path climbing out of the working directory, ONNX Runtime's in-memory address
marker, in an initialiser or in a Constant node's attribute), and one whose output has the wrong length.
Each with the reason the scorer must refuse it (issue 24, finding 6).

    python -m tests.score_streams.hostile_onnx_fixture   # rewrites the file
"""

from __future__ import annotations

import base64
import json

from streamtrain.scorer.streams_engine import MODULE

FIXTURE = MODULE / "src" / "test" / "resources" / "hostile_graphs.json"
FEATURES = 4


def _external(tensor, location: str, length: int = 16) -> None:
    from onnx import TensorProto  # noqa: PLC0415

    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def graph(kind: str) -> bytes:
    from onnx import TensorProto, helper  # noqa: PLC0415

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", FEATURES])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n" if kind != "wrong_length" else "m"])
    shift = helper.make_tensor("shift", TensorProto.FLOAT, [FEATURES], [0.0] * FEATURES)
    initializers = [shift]
    nodes = []
    if kind == "external_in_attribute":
        initializers = []
        value = helper.make_tensor("shift_value", TensorProto.FLOAT, [FEATURES], [0.0] * FEATURES)
        _external(value, "../../../../etc/hostname")
        nodes.append(helper.make_node("Constant", [], ["shift"], value=value))
    elif kind == "external_path":
        _external(shift, "../../../../var/run/secrets/kubernetes.io/serviceaccount/token")
    elif kind == "memory_address":
        _external(shift, "*/_ORT_MEM_ADDR_*/")
    nodes.append(helper.make_node("Sub", ["x", "shift"], ["centred"]))
    axes = [0] if kind == "wrong_length" else [1]  # over the rows: one value per feature, not per row
    nodes.append(helper.make_node("ReduceSumSquare", ["centred"], ["score"], axes=axes, keepdims=0))
    model = helper.make_model(
        helper.make_graph(nodes, "scoring", [x], [y], initializer=initializers),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    model.ir_version = 8
    return model.SerializeToString()


CASES = {
    "good": None,
    "external_path": "external_data",
    "memory_address": "external_data",
    "external_in_attribute": "external_data",
    "wrong_length": "incompatible",
}


def build() -> dict:
    return {
        "features": FEATURES,
        "cases": [
            {"name": name, "expect": expect, "graph": base64.b64encode(graph(name)).decode()}
            for name, expect in CASES.items()
        ],
    }


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {FIXTURE}")
