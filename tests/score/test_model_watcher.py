"""The Python scorer's model watcher without Kafka: what it keeps in its start-up backlog."""

from __future__ import annotations

import threading

from streamtrain.modelcodec import ModelAssembler, ModelVersion, encode
from streamtrain.scorer.models import ModelRegistry, ModelWatcher, promote_record, unhealthy_reason

META = {"feature_names": ["a", "b"], "threshold": 0.5, "format": "keras-v3"}


def test_a_version_deleted_before_catch_up_leaves_the_backlog():
    refused: list[str] = []
    watcher = ModelWatcher("unused:9092", "models", ModelRegistry(False), refused.append, threading.Event())
    assembler, backlog = ModelAssembler(), []
    for version in (1, 2):
        for key, value in encode(b"artefact", {**META, "version": version}):
            watcher.handle(assembler, backlog, key, value)
    assert [mv.version for mv in backlog] == [1, 2]
    for key, _ in encode(b"artefact", {**META, "version": 1}):  # the trainer's tombstones of v1
        watcher.handle(assembler, backlog, key, None)
    assert [mv.version for mv in backlog] == [2] and not refused


class _Loaded:
    """What the registry needs of a loaded version (the e2e tests load real ones)."""

    def __init__(self, version: int, status: str | None = "ok") -> None:
        self.version = version
        self.metadata = {"version": version, **({"training_health": {"status": status}} if status else {})}


class _Watcher(ModelWatcher):
    """Loads every assembled version as a ``_Loaded`` whose health its manifest names."""

    def _load(self, mv):
        return _Loaded(mv.version, (mv.metadata.get("training_health") or {}).get("status"))


def _health(status: str) -> dict:
    return {"training_health": {"status": status, "problems": [f"{status}: test"]}}


def test_an_unhealthy_version_is_held_while_another_serves_and_promoted_only_on_request():
    registry = ModelRegistry(False)
    registry.offer(_Loaded(1))
    assert registry.apply() == [("champion_switched", None, 1)]
    registry.offer(_Loaded(2, "no_better_than_constant"))
    assert registry.apply() == [("version_held", 1, 2)]
    assert registry.champion.version == 1 and registry.held.version == 2
    registry.request_promotion(3)  # neither challenger nor held: refused, nothing moves
    assert registry.apply() == [] and registry.champion.version == 1
    registry.request_promotion(2)
    assert registry.apply() == [("held_promoted", 1, 2)]
    assert registry.champion.version == 2 and registry.held is None


def test_a_newer_healthy_version_replaces_the_held_one_and_unknown_health_serves():
    registry = ModelRegistry(False)
    registry.offer(_Loaded(1, None))  # trained before the health check: served as before
    registry.offer(_Loaded(2, "not_converged"))
    assert registry.apply() == [("champion_switched", None, 1), ("version_held", 1, 2)]
    registry.offer(_Loaded(3))
    assert registry.apply() == [("champion_switched", 1, 3)]
    assert registry.held is None


def test_challenger_mode_holds_an_unhealthy_version_instead_of_shadowing_it():
    registry = ModelRegistry(True)
    registry.offer(_Loaded(1))
    registry.offer(_Loaded(2, "not_converged"))
    registry.offer(_Loaded(3))
    assert registry.apply() == [("champion_switched", None, 1), ("version_held", 1, 2), ("challenger_loaded", None, 3)]


def test_an_unhealthy_first_version_serves_since_nothing_else_can():
    registry = ModelRegistry(False)
    registry.offer(_Loaded(1, "no_better_than_constant"))
    assert registry.apply() == [("champion_switched", None, 1)]
    assert unhealthy_reason(registry.champion.metadata) == "no_better_than_constant"
    assert unhealthy_reason({"training_health": {"status": "something_new"}}) == "unhealthy"


def _caught_up(*manifests: dict, promote: int | None = None) -> ModelRegistry:
    registry = ModelRegistry(False)
    watcher = _Watcher("unused:9092", "models", registry, [].append, threading.Event())
    assembler, backlog = ModelAssembler(), list[ModelVersion]()
    for version, extra in enumerate(manifests, start=1):
        for key, value in encode(b"artefact", {**META, "version": version, **extra}):
            watcher.handle(assembler, backlog, key, value)
    if promote is not None:
        watcher.handle(assembler, backlog, *promote_record(promote))
    watcher._catch_up(backlog)
    registry.apply()
    return registry


def test_at_start_the_newest_healthy_version_serves_and_a_newer_unhealthy_one_is_held():
    registry = _caught_up(_health("ok"), _health("not_converged"))
    assert registry.champion.version == 1 and registry.held.version == 2
    only_unhealthy = _caught_up(_health("not_converged"))
    assert only_unhealthy.champion.version == 1 and only_unhealthy.held is None


def test_a_promotion_request_on_the_topic_outlives_a_restart():
    registry = _caught_up(_health("ok"), _health("not_converged"), promote=2)
    assert registry.champion.version == 2 and registry.held is None
