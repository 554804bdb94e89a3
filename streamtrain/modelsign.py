"""Who may publish a model version: Ed25519 signatures over manifests, and the bound on version numbers.

The trainer signs the bytes of a version's manifest record (``model/<v>/manifest``) with its private
key, read from a file (a mounted Secret), and sends the signature in that record's header
``streamtrain.signature`` as ``ed25519:<key id>:<base64 signature>``; the key id is the first 8 bytes
of the sha256 of the raw public key, in hex. The manifest holds the size and sha256 of the artefact
and of every attachment, and the version number (which the record's key must repeat), so one signature
covers every byte of the version and its number. Nothing is canonicalised: the bytes verified are the
bytes read, in Python and on the JVM (``scorer/streams`` ``ModelTrust.java``).

Readers given verification keys (``model_verify_keys``: several while a key is rotated) refuse a
version whose manifest is unsigned, signed by a key not listed, or whose signature does not match; with
none, signatures are not checked. Independently, a version numbered above ``model_max_version`` is
refused: one record set claiming version 999,999,999 would otherwise pin every scorer and push the
trainer's next number out of the key pattern (``\\d{1,9}``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_HEADER = "streamtrain.signature"
#: Prefixed to the manifest's bytes before signing: a signature made for something else never verifies here.
DOMAIN = b"streamtrain.model.manifest.v1\n"
#: Readers' key pattern allows 9 digits; the trainer numbers max + 1, which must stay inside it.
KEY_PATTERN_MAX = 999_999_999
DEFAULT_MAX_VERSION = 99_999_999


class SigningKeyError(ValueError):
    """The signing key file or a verification key cannot be used (the message never holds key material)."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    """How a verification key is written in ``model_verify_keys``: base64 of its 32 raw bytes."""
    return base64.b64encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def parse_public_keys(text: str) -> dict[str, Ed25519PublicKey]:
    """``model_verify_keys`` (comma-separated base64 raw keys) by key id."""
    keys = {}
    for i, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            raw = base64.b64decode(item, validate=True)
            public = Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError):
            raise SigningKeyError(
                f"verification key #{i + 1} is not the base64 of a 32-byte Ed25519 public key"
            ) from None
        keys[key_id(public)] = public
    return keys


@dataclass(frozen=True)
class ModelTrust:
    """What a reader accepts: version numbers up to ``max_version``; with ``keys``, only manifests signed by one."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    max_version: int = DEFAULT_MAX_VERSION

    @classmethod
    def from_settings(cls, s) -> ModelTrust:
        """From a settings object with ``model_verify_keys`` and ``model_max_version`` (``CommonSettings``)."""
        return cls(parse_public_keys(s.model_verify_keys), s.model_max_version)

    def refusal(self, version: int, manifest: bytes, headers) -> tuple[str, str] | None:
        """(reason, detail) if the version with this manifest record must not be served, else None."""
        if version > self.max_version:
            return "version_out_of_range", f"v{version} > model_max_version {self.max_version}"
        if not self.keys:
            return None
        values = [v for k, v in headers or () if k == SIGNATURE_HEADER]
        if not values or values[-1] is None:
            return "unsigned", f"v{version}: manifest has no {SIGNATURE_HEADER} header"
        try:
            algorithm, kid, text = bytes(values[-1]).decode("ascii").split(":", 2)
            signature = base64.b64decode(text, validate=True)
        except (UnicodeDecodeError, ValueError, binascii.Error):
            return "bad_signature", f"v{version}: {SIGNATURE_HEADER} header is not ed25519:<key id>:<base64>"
        if algorithm != "ed25519":
            return "bad_signature", f"v{version}: algorithm {algorithm[:20]!r}, only ed25519 is accepted"
        public = self.keys.get(kid)
        if public is None:
            return "unknown_key", f"v{version}: signed by key {kid[:16]!r}, not one of {sorted(self.keys)}"
        try:
            public.verify(signature, DOMAIN + manifest)
        except InvalidSignature:
            return "bad_signature", f"v{version}: signature by key {kid} does not match the manifest"
        return None


class ModelSigner:
    """The trainer's signing key (Ed25519, PEM PKCS#8 as ``openssl genpkey -algorithm ed25519`` writes it)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def from_file(cls, path: Path) -> ModelSigner:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"signing key file {path} cannot be read: {exc.strerror}") from None
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise SigningKeyError(f"signing key file {path} is not an unencrypted PEM private key") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key file {path} holds a {type(private).__name__}, not an Ed25519 key")
        return cls(private)

    def header(self, manifest: bytes) -> tuple[str, bytes]:
        """The header that carries this key's signature of ``manifest``."""
        signature = base64.b64encode(self._private.sign(DOMAIN + manifest)).decode()
        return SIGNATURE_HEADER, f"ed25519:{self.key_id}:{signature}".encode()

    def trust(self, max_version: int) -> ModelTrust:
        """Readers that accept exactly this key's versions (the trainer's read-back)."""
        return ModelTrust({self.key_id: self.public}, max_version)
