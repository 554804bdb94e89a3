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
#: A test that starts or uses brokers carries one of these; `make test-unit` runs the rest.
BROKER_MARKERS = ("e2e", "faults", "kube", "node", "images", "skaffold")
pytest_plugins = ["pytester"]
#: Scheduling only (a stale entry costs minutes, never a result): the files whose tests take longest in total
#: (`make test`'s --durations), started first so that none of them ends the run alone.
LONGEST_FILES = (
    "tests/cli/test_models_pin_e2e.py",
    "tests/score/test_scorer_e2e.py",
    "tests/ingest/test_kafka_auth_e2e.py",
    "tests/test_pipeline_e2e.py",
    "tests/fleet/test_fleet_quality_e2e.py",
    "tests/score_streams/test_streams_scorer_e2e.py",
    "tests/score_streams/test_model_trust_e2e.py",
    "tests/score/test_failed_version_e2e.py",
    "tests/cli/test_models_e2e.py",
    "tests/ingest/test_device_formats_e2e.py",
)
_running: dict[str, pytest.Item | None] = {"item": None}


def _marked(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(m) for m in BROKER_MARKERS)


def pytest_collection_modifyitems(config, items):
    """A test that uses the session's brokers without a marker would start them in the unit tier."""
    unmarked = [i.nodeid for i in items if "local_stack" in getattr(i, "fixturenames", ()) and not _marked(i)]
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) use the brokers (fixture local_stack) without one of the markers "
            f"{', '.join(BROKER_MARKERS)}: {', '.join(unmarked[:10])}"
        )
    # `make test`'s workers (pytest-xdist) take a file at a time in this order: the longest files first, then
    # the other broker files, then the unit files to fill the gaps at the end. Order within a file is kept.
    brokered = {i.path for i in items if _marked(i)}
    root = Path(str(config.rootpath))
    rank = {root / f: n for n, f in enumerate(LONGEST_FILES)}
    items.sort(key=lambda i: (i.path not in brokered, rank.get(Path(i.path), len(rank))))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _running["item"] = item


@pytest.fixture(autouse=True, scope="session")
def _brokers_only_in_marked_tests():
    """Brokers started any other way (a LocalStack of a test's own) are refused in an unmarked test too."""
    from streamtrain.stack.local import LocalStack

    up = LocalStack.up

    def guarded_up(self, *args, **kwargs):
        item = _running["item"]
        if item is not None and not _marked(item):
            pytest.fail(
                f"{item.nodeid} starts brokers without one of the markers {', '.join(BROKER_MARKERS)}", pytrace=False
            )
        return up(self, *args, **kwargs)

    LocalStack.up = guarded_up
    yield
    LocalStack.up = up


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


@contextlib.contextmanager
def another_hivemq(local_stack, home: Path, stack_class=None, **overrides):
    """A HiveMQ of a test's own (the extension, TLS, ...) beside the session's Kafka, writing to test-unique raw
    and dead-letter topics (created), stopped at the end; ``stack_class``: a LocalStack subclass to run it."""
    from streamtrain.stack.local import LocalStack, free_port

    tag = uuid.uuid4().hex[:8]
    settings = StackSettings(
        home=home,
        jars=REPO / ".streamtrain" / "lib",
        kafka_port=local_stack.settings.kafka_port,
        mqtt_port=free_port(),
        **{"topic_raw": f"h{tag}.raw", "topic_deadletter": f"h{tag}.deadletter", **overrides},
    )
    stack = (stack_class or LocalStack)(settings)
    wanted = (settings.topic_raw, settings.topic_deadletter)
    ensure_topics(stack.bootstrap, [t for t in pipeline_topics(settings, partitions=3) if t.name in wanted])
    stack.start_hivemq()
    try:
        stack._wait(stack.hivemq, stack.hivemq_ready, 120)
        yield stack
    finally:
        stack.stop_service(stack.hivemq)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    logs.configure(os.environ.get("STREAMTRAIN_LOG_LEVEL", "INFO"), "console")
    from streamtrain.stack.local import free_port

    # HiveMQ serves its own counters too (tests/ingest/test_broker_drops_e2e.py reads the dropped messages).
    with running_stack(tmp_path_factory.mktemp("stack"), broker_metrics_port=free_port()) as stack:
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
