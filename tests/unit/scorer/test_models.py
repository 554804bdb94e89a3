"""The Python scorer's model watcher without Kafka: what it keeps in its start-up backlog.

A version that fails on live input after warm-up (scorer/models.py ``ModelRegistry.fail``): the registry
logic without Kafka, and the real failing artefact of tests/score/failing_model.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamtrain.model import LoadedModel
from streamtrain.modelcodec import ModelAssembler, ModelVersion, encode
from streamtrain.scorer.models import (
    ModelRegistry,
    ModelWatcher,
    pin_record,
    promote_record,
    unhealthy_reason,
)
from tests.score.failing_model import failing_version

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
        self.metadata = {
            "version": version,
            **({"training_health": {"status": status}} if status else {}),
        }


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
    assert registry.apply() == [
        ("champion_switched", None, 1),
        ("version_held", 1, 2),
        ("challenger_loaded", None, 3),
    ]


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


def _watching(*manifests: dict, controls=()) -> tuple[ModelRegistry, _Watcher, list[str], ModelAssembler]:
    """A watcher caught up with ``manifests`` (versions 1, 2, …) and ``controls`` read before catch-up."""
    registry, refused = ModelRegistry(False), list[str]()
    watcher = _Watcher("unused:9092", "models", registry, refused.append, threading.Event())
    assembler, backlog = ModelAssembler(), list[ModelVersion]()
    for version, extra in enumerate(manifests, start=1):
        for key, value in encode(b"artefact", {**META, "version": version, **extra}):
            watcher.handle(assembler, backlog, key, value)
    for key, value in controls:
        watcher.handle(assembler, backlog, key, value)
    watcher._catch_up(backlog)
    registry.apply()
    return registry, watcher, refused, assembler


def _arrive(
    watcher: _Watcher,
    assembler: ModelAssembler,
    version: int,
    extra: dict | None = None,
) -> None:
    for key, value in encode(b"artefact", {**META, "version": version, **(extra or {})}):
        watcher.handle(assembler, [], key, value)


def test_a_pin_serves_an_older_version_and_newer_ones_are_noted_not_served_until_unpin():
    registry, watcher, refused, assembler = _watching(_health("ok"), _health("ok"))
    assert registry.champion.version == 2
    watcher.handle(assembler, [], *pin_record(1))
    assert registry.apply() == [("pinned", 2, 1)]
    assert registry.champion.version == 1 and registry.pinned == 1
    _arrive(watcher, assembler, 3)
    assert registry.apply() == [("version_not_served", 1, 3)]
    assert registry.champion.version == 1
    watcher.handle(assembler, [], *promote_record(3))  # a pin wins over promotions
    assert registry.apply() == [] and registry.champion.version == 1
    watcher.handle(assembler, [], *pin_record(None))
    assert registry.apply() == [("unpinned", 1, 3)]
    assert registry.champion.version == 3 and registry.pinned is None and not refused


def test_a_pin_may_name_an_unhealthy_version_and_unpin_returns_to_the_newest_healthy():
    registry, watcher, _, assembler = _watching(_health("ok"), _health("ok"), _health("not_converged"))
    assert registry.champion.version == 2 and registry.held.version == 3
    watcher.handle(assembler, [], *pin_record(3))
    assert registry.apply() == [("pinned", 2, 3)] and registry.held is None
    watcher.handle(assembler, [], *pin_record(None))
    assert registry.apply() == [("unpinned", 3, 2)]


def test_unpin_while_the_rule_already_serves_the_pinned_version_keeps_it():
    registry, watcher, _, assembler = _watching(_health("ok"), _health("ok"))
    watcher.handle(assembler, [], *pin_record(2))
    registry.apply()
    watcher.handle(assembler, [], *pin_record(None))
    assert registry.apply() == [("unpinned", 2, 2)] and registry.pinned is None


def test_unpin_before_the_scoring_loop_applied_the_pin_leaves_the_rule_serving():
    # The watcher reads pin 1 and unpin in one poll, before the scoring loop takes the pin: the unpin
    # undoes the pending pin, so v2 (the rule's pick) keeps serving rather than v1 staying pinned.
    registry, watcher, _, assembler = _watching(_health("ok"), _health("ok"))
    watcher.handle(assembler, [], *pin_record(1))
    watcher.handle(assembler, [], *pin_record(None))
    assert registry.apply() == [("unpinned", 2, 2)]
    assert registry.champion.version == 2 and registry.pinned is None


def test_a_pin_naming_a_missing_or_refused_version_is_refused_and_the_champion_stays():
    class _RefusesTwo(_Watcher):
        def _load(self, mv):
            if mv.version == 2:
                self.refused.add(2)
                self._refuse(2, "load_failed", "test")
                return None
            return super()._load(mv)

    registry, refused = ModelRegistry(False), list[str]()
    watcher = _RefusesTwo("unused:9092", "models", registry, refused.append, threading.Event())
    watcher.caught_up.set()
    assembler = ModelAssembler()
    _arrive(watcher, assembler, 1)
    _arrive(watcher, assembler, 2)
    registry.apply()
    assert registry.champion.version == 1 and refused == ["load_failed"]
    watcher.handle(assembler, [], *pin_record(7))
    watcher.handle(assembler, [], *pin_record(2))
    assert registry.apply() == [] and registry.champion.version == 1 and registry.pinned is None
    assert refused == ["load_failed", "pin_refused", "pin_refused"]
    for key, _ in encode(b"artefact", {**META, "version": 1}):  # v1 deleted by the trainer: cannot be pinned
        watcher.handle(assembler, [], key, None)
    watcher.handle(assembler, [], *pin_record(1))
    assert refused[-1] == "pin_refused" and registry.apply() == []


def test_a_pin_on_the_topic_outlives_a_restart_and_an_unpin_after_it_cancels_it():
    registry, *_ = _watching(_health("ok"), _health("ok"), _health("ok"), controls=[pin_record(1)])
    assert registry.champion.version == 1 and registry.pinned == 1 and registry.held is None
    unpinned, *_ = _watching(_health("ok"), _health("ok"), controls=[pin_record(1), pin_record(None)])
    assert unpinned.champion.version == 2 and unpinned.pinned is None
    missing, _, refused, _ = _watching(_health("ok"), _health("ok"), controls=[pin_record(9)])
    assert missing.champion.version == 2 and missing.pinned is None and refused == ["pin_refused"]


def test_bad_control_records_are_refused_with_a_reason():
    registry, watcher, refused, assembler = _watching(_health("ok"))
    for value in (
        b"{}",
        b'{"version": "2"}',
        b'{"version": 0}',
        b"not json",
        b'{"version": true}',
    ):
        watcher.handle(assembler, [], b"control/pin", value)
    watcher.handle(assembler, [], b"control/promote", b'{"version": null}')
    assert refused == ["bad_control"] * 6 and registry.apply() == [] and registry.pinned is None


def test_a_failed_champion_gives_way_to_the_previous_one_and_is_never_served_again():
    registry = ModelRegistry(False)
    registry.offer(_Loaded(1))
    registry.apply()
    registry.offer(_Loaded(2))
    assert registry.apply() == [("champion_switched", 1, 2)] and registry.previous.version == 1
    failed = registry.champion
    successor = registry.fail(failed)
    assert successor is not None and successor.version == 1
    assert registry.champion.version == 1 and registry.bad == {2} and registry.previous is None
    registry.request_promotion(2)  # a promotion naming the bad version: refused, reported as an event
    assert registry.apply() == [("version_refused", 1, 2)] and registry.champion.version == 1
    registry.pin(failed)  # the watcher refuses it first; the registry never serves it either
    assert registry.apply() == [("version_refused", 1, 2)] and registry.champion.version == 1


def test_a_failed_champion_without_a_previous_one_takes_the_rule_pick_or_stays_flagged():
    registry = ModelRegistry(False)
    registry.offer(_Loaded(3))
    registry.apply()
    assert registry.fail(registry.champion, _Loaded(1)).version == 1 and registry.champion.version == 1
    alone = ModelRegistry(False)
    alone.offer(_Loaded(1))
    alone.apply()
    assert alone.fail(alone.champion) is None
    assert alone.champion.version == 1 and alone.bad == {1}  # kept to decode; the scorer dead-letters
    alone.offer(_Loaded(2))
    assert alone.apply() == [("champion_switched", 1, 2)]
    assert alone.previous is None  # a bad version never becomes the fallback


def test_a_failed_challenger_is_dropped_and_the_champion_stays():
    registry = ModelRegistry(True)
    registry.offer(_Loaded(1))
    registry.offer(_Loaded(2))
    registry.apply()
    assert registry.fail(registry.challenger) is None
    assert registry.challenger is None and registry.champion.version == 1 and registry.bad == {2}


def test_a_failed_pinned_version_unpins_and_the_one_before_serves():
    registry = ModelRegistry(False)
    registry.offer(_Loaded(1))
    registry.apply()
    registry.pin(_Loaded(2))
    registry.apply()
    assert registry.fail(registry.champion).version == 1 and registry.pinned is None


def test_the_watcher_refuses_a_pin_naming_a_bad_version_and_the_rule_skips_it():
    registry, watcher, refused, assembler = _watching(_health("ok"), _health("ok"))
    assert registry.champion.version == 2
    assert registry.previous is None  # caught up with v2 only: v1 was never loaded
    registry.bad.add(2)  # as the scorer does before asking the watcher for the rule's pick
    fallback = watcher.fallback_model()
    assert fallback is not None and fallback.version == 1
    assert registry.fail(registry.champion, fallback) is fallback and registry.champion.version == 1
    watcher.handle(assembler, [], *pin_record(2))
    assert refused == ["pin_refused"] and registry.apply() == []
    assert watcher.healthy() == {1: True}
    _arrive(watcher, assembler, 3)
    watcher.handle(assembler, [], *promote_record(2))
    events = registry.apply()
    assert ("version_refused", 3, 2) in events and registry.champion.version == 3
    watcher.handle(assembler, [], *pin_record(1))
    assert registry.apply() == [("pinned", 3, 1)]
    watcher.handle(assembler, [], *pin_record(None))  # the rule without bad versions: 3
    assert registry.apply()[-1] == ("unpinned", 1, 3)
    assert watcher.fallback_model().version == 3


def _loaded(artefact: bytes, meta: dict, attachments: dict) -> LoadedModel:
    assembler, mv = ModelAssembler(), None
    for key, value in encode(artefact, meta, attachments):
        mv = assembler.add(key, value) or mv
    assert mv is not None
    return LoadedModel.from_version(mv)


def test_the_failing_artefact_passes_load_and_warm_up_and_fails_on_live_input():
    pytest.importorskip("keras")
    meta = {
        "feature_names": ["temperature", "current", "vibration", "pressure"],
        "threshold": 0.5,
        "format": "keras-v3",
        "normalization": {"mean": [70.0, 2.5, 0.5, 3.0], "std": [2.0, 0.1, 0.05, 0.2]},
    }
    model = _loaded(*failing_version(meta, 2))
    model.warm()  # what the watcher runs before offering a version
    live = np.array([[70.4, 2.5, 0.5, 3.0]] * 5, np.float32)
    with pytest.raises(Exception, match="not in"):
        model.assess(live, [None] * 5)
