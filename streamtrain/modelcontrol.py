"""Which version the scorers serve: the control records on the models topic and the one rule over them.

Besides versions (``model/<version>/…``, see ``streamtrain.modelcodec``) the models topic carries control
records, keyed under ``control/``, JSON ``{"version": …, "at": unix time}``:

    control/promote   make a challenger or a held (unhealthy) version champion
    control/pin       serve exactly this version whatever arrives later; ``"version": null`` unpins

Each kind has one key, so compaction keeps the newest request of each and a restarted scorer reads it
again. The rule (``serving_version``) is the one both scorer engines follow and ``streamtrain models``
reports: a pin wins; otherwise the newest healthy version, or a promoted one if newer; with no healthy
version at all, the oldest (it served first because nothing else could; later ones are held).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

CONTROL_PREFIX = b"control/"
PROMOTE_KEY = b"control/promote"
PIN_KEY = b"control/pin"

#: ``training_health.status`` values the trainer writes for an unhealthy run (other values count as ``unhealthy``).
HEALTH_PROBLEMS = ("not_converged", "no_better_than_constant")


def promote_record(version: int) -> tuple[bytes, bytes]:
    """Key and value of a control record asking scorers to promote ``version``."""
    return PROMOTE_KEY, json.dumps({"version": version, "at": time.time()}).encode()


def pin_record(version: int | None) -> tuple[bytes, bytes]:
    """Key and value of a control record asking scorers to serve exactly ``version`` (None: unpin)."""
    return PIN_KEY, json.dumps({"version": version, "at": time.time()}).encode()


class BadControl(ValueError):
    """A control record that names no version."""


@dataclass(frozen=True)
class ModelControl:
    """The newest promotion and pin requests read from the topic."""

    promoted: int | None = None
    pinned: int | None = None

    def read(self, key: bytes, value: bytes | None) -> ModelControl:
        """This state after one control record; ``BadControl`` when the record is not one."""
        try:
            version = json.loads(value or b"{}")["version"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise BadControl(f"{key[:80]!r}: {str(exc)[:200]}") from exc
        if key == PIN_KEY and version is None:
            return replace(self, pinned=None)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise BadControl(f"{key[:80]!r}: version {str(version)[:40]!r} is not a positive integer")
        if key == PIN_KEY:
            return replace(self, pinned=version)
        if key == PROMOTE_KEY:
            return replace(self, promoted=version)
        return self  # a request of a newer release: ignored, as older scorers ignored ``control/pin``

    @classmethod
    def of(cls, records: Iterable[tuple[bytes, bytes | None]]) -> ModelControl:
        """The state after ``records`` in topic order (records that are not control requests are skipped)."""
        state = cls()
        for key, value in records:
            try:
                state = state.read(key, value)
            except BadControl:
                continue
        return state


def unhealthy_reason(metadata: dict) -> str | None:
    """Why a version's training was not healthy, from its manifest; None when ``ok`` or absent (versions
    trained before the trainer checked its health are served as before)."""
    health = metadata.get("training_health")
    status = health.get("status") if isinstance(health, dict) else None
    if status is None or status in ("ok", "unknown"):
        return None
    return status if status in HEALTH_PROBLEMS else "unhealthy"


def serving_version(healthy: Mapping[int, bool], control: ModelControl) -> int | None:
    """The version the scorers serve, given ``{version: healthy}`` of the versions they accept."""
    if control.pinned in healthy:
        return control.pinned
    candidates = [v for v, ok in healthy.items() if ok]
    if control.promoted in healthy:
        candidates.append(control.promoted)
    if candidates:
        return max(candidates)
    return min(healthy, default=None)


def rollback_target(healthy: Mapping[int, bool], control: ModelControl) -> int | None:
    """The newest healthy version older than the one served now (None: nothing to roll back to)."""
    serving = serving_version(healthy, control)
    if serving is None:
        return None
    return max((v for v, ok in healthy.items() if ok and v < serving), default=None)
