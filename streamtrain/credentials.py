"""MQTT credentials file read by the broker's auth extension (stack/java/HiveMQLauncher.java).

One line per identity: ``user:role:pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``. Roles:
``device`` (publishes only to ``devices/<user>/telemetry``) and ``bridge`` (subscribes to device
telemetry). Only hashes are stored; passwords come from the operator (stdin, files, Secrets).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from pathlib import Path

ROLES = ("device", "bridge")
NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: Each connect pays this once per (user, password); the broker caches verified pairs.
ITERATIONS = 20_000


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    scheme, iterations, salt, digest = encoded.split("$")
    if scheme != "pbkdf2_sha256":
        return False
    got = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(got, base64.b64decode(digest))


def set_user(path: Path, user: str, role: str, password: str) -> None:
    """Add ``user`` to the file, or replace its role and password."""
    if not NAME.match(user):
        raise ValueError(f"user {user!r} must be 1-64 characters [A-Za-z0-9_.:-] (a device's user is its id)")
    if role not in ROLES:
        raise ValueError(f"role {role!r} must be one of {ROLES}")
    if not password:
        raise ValueError("empty password")
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.split(":", 1)[0] != user]
    kept.append(f"{user}:{role}:{hash_password(password)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(kept) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
