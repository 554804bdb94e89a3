"""A version of the Kafka Streams scorer's topology fixture that passes load and warm-up and fails on live
input (tests/score/failing_model.py), as the models topic carries it: version 3, with version 1's manifest
(features, normalisation, threshold). Read by ScoreTopologyTest.java (failing_version.json).

    python -m tests.score_streams.failing_version_fixture   # rewrites the file
"""

from __future__ import annotations

import base64
import json

from streamtrain.modelcodec import ModelAssembler, encode
from streamtrain.scorer.streams_engine import MODULE
from tests.score.failing_model import failing_version

FIXTURE = MODULE / "src" / "test" / "resources" / "failing_version.json"
MODELS = MODULE / "src" / "test" / "resources" / "models.json"
VERSION = 3


def build() -> dict:
    assembler, v1 = ModelAssembler(), None
    for key, value in json.loads(MODELS.read_text())["versions"]["1"]["records"]:
        v1 = assembler.add(key.encode(), base64.b64decode(value)) or v1
    assert v1 is not None
    records = encode(*failing_version(v1.metadata, VERSION))
    return {"version": VERSION, "records": [[k.decode(), base64.b64encode(v).decode()] for k, v in records]}


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(build(), indent=1) + "\n")
