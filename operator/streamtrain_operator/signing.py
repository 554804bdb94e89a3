"""A pipeline's model-signing Secret, made by the operator when ``model.signing`` is on and names no
Secret of the user's: a fresh Ed25519 key pair, created once and never replaced (running scorers trust
only its public key, so a new pair would make them refuse every later version).

The private key exists only in the Secret manifest built here and the create request: never logged,
never in status, Events or metrics."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamtrain.modelsign import public_key_text
from streamtrain.operator.render import objects, signing


def new_secret(name: str, namespace: str) -> objects.Manifest:
    """The Secret ``<name>-model-signing`` with a new key pair: ``signing-key.pem`` (PKCS8 PEM, what the
    trainer's ``model_signing_key_file`` reads) and ``verify-keys`` (its public key as ``model_verify_keys``
    takes it). Owner references are the caller's (``kopf.adopt``)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": objects.meta(name, signing.generated_name(name), "train", namespace),
        "type": "Opaque",
        "stringData": {signing.SIGNING_KEY: pem, signing.VERIFY_KEYS: public_key_text(private.public_key())},
    }
