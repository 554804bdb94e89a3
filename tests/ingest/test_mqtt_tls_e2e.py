"""MQTT over TLS on the real HiveMQ: `stack up --mqtt-tls` makes a certificate and a TLS-only listener, and
the real simulator and bridge programs, given the stack's CA (STREAMTRAIN_MQTT_CA_FILE), move every reading
into Kafka through it; a client that speaks plain MQTT, or TLS without that CA, gets no session."""

from __future__ import annotations

import ssl
import uuid

import paho.mqtt.client as mqtt
import pytest

from streamtrain.settings import CommonSettings, StackSettings
from streamtrain.stack import hivemq
from streamtrain.stack.local import LocalStack, free_port
from tests.conftest import another_hivemq
from tests.programs import Program, settings_env, simulated_readings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_stack(local_stack, tmp_path_factory):
    """A HiveMQ with a TLS-only listener beside the session's Kafka."""
    with another_hivemq(local_stack, tmp_path_factory.mktemp("mqtt-tls"), mqtt_tls=True) as stack:
        yield stack


def test_simulator_and_bridge_move_every_reading_over_tls(tls_stack, local_stack, tmp_path):
    ca = tls_stack.mqtt_ca_file
    assert ca is not None and ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    status = tls_stack.status()["hivemq"]
    assert status["ready"] and status["tls"] == {"STREAMTRAIN_MQTT_CA_FILE": str(ca)}
    # A stack opened without the flag (`stack status`) finds the TLS broker and probes it over TLS.
    assert LocalStack(tls_stack.settings.model_copy(update={"mqtt_tls": False})).hivemq_ready() is False
    assert LocalStack(StackSettings(home=tls_stack.home, mqtt_port=tls_stack.settings.mqtt_port)).hivemq_ready()

    tag = uuid.uuid4().hex[:8]
    s = CommonSettings(
        kafka_bootstrap=local_stack.bootstrap,
        mqtt_port=tls_stack.settings.mqtt_port,
        topic_raw=tls_stack.settings.topic_raw,
        topic_deadletter=tls_stack.settings.topic_deadletter,
    )
    env = {"mqtt_ca_file": str(ca)}
    bridge = Program(
        ["bridge"], settings_env(s, client_id=f"tls-{tag}", share_group=f"tls-{tag}", **env), tmp_path / "bridge.log"
    ).start()
    try:
        bridge.wait_log('"mqtt_subscribed"', timeout=60)
        simulated_readings(s, tmp_path, settings_env(s, **env), devices=20, count=25)
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]


def test_plain_clients_and_clients_without_the_ca_get_no_session(tls_stack):
    port = tls_stack.settings.mqtt_port
    assert hivemq.ready(port) is False  # plain MQTT on the TLS listener: no CONNACK
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"untrusting-{uuid.uuid4().hex[:6]}")
    client.tls_set()  # the system's CAs only: the broker's self-signed certificate is not among them
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("127.0.0.1", port)
    assert hivemq.ready(port, ca_file=tls_stack.mqtt_ca_file) is True


def test_a_program_given_a_missing_ca_file_stops_with_a_config_error(tmp_path):
    missing = tmp_path / "nope.pem"
    prog = Program(
        ["bridge"],
        settings_env(CommonSettings(mqtt_port=free_port()), mqtt_ca_file=str(missing)),
        tmp_path / "bridge.log",
    ).start()
    assert prog.proc.wait(timeout=60) == 2, prog.log()[-3000:]
    assert f"MQTT CA file {missing} does not exist" in prog.log()
