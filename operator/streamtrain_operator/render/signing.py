"""Signed model versions (``streamtrain.modelsign``): which Secret holds a pipeline's key pair, and what of
it each Pod sees. The trainer gets the private key as one file (only that key of the Secret); every scorer,
Python or Kafka Streams, gets the public keys in STREAMTRAIN_MODEL_VERIFY_KEYS and refuses versions not
signed by one of them. The trainer gets them too, so its read-back sees what the scorers accept, and so
does a pin Job (``render.models``), which pins only a version the scorers would accept.

The operator's own Secret (no ``secretRef``) is made by ``streamtrain.operator.signing``, not rendered here:
its key is random, and rendering stays a pure function of the spec."""

from __future__ import annotations

from streamtrain.operator.render.connections import secret_file_volume

#: Keys of the Secret: the private key (PKCS8 PEM) and the public keys as modelsign reads them.
SIGNING_KEY = "signing-key.pem"
VERIFY_KEYS = "verify-keys"
SIGNING_MOUNT = "/var/run/streamtrain/model-signing"


def secret_name(name: str, spec: dict) -> str | None:
    """The key Secret of a pipeline: the one named by ``model.signing.secretRef``, else the operator's
    ``<name>-model-signing``; None when signing is off."""
    signing = spec["model"]["signing"]
    if not signing["enabled"]:
        return None
    return (signing.get("secretRef") or {}).get("name") or generated_name(name)


def generated_name(name: str) -> str:
    return f"{name}-model-signing"


def operator_made(spec: dict) -> bool:
    """Whether the operator creates the key Secret (signing on, no Secret of the user's)."""
    signing = spec["model"]["signing"]
    return bool(signing["enabled"]) and not signing.get("secretRef")


def env(program: str, name: str, spec: dict) -> list[dict]:
    secret = secret_name(name, spec)
    if secret is None or program not in ("train", "score", "models"):
        return []
    out = [
        {
            "name": "STREAMTRAIN_MODEL_VERIFY_KEYS",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": VERIFY_KEYS}},
        }
    ]
    if program == "train":
        out.append({"name": "STREAMTRAIN_MODEL_SIGNING_KEY_FILE", "value": f"{SIGNING_MOUNT}/{SIGNING_KEY}"})
    return out


def volumes(program: str, name: str, spec: dict) -> tuple[list[dict], list[dict]]:
    """The private key, as a read-only file, for the trainer only."""
    secret = secret_name(name, spec)
    if secret is None or program != "train":
        return [], []
    v, m = secret_file_volume("model-signing", {"name": secret, "key": SIGNING_KEY}, SIGNING_KEY, SIGNING_MOUNT)
    return [v], [m]
