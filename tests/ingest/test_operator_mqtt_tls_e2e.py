"""The Kubernetes broker's TLS on the real HiveMQ (issue 24, item 5): the operator's generated Secret
material (``streamtrain.operator.mqtt_tls``) and the config.xml the operator renders into the broker's
ConfigMap, keystore password as HiveMQ's ``${ENV:...}`` placeholder, run by the real broker with the
password in its environment as the Pod gets it from the Secret. The real simulator and bridge, given the
Secret's CA and the environment the operator renders for them, connect to the broker Service's name (a
stand-in for the cluster's DNS resolves it to 127.0.0.1, tests/ingest/cluster_dns), check its certificate
and name, and every reading reaches Kafka. Without the CA, or under a name not in the certificate: no
session."""

from __future__ import annotations

import socket
import ssl
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from streamtrain.operator import mqtt_tls, validate
from streamtrain.operator.render import hivemq as render_hivemq
from streamtrain.operator.render import mqtt_tls as render_tls
from streamtrain.operator.render import programs
from streamtrain.operator.render.connections import mqtt_container_port
from streamtrain.settings import CommonSettings
from streamtrain.stack import hivemq
from streamtrain.stack.local import LocalStack
from streamtrain.stack.processes import java, spawn
from tests.conftest import another_hivemq
from tests.programs import Program, settings_env, simulated_readings

pytestmark = pytest.mark.e2e

NAME, NAMESPACE = "plant", "factory"
SERVICE = f"{NAME}-hivemq.{NAMESPACE}.svc"
CLUSTER_DNS = Path(__file__).parent / "cluster_dns"


def _spec() -> dict:
    resource = {
        "apiVersion": "streamtrain.io/v1alpha1",
        "kind": "StreamingTraining",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {},
    }
    return validate.defaulted(resource)["spec"]


class OperatorTlsStack(LocalStack):
    """The local HiveMQ launcher running what the operator gives the Kubernetes broker: its config.xml (port,
    bind address and the keystore's folder moved to this machine's) and its Secret's keystore, with the
    password only in the broker's environment."""

    material: dict[str, bytes] = {}
    ca: Path

    def start_hivemq(self) -> None:
        secrets = self.home / "hivemq" / "operator-secret"
        secrets.mkdir(parents=True, exist_ok=True)
        keystore = secrets / render_tls.KEYSTORE
        keystore.write_bytes(self.material[render_tls.KEYSTORE])
        # The launcher with a plain config first, then the operator's text in its place.
        cmd = hivemq.command(
            java(), self.hivemq_lib(), self.home / "hivemq", self.settings.mqtt_port, None, self.settings.bind_host
        )
        spec = _spec()
        rendered = render_hivemq.hivemq_config(NAME, NAMESPACE, spec)["data"][render_hivemq.CONFIG_KEY]
        assert render_tls.PASSWORD_PLACEHOLDER in rendered
        local = (
            rendered.replace(f"<port>{mqtt_container_port(spec)}</port>", f"<port>{self.settings.mqtt_port}</port>")
            .replace("<bind-address>0.0.0.0</bind-address>", f"<bind-address>{self.settings.bind_host}</bind-address>")
            .replace(render_tls.KEYSTORE_MOUNT, str(secrets))
        )
        (self.home / "hivemq" / "conf" / "config.xml").write_text(local)
        password = self.material[render_tls.PASSWORD].decode()
        spawn(self.hivemq, cmd, env={render_tls.PASSWORD_ENV: password}, cwd=self.home)

    def hivemq_ready(self) -> bool:
        return _session(self.settings.mqtt_port, self.ca, SERVICE)


def _context(ca: Path | None, server_name: str) -> ssl.SSLContext:
    """A client context that checks the broker's certificate against ``server_name``, wherever it connects."""

    class ServiceName(ssl.SSLContext):
        def wrap_socket(self, sock, *args, **kwargs):
            kwargs["server_hostname"] = server_name
            return super().wrap_socket(sock, *args, **kwargs)

    ctx = ServiceName(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    else:
        ctx.load_default_certs()
    return ctx


def _session(port: int, ca: Path | None, server_name: str) -> bool:
    """Whether a client checking the certificate against ``server_name`` gets a CONNACK."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tls-probe-{uuid.uuid4().hex[:6]}")
    client.tls_set_context(_context(ca, server_name))
    answered: list = []
    client.on_connect = lambda c, u, flags, reason, props: answered.append(reason)
    try:
        client.connect("127.0.0.1", port, keepalive=5)
        for _ in range(30):
            client.loop(0.1)
            if answered:
                break
        client.disconnect()
    except (OSError, ssl.SSLError):
        return False
    return bool(answered) and not answered[0].is_failure


@pytest.fixture(scope="module")
def operator_broker(local_stack, tmp_path_factory):
    home = tmp_path_factory.mktemp("operator-mqtt-tls")
    material = mqtt_tls.new_material(NAME, NAMESPACE)
    ca = home / render_tls.CA
    ca.write_bytes(material[render_tls.CA])

    class Stack(OperatorTlsStack):
        pass

    Stack.material, Stack.ca = material, ca
    with another_hivemq(local_stack, home, stack_class=Stack) as stack:
        yield stack, ca, material


def test_the_broker_reads_its_password_from_the_environment_only(operator_broker):
    stack, _, material = operator_broker
    text = (stack.home / "hivemq" / "conf" / "config.xml").read_text()
    assert "<tls-tcp-listener>" in text and "<tcp-listener>" not in text
    assert render_tls.PASSWORD_PLACEHOLDER in text and material[render_tls.PASSWORD].decode() not in text
    log = stack.hivemq.log_file.read_text(errors="replace")
    assert material[render_tls.PASSWORD].decode() not in log


def test_simulator_and_bridge_given_the_operators_environment_move_every_reading(
    operator_broker, local_stack, tmp_path
):
    stack, ca, _ = operator_broker
    port = stack.settings.mqtt_port
    spec = _spec()
    tag = uuid.uuid4().hex[:8]
    s = CommonSettings(
        kafka_bootstrap=local_stack.bootstrap,
        mqtt_host=SERVICE,
        mqtt_port=port,
        topic_raw=stack.settings.topic_raw,
        topic_deadletter=stack.settings.topic_deadletter,
    )
    dns = {"PYTHONPATH": str(CLUSTER_DNS), "STREAMTRAIN_TEST_HOSTS": f"{SERVICE}=127.0.0.1"}
    # The CA variable exactly as the operator renders it for both programs, the file at this machine's path.
    for program in ("simulate", "bridge"):
        (rendered,) = [e for e in programs.env(program, NAME, spec) if e["name"] == render_tls.ca_file_variable()]
        assert rendered["value"] == f"{render_tls.CA_MOUNT}/{render_tls.CA}"
    ca_env = {render_tls.ca_file_variable(): str(ca), **dns}
    bridge = Program(
        ["bridge"],
        {**settings_env(s, client_id=f"optls-{tag}", share_group=f"optls-{tag}"), **ca_env},
        tmp_path / "bridge.log",
    ).start()
    try:
        bridge.wait_log('"mqtt_subscribed"', timeout=60)
        simulated_readings(s, tmp_path, {**settings_env(s), **ca_env}, devices=10, count=20)
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]


def test_every_service_name_is_trusted_and_nothing_else(operator_broker):
    stack, ca, _ = operator_broker
    port = stack.settings.mqtt_port
    for name in render_tls.service_hosts(NAME, NAMESPACE):
        assert _session(port, ca, name), name
    assert not _session(port, ca, "127.0.0.1")  # the address is no name of the certificate
    assert not _session(port, ca, f"{NAME}-hivemq.other.svc")  # nor is another namespace's Service
    assert not _session(port, None, SERVICE)  # the system's CAs do not know the operator's
    assert hivemq.ready(port) is False  # plain MQTT on the TLS listener: no CONNACK
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with pytest.raises(ssl.SSLCertVerificationError):
            _context(None, SERVICE).wrap_socket(sock)
