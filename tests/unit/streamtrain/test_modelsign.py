"""Unit tests of model signatures and the version bound (streamtrain.modelsign) as the assembler applies
them: what a reader with verification keys serves, and the reason for what it refuses (issue 24, findings 4, 5)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from streamtrain.modelcodec import ModelAssembler, ModelRejected, encode
from streamtrain.modelsign import (
    SIGNATURE_HEADER,
    ModelSigner,
    ModelTrust,
    SigningKeyError,
    parse_public_keys,
    public_key_text,
)
from streamtrain.settings import CommonSettings

META = {"version": 3, "feature_names": ["a", "b"], "threshold": 0.5, "format": "keras-v3"}


def signer() -> ModelSigner:
    return ModelSigner(Ed25519PrivateKey.generate())


def trusting(*signers: ModelSigner, max_version: int = 1000) -> ModelTrust:
    return ModelTrust(parse_public_keys(",".join(public_key_text(s.public) for s in signers)), max_version)


def assemble(trust: ModelTrust, by: ModelSigner | None, meta=META, tamper=None):
    """Feed one version's records (manifest signed ``by``) to an assembler; the versions it completes."""
    asm, out = ModelAssembler(trust), []
    for key, value in encode(b"artefact bytes", meta):
        headers = [by.header(value)] if by is not None and key.endswith(b"/manifest") else None
        if tamper is not None and key.endswith(b"/manifest"):
            value, headers = tamper(value, headers)
        mv = asm.add(key, value, headers)
        if mv is not None:
            out.append(mv)
    return out


def refused(*args, **kwargs) -> str:
    with pytest.raises(ModelRejected) as info:
        assemble(*args, **kwargs)
    return info.value.reason


def test_a_version_signed_by_a_listed_key_is_served():
    key = signer()
    [mv] = assemble(trusting(key), key)
    assert mv.version == 3 and mv.artefact == b"artefact bytes"


def test_rotation_any_listed_key_verifies():
    old, new = signer(), signer()
    assert [mv.version for mv in assemble(trusting(old, new), new)] == [3]
    assert [mv.version for mv in assemble(trusting(old, new), old)] == [3]


def test_unsigned_version_is_refused_when_keys_are_configured_and_served_when_not():
    assert refused(trusting(signer()), None) == "unsigned"
    assert [mv.version for mv in assemble(ModelTrust(), None)] == [3]


def test_a_version_signed_by_another_key_is_refused():
    assert refused(trusting(signer()), signer()) == "unknown_key"


def test_a_changed_manifest_or_signature_is_refused():
    key = signer()

    def other_threshold(value, headers):  # same key id, signature of the original bytes
        manifest = json.loads(value)
        manifest["metadata"]["threshold"] = 99.0
        return json.dumps(manifest).encode(), headers

    assert refused(trusting(key), key, tamper=other_threshold) == "bad_signature"

    def flipped_signature(value, headers):
        name, text = headers[0]
        alg, kid, sig = text.decode().split(":")
        raw = bytearray(base64.b64decode(sig))
        raw[0] ^= 1
        return value, [(name, f"{alg}:{kid}:{base64.b64encode(bytes(raw)).decode()}".encode())]

    assert refused(trusting(key), key, tamper=flipped_signature) == "bad_signature"
    assert refused(trusting(key), key, tamper=lambda v, h: (v, [(SIGNATURE_HEADER, b"garbage")])) == "bad_signature"


def test_a_signature_over_another_versions_manifest_does_not_carry_over():
    key = signer()
    v3_manifest = encode(b"artefact bytes", META)[-1][1]
    stolen = key.header(v3_manifest)  # a genuine signature, replayed on a renumbered copy
    assert refused(trusting(key), key, meta={**META, "version": 4}, tamper=lambda v, h: (v, [stolen])) == (
        "bad_signature"
    )


def test_a_version_above_the_bound_is_refused_signed_or_not_and_its_chunks_are_not_kept():
    key = signer()
    huge = {**META, "version": 999_999_999}
    assert refused(trusting(key, max_version=1000), key, meta=huge) == "version_out_of_range"
    assert refused(ModelTrust(max_version=1000), None, meta=huge) == "version_out_of_range"
    asm = ModelAssembler(ModelTrust(max_version=1000))
    for k, v in encode(b"x" * 10, huge)[:-1]:
        asm.add(k, v)
    assert not asm._chunks


def test_default_bound_refuses_999_999_999():
    assert refused(ModelTrust(), None, meta={**META, "version": 999_999_999}) == "version_out_of_range"


def test_settings_refuse_bad_verification_keys_and_bounds_readers_would_reject():
    with pytest.raises(ValueError, match="not the base64 of a 32-byte Ed25519 public key"):
        CommonSettings(model_verify_keys="not-a-key")
    with pytest.raises(ValueError):
        CommonSettings(model_max_version=999_999_999)  # the trainer's next number would leave the key pattern
    keys = f"{public_key_text(signer().public)}, {public_key_text(signer().public)}"
    assert len(ModelTrust.from_settings(CommonSettings(model_verify_keys=keys)).keys) == 2


def test_signing_key_file_errors_name_the_file_never_the_key(tmp_path):
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / "rsa.pem"
    path.write_bytes(pem)
    with pytest.raises(SigningKeyError) as info:
        ModelSigner.from_file(path)
    assert str(path) in str(info.value) and "PRIVATE" not in str(info.value)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningKeyError) as info:
        ModelSigner.from_file(garbage)
    assert "c2VjcmV0" not in str(info.value)
    with pytest.raises(SigningKeyError):
        ModelSigner.from_file(tmp_path / "absent.pem")


def test_a_key_written_by_openssl_style_pem_signs(tmp_path):
    private = Ed25519PrivateKey.generate()
    path = tmp_path / "model-signing.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key = ModelSigner.from_file(path)
    assert [mv.version for mv in assemble(trusting(key), key)] == [3]


@pytest.mark.parametrize("command", ["train", "score"])
def test_the_commands_offer_the_trust_settings_with_their_descriptions(command):
    from click.testing import CliRunner  # noqa: PLC0415

    from streamtrain.cli.main import cli  # noqa: PLC0415

    text = CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output
    assert "--model-verify-keys" in text and "STREAMTRAIN_MODEL_VERIFY_KEYS" in text
    assert "--model-max-version" in text and "default 99999999" in text
    assert ("--model-signing-key-file" in text) == (command == "train")
