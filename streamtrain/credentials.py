"""MQTT credentials file read by the broker's auth extension (stack/java/HiveMQLauncher.java).

One line per identity: ``user:role:pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``. Roles:
``device`` (publishes only to ``devices/<user>/telemetry``) and ``bridge`` (subscribes to device
telemetry). Only hashes are stored; passwords come from the operator (stdin, files, Secrets).

A device side file (``streamtrain simulate --credentials``) holds ``device_id:password`` lines:
the passwords themselves, so it is written 0600 and never printed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import stat
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
    set_users(path, [(user, role, password)])


def set_users(path: Path, entries: list[tuple[str, str, str]]) -> None:
    """Add or replace several ``(user, role, password)`` identities with one rewrite of the file."""
    added = users_lines(entries)
    names = {user for user, _, _ in entries}
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.split(":", 1)[0] not in names]
    _write_private(path, "\n".join(kept + added) + "\n")


def users_lines(entries: list[tuple[str, str, str]]) -> list[str]:
    """The users file's lines (hashes only) of ``(user, role, password)`` identities; ValueError for a bad
    name or role or an empty password (never showing a password)."""
    for user, role, password in entries:
        if not NAME.match(user):
            raise ValueError(f"user {user!r} must be 1-64 characters [A-Za-z0-9_.:-] (a device's user is its id)")
        if role not in ROLES:
            raise ValueError(f"role {role!r} must be one of {ROLES}")
        if not password:
            raise ValueError(f"empty password for {user!r}")
    return [f"{user}:{role}:{hash_password(password)}" for user, role, password in entries]


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a 0600 file holding ``text`` (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.chmod(0o600)
    tmp.replace(path)


# ------------------------------------------------------- device side: device_id:password
#: A device id usable as an MQTT user: the users file splits on the first ':', so none in the id.
DEVICE_USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def new_password() -> str:
    """A random password (128 bits, URL-safe base64, no ':')."""
    return secrets.token_urlsafe(16)


def read_device_passwords(path: Path) -> dict[str, str]:
    """``{device_id: password}`` from a ``device_id:password`` file, in file order.

    Blank lines and ``#`` comments are skipped; a password runs to the end of the line (it may hold
    ':'). ValueError names the file and line, never a password, for a missing or unreadable file,
    a malformed line, a bad or repeated device id, or a file without any device.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"credentials file {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"credentials file {path}: is a directory") from None
    except PermissionError:
        raise ValueError(f"credentials file {path}: not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise ValueError(f"credentials file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"credentials file {path}: not readable ({exc.strerror})") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"credentials file {path}:{n}"
        device_id, sep, password = line.partition(":")
        if not sep:
            raise ValueError(f"{where}: expected device_id:password (no ':' on the line)")
        if not DEVICE_USER.match(device_id):
            raise ValueError(f"{where}: device id {device_id[:80]!r} is not 1-64 characters [A-Za-z0-9_.-]")
        if not password:
            raise ValueError(f"{where}: empty password for {device_id}")
        if device_id in out:
            raise ValueError(f"{where}: device {device_id} appears twice")
        out[device_id] = password
    if not out:
        raise ValueError(f"credentials file {path}: no device_id:password lines")
    return out


def loose_permissions(path: Path) -> bool:
    """True when group or others may read the file (0600 is expected)."""
    return bool(Path(path).stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def device_lines(passwords: dict[str, str]) -> str:
    """The ``device_id:password`` text that ``read_device_passwords`` reads."""
    return "".join(f"{d}:{p}\n" for d, p in passwords.items())


def write_device_passwords(path: Path, passwords: dict[str, str]) -> None:
    """Write ``device_id:password`` lines, mode 0600."""
    _write_private(Path(path), device_lines(passwords))


#: The simulator's device ids are <prefix>-00000, ... with this prefix unless told otherwise
#: (simulator/fleet.py FleetConfig.device_prefix; tests/unit/streamtrain_operator/test_mqtt_users.py checks both agree).
FLEET_PREFIX = "dev"


def fleet_ids(devices: int, prefix: str = FLEET_PREFIX) -> list[str]:
    """The ids the simulator gives ``devices`` devices: ``<prefix>-00000``... (simulator/fleet.py)."""
    if devices < 1:
        raise ValueError("--devices must be at least 1")
    width = max(5, len(str(devices - 1)))
    ids = [f"{prefix}-{i:0{width}d}" for i in range(devices)]
    bad = next((d for d in ids if not DEVICE_USER.match(d)), None)
    if bad:
        raise ValueError(f"device id {bad!r} is not 1-64 characters [A-Za-z0-9_.-]: pick another --prefix")
    return ids


def make_fleet(users_file: Path, out: Path, devices: int, prefix: str) -> dict[str, str]:
    """``devices`` device identities ``<prefix>-00000``...: random passwords, hashes (role device) added
    to ``users_file`` and the passwords written 0600 to ``out``; returns ``{device_id: password}``."""
    passwords = {d: new_password() for d in fleet_ids(devices, prefix)}
    write_device_passwords(out, passwords)  # first: hashes without their passwords would be useless
    set_users(users_file, [(d, "device", p) for d, p in passwords.items()])
    return passwords
