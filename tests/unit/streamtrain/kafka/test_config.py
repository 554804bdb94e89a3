"""Kafka client properties from the command line (``-X key=value``, as kcat and librdkafka spell it) and
librdkafka's own lines: checked before anything runs (exit 2 naming the property), carried to every
client of the command and of the programs it starts, and logged as structured lines, never raw
``%3|…|FAIL|…`` text. No broker: the clients point at a closed port."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from streamtrain import exitcodes
from streamtrain.cli.main import hoist_global_options
from streamtrain.kafka.config import client_config, consumer_config, producer_config
from tests.programs import STREAMTRAIN

CLOSED = "127.0.0.1:1"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTRAIN_")}
    return subprocess.run([*STREAMTRAIN, *args], env={**base, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("sasl.password=hunter2", "a secret"),
        ("ssl.key.pem=-----BEGIN", "a secret"),
        ("enable.idempotence=false", "set by the program"),
        ("isolation.level=read_uncommitted", "set by the program"),
        ("bootstrap.servers=elsewhere:9092", "--kafka-bootstrap"),
        ("security.protocol=SSL", "STREAMTRAIN_KAFKA_SECURITY_PROTOCOL"),
        ("no.such.property=1", 'No such configuration property: "no.such.property"'),
        ("socket.timeout.ms=soon", 'Invalid value for configuration property "socket.timeout.ms"'),
        ("client.id", "expected key=value"),
    ],
)
def test_a_refused_property_exits_2_naming_it_before_anything_runs(given, says):
    done = _run("evaluate", "--kafka-bootstrap", CLOSED, "-X", given)
    assert done.returncode == exitcodes.CONFIG, done.stderr
    assert "Invalid value for '-X' / '--kafka-property'" in done.stderr and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr + done.stdout  # a refused secret is not echoed back


def test_x_may_follow_the_subcommand_and_repeat():
    assert hoist_global_options(["evaluate", "-X", "a=1", "--json", "--kafka-property=b=2"]) == [
        "-X",
        "a=1",
        "--kafka-property=b=2",
        "evaluate",
        "--json",
    ]


def test_properties_reach_every_client_over_the_programs_defaults(monkeypatch):
    monkeypatch.setenv("STREAMTRAIN_KAFKA_PROPERTIES", json.dumps({"linger.ms": "50", "client.rack": "r1"}))
    assert client_config(CLOSED)["client.rack"] == "r1"
    assert producer_config(CLOSED)["linger.ms"] == "50"  # the producer's own default is 5
    assert producer_config(CLOSED)["enable.idempotence"] is True
    assert consumer_config(CLOSED, "g")["client.rack"] == "r1"
    monkeypatch.setenv("STREAMTRAIN_KAFKA_PROPERTIES", json.dumps({"transactional.id": "mine"}))
    with pytest.raises(SystemExit) as exit_:  # set around -X, in a Pod's environment: refused the same way
        client_config(CLOSED)
    assert exit_.value.code == exitcodes.CONFIG


def test_a_property_given_with_x_drives_the_real_client_and_its_lines_are_structured():
    """``debug=metadata`` makes librdkafka itself write debug lines: they appear, so the property reached the
    real client; each is a JSON log line of this program, and no raw librdkafka line is printed."""
    done = _run(
        "--log-level", "debug", "--log-format", "json", "evaluate", "--kafka-bootstrap", CLOSED, "-X", "debug=metadata"
    )
    assert done.returncode == exitcodes.KAFKA, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert not [line for line in lines if line.startswith("%")], lines[:5]
    assert "Traceback" not in done.stderr
    events = [json.loads(line) for line in lines if line.startswith("{")]
    client_lines = [e for e in events if e.get("event") == "kafka_client"]
    assert {e["facility"] for e in client_lines} & {"METADATA", "METADATAREQ", "METADATA_REQ"}, client_lines[:5]
    assert any(e["level"] == "error" and e["facility"] == "FAIL" for e in client_lines), client_lines[:5]
    assert f"error: cannot read streamtrain.scores from Kafka at {CLOSED}" in done.stderr
