"""Kafka with SASL/SCRAM-SHA-512 over TLS and ACLs, on a real broker started for this module
(`stack up --kafka-auth scram`): strangers are refused, each program's user holds exactly the
topics of streamtrain.access, and the whole pipeline runs with every program as its own user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamtrain.access import PROGRAMS, grants
from streamtrain.kafka import READER_GROUP, ensure_topics, read_topic
from streamtrain.quality import evaluate
from streamtrain.settings import CommonSettings
from streamtrain.stack.local import ADMIN
from streamtrain.topics import pipeline_topics
from tests.conftest import running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scram_stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("scram"), kafka_auth="scram") as stack:
        yield stack


@pytest.fixture
def topics(scram_stack) -> CommonSettings:
    tag = uuid.uuid4().hex[:8]
    topics: dict[str, Any] = {
        f"topic_{t}": f"a{tag}.{t}"
        for t in ("raw", "deadletter", "features", "windows", "sequences", "models", "scores")
    }
    s = CommonSettings(kafka_bootstrap=scram_stack.bootstrap, mqtt_port=scram_stack.settings.mqtt_port, **topics)
    ensure_topics(s.kafka_bootstrap, pipeline_topics(s, partitions=1), **scram_stack.client_security())
    return s


def _metadata_error(config: dict) -> str:
    """What a client with ``config`` gets when it asks for metadata ('' if it gets in)."""
    errors: list[str] = []
    admin = AdminClient({**config, "error_cb": lambda e: errors.append(e.str()), "socket.timeout.ms": 3000})
    try:
        admin.list_topics(timeout=6)
        return ""
    except KafkaException as exc:
        admin.poll(1)  # serves the error callbacks that say why
        return " | ".join(errors) or str(exc)


def test_only_scram_users_over_verified_tls_get_in(scram_stack):
    good = scram_stack.client_security(ADMIN)
    assert _metadata_error({"bootstrap.servers": scram_stack.bootstrap, **good}) == ""
    plaintext = _metadata_error({"bootstrap.servers": scram_stack.bootstrap})
    assert plaintext, "a PLAINTEXT client must not get metadata"
    wrong = _metadata_error({"bootstrap.servers": scram_stack.bootstrap, **good, "sasl.password": "not-it"})
    assert "Authentication failed" in wrong or "authentication" in wrong.lower(), wrong
    stranger = _metadata_error({"bootstrap.servers": scram_stack.bootstrap, **good, "sasl.username": "nobody"})
    assert "authentication" in stranger.lower(), stranger
    # The broker's certificate is checked: without our CA the handshake fails before any password is sent.
    untrusted = {k: v for k, v in good.items() if k != "ssl.ca.location"}
    assert "certificate verify failed" in _metadata_error({"bootstrap.servers": scram_stack.bootstrap, **untrusted})


def _can_write(config: dict, topic: str) -> bool:
    p = Producer({**config, "enable.idempotence": True, "acks": "all", "message.timeout.ms": 10000})
    outcome: list = []
    try:
        p.produce(topic, b"probe", key=b"probe", on_delivery=lambda err, _m: outcome.append(err))
    except KafkaException as exc:
        return _refused(exc.args[0])
    try:
        p.flush(15)
    except KafkaException as exc:  # a user who may write nowhere gets no producer id at all
        return _refused(exc.args[0])
    assert outcome, f"no delivery report for {topic}"
    return outcome[0] is None or _refused(outcome[0])


def _can_read(config: dict, topic: str, group: str) -> bool:
    c = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        # Without Describe the refusal is in the metadata only: librdkafka never fetches such a topic.
        error = c.list_topics(topic, timeout=10).topics[topic].error
        if error is not None:
            return _refused(error)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        for _ in range(40):
            for m in c.consume(10, 0.5):
                if m.error():
                    return _refused(m.error())
                return True
        raise AssertionError(f"reading {topic}: neither a record (one was written) nor a refusal within 20s")
    finally:
        c.close()


def _refused(err) -> bool:
    assert err.code() in (
        err.TOPIC_AUTHORIZATION_FAILED,
        err.GROUP_AUTHORIZATION_FAILED,
        err.CLUSTER_AUTHORIZATION_FAILED,
    ), f"expected an authorization refusal, got {err}"
    return False


def test_each_program_user_holds_exactly_its_topics(scram_stack, topics):
    admin = {"bootstrap.servers": scram_stack.bootstrap, **scram_stack.client_security(ADMIN)}
    all_topics = [t.name for t in pipeline_topics(topics)]
    for t in all_topics:  # something to read everywhere
        assert _can_write(admin, t)
    seen = {}
    for program in PROGRAMS:
        user = f"{program}-{uuid.uuid4().hex[:4]}"
        env = scram_stack.kafka_user(user, program, topics=topics)
        assert env["STREAMTRAIN_KAFKA_USERNAME"] == user
        config = {"bootstrap.servers": scram_stack.bootstrap, **scram_stack.client_security(user)}
        table = grants(program, topics)
        may_write = {g.name for g in table if g.resource == "topic" and "Write" in g.operations}
        may_read = {g.name for g in table if g.resource == "topic" and "Read" in g.operations}
        wrote = {t for t in all_topics if _can_write(config, t)}
        # Probe with a consumer group the program holds (an assign-only reader still looks its group up).
        group = next((g.name for g in table if g.resource == "group"), READER_GROUP)
        read = {t for t in all_topics if _can_read(config, t, f"{group}.acl-probe")}
        seen[program] = (sorted(wrote), sorted(read))
        assert wrote == may_write, (program, wrote, may_write)
        assert read == may_read, (program, read, may_read)
    print(json.dumps(seen, indent=1))
    # Spelled out for the ones that matter most.
    assert seen["bridge"] == (sorted([topics.topic_raw, topics.topic_deadletter]), [])
    assert topics.topic_raw not in seen["score"][0] and topics.topic_models not in seen["score"][0]
    assert seen["evaluate"][0] == [] and topics.topic_raw not in seen["evaluate"][1]


@pytest.mark.faults  # 2-3 minutes: in `make test-faults` (run by .ci/run), not the default suite
def test_pipeline_runs_with_every_program_as_its_own_kafka_user(scram_stack, tmp_path):
    """The demo on the SCRAM stack: bridge, preprocessor (transactions, its group), trainer and scorer
    (transactions, model watcher) each run as a user of their own, and still nothing is lost or doubled."""
    run = f"a{uuid.uuid4().hex[:6]}"
    st = scram_stack.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTRAIN_KAFKA_")}
    env.update(
        {
            "STREAMTRAIN_HOME": str(st.home),
            "STREAMTRAIN_JARS": str(st.jars),
            "STREAMTRAIN_KAFKA_PORT": str(st.kafka_port),
            "STREAMTRAIN_KAFKA_CONTROLLER_PORT": str(st.kafka_controller_port),
            "STREAMTRAIN_MQTT_PORT": str(st.mqtt_port),
        }
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamtrain.cli.main",
            "--log-format",
            "console",
            "demo",
            "--kafka-auth",
            "scram",
            "--run-id",
            run,
            "--keep-stack",
            "--devices",
            "10",
            "--rate",
            "10",
            "--v1-records",
            "1500",
            "--v2-records",
            "1000",
            "--epochs",
            "3",
            "--report",
            str(tmp_path / "report"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "a Kafka user per program" in proc.stdout
    for program in ("bridge", "preprocess", "train", "score"):
        assert scram_stack.password_file(f"demo-{run}-{program}").exists()
    admin = scram_stack.client_security(ADMIN)
    prefix = f"streamtrain.demo-{run}"
    features = read_topic(scram_stack.bootstrap, f"{prefix}.features", timeout=60, **admin)
    scores = [json.loads(m.value()) for m in read_topic(scram_stack.bootstrap, f"{prefix}.scores", timeout=60, **admin)]
    ev = evaluate(scores)
    print(proc.stdout[-1500:])
    assert ev.duplicates == 0
    assert ev.overall.records == len(features) > 0, "every feature record scored exactly once"
    assert {1, 2} <= set(ev.by_version)


def test_kafka_streams_scorer_runs_as_its_own_kafka_user(scram_stack, topics, tmp_path, monkeypatch):
    """The JVM scorer reads the same STREAMTRAIN_KAFKA_* variables: over SASL/SCRAM + TLS, holding only the
    score-streams ACLs (its application id is its group and transactional-id prefix), it scores every record."""
    from streamtrain import exitcodes
    from tests.cli.test_models_e2e import models
    from tests.programs import Program, settings_env
    from tests.score.test_scorer_e2e import FeatureStream, train_process, wait_scores

    def run_as(env: dict) -> None:
        for k in [k for k in os.environ if k.startswith("STREAMTRAIN_KAFKA_")]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)

    run_as(scram_stack.client_env(ADMIN))
    stream = FeatureStream(topics, seed=5)
    stream.send(100)
    run_as(scram_stack.kafka_user(f"train-{uuid.uuid4().hex[:4]}", "train", topics=topics))
    train_process(topics, tmp_path, "train-v1", records=2000)  # as the trainer's Kafka user: a process
    # spec.scorer.pinnedVersion's Job runs `streamtrain models pin` as the trainer's user: it may write the pin.
    pinned = models(topics, "pin", "1")
    assert pinned.returncode == 0, pinned.stderr
    group = f"streams-{uuid.uuid4().hex[:6]}"
    run_as(scram_stack.kafka_user(f"streams-{uuid.uuid4().hex[:4]}", "score-streams", group=group, topics=topics))
    refused = models(topics, "pin", "1")  # a scorer's user reads the models topic, never writes it
    assert refused.returncode == exitcodes.KAFKA and "Topic authorization failed" in refused.stderr, refused.stderr
    java = Program(
        ["score", "--engine", "kafka-streams"],
        settings_env(topics, group_id=group, instance_id="auth"),
        tmp_path / "streams-scorer.log",
    ).start()
    try:
        run_as(scram_stack.client_env(ADMIN))
        scores = wait_scores(topics, set(stream.sent))
    finally:
        rc = java.stop()
    assert rc == 0, java.log()[-3000:]
    keys = [(s["device_id"], s["seq"]) for s in scores]
    assert len(keys) == len(set(keys)) == len(stream.sent), "every record scored exactly once"
    assert {s["scorer"] for s in scores} == {"kafka-streams"} and {s["model_version"] for s in scores} == {1}
