"""`streamtrain models pin / unpin / rollback` on real Kafka with a running scorer of each engine: versions
from the real trainer, the scorer switches between batches without a restart, and every reading sent is
scored exactly once by the version the request named."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from confluent_kafka import Producer

from streamtrain import exitcodes
from streamtrain.kafka import producer_config
from streamtrain.modelcontrol import pin_record
from streamtrain.operator import children
from streamtrain.stack.local import free_port
from tests.cli.test_models_e2e import models
from tests.k8s.conftest import ROOT, load_example
from tests.programs import STREAMTRAIN, settings_env
from tests.score.test_scorer_e2e import FeatureStream, start_scorer, train, wait_scores
from tests.score.test_unhealthy_version_e2e import metric
from tests.score_streams.test_streams_scorer_e2e import programs, start_streams_scorer  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


def events(scorer, name: str) -> list[dict]:
    out = []
    for line in scorer.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            out.append(entry)
    return out


def wait_event(scorer, name: str, count: int, timeout: float = 120, stream: FeatureStream | None = None) -> dict:
    """The ``count``-th ``name`` event of the scorer's log, polled until a deadline. With ``stream``, a reading
    per device goes out on each poll: a scorer switches models between batches, and the Kafka Streams
    scorer's batches start with a record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(scorer, name)
        if len(found) >= count:
            return found[count - 1]
        if stream is not None:
            stream.send(1)
        if scorer.proc.poll() is not None:
            raise AssertionError(f"scorer exited with {scorer.proc.returncode}:\n{scorer.log()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{name!r} not logged {count} times within {timeout}s:\n{scorer.log()[-3000:]}")


def served_by(stream: FeatureStream, pipeline) -> set[int]:
    """Send fresh readings; the versions whose scores they got (every reading sent so far must be scored)."""
    first = len(stream.sent)
    stream.send(10)
    scores = wait_scores(pipeline, set(stream.sent))
    fresh = set(stream.sent[first:])
    return {s["model_version"] for s in scores if (s["device_id"], s["seq"]) in fresh}


def start_engine(engine: str, pipeline, tmp_path, running: list) -> tuple:
    """(scorer, its metrics port): the Python or the Kafka Streams scorer, started and caught up with the
    models topic."""
    port = free_port()
    if engine == "python":
        scorer = start_scorer(pipeline, tmp_path, metrics_port=port)
        running.append(scorer)
    else:
        scorer = start_streams_scorer(pipeline, tmp_path, running, metrics_port=port)
    wait_event(scorer, "models_caught_up", 1)
    return scorer, port


@pytest.mark.parametrize("engine", ["python", "kafka-streams"])
def test_pin_unpin_and_rollback_change_what_a_running_scorer_serves(pipeline, tmp_path, programs, engine):  # noqa: F811
    stream = FeatureStream(pipeline, seed=23)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    train(pipeline, tmp_path, "train-v2", records=2000)
    scorer, port = start_engine(engine, pipeline, tmp_path, programs)
    assert served_by(stream, pipeline) == {2}
    nothing = models(pipeline, "list", "--json")
    assert [r["rule"] for r in map(json.loads, nothing.stdout.splitlines())] == ["-", "serves"], nothing.stderr

    pinned = models(pipeline, "pin", "1")
    assert pinned.returncode == 0, pinned.stderr
    assert wait_event(scorer, "pinned", 1, stream=stream)["new_version"] == 1
    assert served_by(stream, pipeline) == {1}
    assert metric(port, "streamtrain_scorer_pinned_version") == 1

    # A version trained while pinned is noted, not served.
    train(pipeline, tmp_path, "train-v3", records=2000)
    noted = wait_event(scorer, "version_not_served", 1, stream=stream)
    assert noted["version"] == 3 and noted["pinned_version"] == 1
    assert metric(port, "streamtrain_scorer_versions_not_served_total") == 1
    assert served_by(stream, pipeline) == {1}
    rows = [json.loads(line) for line in models(pipeline, "list", "--json").stdout.splitlines()]
    assert [(r["version"], r["health"], r["rule"]) for r in rows] == [
        (1, "ok", "serves (pinned)"),
        (2, "ok", "-"),
        (3, "ok", "-"),
    ]

    # A pin the scorer cannot honour (the CLI refuses it too; written straight to the topic here).
    assert models(pipeline, "pin", "9").returncode == exitcodes.FAILED
    producer = Producer(producer_config(pipeline.kafka_bootstrap))
    key, value = pin_record(9)
    producer.produce(pipeline.topic_models, value, key=key)
    assert producer.flush(30) == 0
    refused = wait_event(scorer, "model_refused", 1)
    assert refused["reason"] == "pin_refused" and refused["version"] == 9
    assert metric(port, 'streamtrain_scorer_models_refused_total{reason="pin_refused"}') == 1
    assert served_by(stream, pipeline) == {1}

    unpinned = models(pipeline, "unpin")
    assert unpinned.returncode == 0, unpinned.stderr
    assert wait_event(scorer, "unpinned", 1, stream=stream)["new_version"] == 3
    assert served_by(stream, pipeline) == {3}
    assert metric(port, "streamtrain_scorer_pinned_version") == 0

    rolled = models(pipeline, "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert "rollback from version 3 to 2" in rolled.stdout
    assert wait_event(scorer, "pinned", 2, stream=stream)["new_version"] == 2
    assert served_by(stream, pipeline) == {2}
    assert models(pipeline, "rollback").stdout.startswith("rollback from version 2 to 1")
    assert wait_event(scorer, "pinned", 3, stream=stream)["new_version"] == 1
    assert served_by(stream, pipeline) == {1}
    nowhere = models(pipeline, "rollback")
    assert nowhere.returncode == exitcodes.FAILED and "nothing to roll back to" in nowhere.stderr

    # One process all along, every reading scored exactly once.
    assert len(events(scorer, "models_caught_up")) == 1
    assert scorer.stop() == 0, scorer.log()[-3000:]
    scores = wait_scores(pipeline, set(stream.sent))
    keys = [(s["device_id"], s["seq"]) for s in scores]
    assert len(keys) == len(set(keys)) == len(stream.sent)


def run_rendered_request(
    pipeline, pinned: int | None, existing: list[dict]
) -> tuple[list[dict], subprocess.CompletedProcess]:
    """Render a pipeline on this test's Kafka with ``scorer.pinnedVersion`` = ``pinned`` (the operator's own
    rendering, ``existing`` its owned children), then run its pin or unpin Job's container as a process:
    the same arguments and environment (every variable a literal: external Kafka without authentication,
    signing off), plus this test's topic names, which the resource leaves at their defaults."""
    resource = load_example(ROOT / "examples/external.yaml")
    resource["metadata"].update(namespace="plant", uid="u-pin")
    spec = resource["spec"]
    spec["kafka"]["bootstrap"] = pipeline.kafka_bootstrap
    spec.setdefault("model", {})["signing"] = {"enabled": False}
    spec.setdefault("scorer", {})["pinnedVersion"] = pinned
    wanted = children.desired(resource, existing)
    (job,) = [
        m for m in wanted if m["kind"] == "Job" and m["metadata"]["labels"]["app.kubernetes.io/component"] == "models"
    ]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert all("value" in e for e in container["env"]), container["env"]
    env = {**settings_env(pipeline), **{e["name"]: e["value"] for e in container["env"]}}
    assert env["STREAMTRAIN_KAFKA_BOOTSTRAP"] == pipeline.kafka_bootstrap
    done = subprocess.run([*STREAMTRAIN, *container["args"]], env=env, capture_output=True, text=True, timeout=180)
    return wanted, done


def test_the_operators_pin_job_pins_and_its_unpin_job_unpins_a_running_scorer(pipeline, tmp_path, programs):  # noqa: F811
    """What scorer.pinnedVersion does on a cluster, with the Job's own command and environment: the running
    scorer switches to the pinned version between two batches, and back to the newest once the field goes."""
    stream = FeatureStream(pipeline, seed=29)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    train(pipeline, tmp_path, "train-v2", records=2000)
    scorer, port = start_engine("python", pipeline, tmp_path, programs)
    assert served_by(stream, pipeline) == {2}

    pinned, done = run_rendered_request(pipeline, 1, existing=[])
    assert done.returncode == 0, done.stderr
    assert wait_event(scorer, "pinned", 1, stream=stream)["new_version"] == 1
    assert served_by(stream, pipeline) == {1}
    assert metric(port, "streamtrain_scorer_pinned_version") == 1

    _, done = run_rendered_request(pipeline, None, existing=pinned)
    assert done.returncode == 0, done.stderr
    assert "was pinned to 1" in done.stdout
    assert wait_event(scorer, "unpinned", 1, stream=stream)["new_version"] == 2
    assert served_by(stream, pipeline) == {2}
    assert metric(port, "streamtrain_scorer_pinned_version") == 0

    # A version that is not on the topic: the Job's container fails (the Job retries, then PinApplied is False).
    _, done = run_rendered_request(pipeline, 7, existing=pinned)
    assert done.returncode == exitcodes.FAILED and "version 7 is not on" in done.stderr, done.stderr
    assert served_by(stream, pipeline) == {2}
    assert scorer.stop() == 0, scorer.log()[-3000:]
