"""A version that fails on live input after warm-up (scorer/models.py ``ModelRegistry.fail``): the registry
logic without Kafka, and the real failing artefact of tests/score/failing_model.py."""

from __future__ import annotations

import numpy as np
import pytest

from streamtrain.model import LoadedModel
from streamtrain.modelcodec import ModelAssembler, encode
from streamtrain.scorer.models import ModelRegistry, pin_record, promote_record
from tests.score.failing_model import failing_version
from tests.score.test_model_watcher import _arrive, _health, _Loaded, _watching


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
