"""The Python scorer's model watcher without Kafka: what it keeps in its start-up backlog."""

from __future__ import annotations

import threading

from streamtrain.modelcodec import ModelAssembler, encode
from streamtrain.scorer.models import ModelRegistry, ModelWatcher

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
