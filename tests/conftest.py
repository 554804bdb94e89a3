"""Shared fixtures. End-to-end tests run against a real Kafka + HiveMQ started once per
test session on free loopback ports, with data in a temporary directory (the jar cache
under .streamtrain/lib is reused). Each test gets its own topic names."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

from streamtrain import logs
from streamtrain.kafka import ensure_topics
from streamtrain.settings import CommonSettings, StackSettings
from streamtrain.topics import pipeline_topics

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running_stack(home: Path, **overrides):
    """Kafka + HiveMQ on free loopback ports with data under ``home`` (the jar cache is shared), stopped at the end."""
    from streamtrain.stack.local import LocalStack, free_port

    stack = LocalStack(
        StackSettings(
            home=home,
            jars=REPO / ".streamtrain" / "lib",
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
            mqtt_port=free_port(),
            partitions=3,
            **overrides,
        )
    )
    try:
        stack.up(create_topics=False)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    logs.configure(os.environ.get("STREAMTRAIN_LOG_LEVEL", "INFO"), "console")
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture
def pipeline(local_stack) -> CommonSettings:
    """Settings pointing at the session's brokers, with topics unique to this test (already created)."""
    tag = uuid.uuid4().hex[:8]
    s = CommonSettings(
        kafka_bootstrap=local_stack.bootstrap,
        mqtt_port=local_stack.settings.mqtt_port,
        topic_raw=f"t{tag}.raw",
        topic_deadletter=f"t{tag}.deadletter",
        topic_features=f"t{tag}.features",
        topic_windows=f"t{tag}.windows",
        topic_sequences=f"t{tag}.sequences",
        topic_models=f"t{tag}.models",
        topic_scores=f"t{tag}.scores",
    )
    ensure_topics(s.kafka_bootstrap, pipeline_topics(s, partitions=3))
    return s
