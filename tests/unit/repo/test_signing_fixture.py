"""The Python reader accepts and refuses the signature fixture's versions as it says (the JVM reader
checks the same file in ModelTrustTest.java); the file is what signing_fixture.py makes today."""

from __future__ import annotations

import base64
import json

import pytest

from streamtrain.modelcodec import ModelAssembler, ModelRejected
from streamtrain.modelsign import SIGNATURE_HEADER, ModelTrust, parse_public_keys
from tests.score_streams.signing_fixture import FIXTURE, build


def test_the_committed_fixture_is_current():
    assert json.loads(FIXTURE.read_text()) == build()  # Ed25519 signing is deterministic


@pytest.mark.parametrize("case", json.loads(FIXTURE.read_text())["cases"], ids=lambda c: str(c["expect"]))
def test_python_reader_serves_or_refuses_each_fixture_version(case):
    fixture = json.loads(FIXTURE.read_text())
    asm = ModelAssembler(ModelTrust(parse_public_keys(fixture["verify_keys"]), fixture["max_version"]))
    served, reason = [], None
    for r in case["records"]:
        headers = None if r["signature"] is None else [(SIGNATURE_HEADER, base64.b64decode(r["signature"]))]
        try:
            mv = asm.add(r["key"].encode(), base64.b64decode(r["value"]), headers)
        except ModelRejected as exc:
            reason = exc.reason
            continue
        if mv is not None:
            served.append(mv.version)
    assert reason == case["expect"]
    assert served == ([case["version"]] if case["expect"] is None else [])
