"""The signature fixture both readers check (scorer/streams/src/test/resources/signed_versions.json): model
versions exactly as the trainer publishes them (streamtrain.modelcodec.encode, the manifest's
``streamtrain.signature`` header from streamtrain.modelsign.ModelSigner), a fixed test key (never used
anywhere else), and the reason each reader must give: served (null), unsigned, unknown_key, bad_signature,
version_out_of_range. tests/unit/repo/test_signing_fixture.py checks the Python reader against it,
ModelTrustTest.java the JVM reader, so both accept and refuse the same bytes.

    python -m tests.score_streams.signing_fixture   # rewrites the file
"""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamtrain.modelcodec import encode
from streamtrain.modelsign import ModelSigner, public_key_text
from streamtrain.scorer.streams_engine import MODULE

FIXTURE = MODULE / "src" / "test" / "resources" / "signed_versions.json"
MAX_VERSION = 1000
META = {"version": 1, "feature_names": ["a", "b"], "threshold": 0.5, "format": "keras-v3"}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def build() -> dict:
    trainer = ModelSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    stranger = ModelSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))))
    cases = []

    def case(expect: str | None, version: int, by: ModelSigner | None, tamper=None) -> None:
        records = []
        for key, value in encode(f"artefact of v{version}".encode(), {**META, "version": version}):
            signature = by.header(value)[1] if by is not None and key.endswith(b"/manifest") else None
            if tamper is not None and key.endswith(b"/manifest"):
                value = tamper(value)
            records.append({"key": key.decode(), "value": _b64(value), "signature": _b64(signature)})
        cases.append({"version": version, "expect": expect, "records": records})

    case(None, 1, trainer)
    case("unsigned", 2, None)
    case("unknown_key", 3, stranger)
    case("bad_signature", 4, trainer, tamper=lambda v: v.replace(b'"threshold": 0.5', b'"threshold": 9.5'))
    case("version_out_of_range", 999_999_999, trainer)
    return {
        "verify_keys": public_key_text(trainer.public),
        "max_version": MAX_VERSION,
        "cases": cases,
    }


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {FIXTURE}")
