"""The Kubernetes broker's default authentication on the real HiveMQ launcher (issue 24, item 5): the
operator's generated identities (``streamtrain.operator.mqtt_users``: the users file, the bridge's user
and password, the simulated fleet's device lines) with its TLS material and rendered config.xml, both on by
default. The real simulator and bridge, given the Secret's keys as files and the environment the operator
renders for them, move every reading of the simulated fleet into Kafka over the broker Service's name. A
wrong password or an unknown user gets no session; a device publishing to another device's topic is
refused."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from streamtrain import credentials
from streamtrain.operator import mqtt_tls, mqtt_users, validate
from streamtrain.operator.render import connections, programs
from streamtrain.operator.render import hivemq as render_hivemq
from streamtrain.operator.render import mqtt_tls as render_tls
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
DEVICES = 10


def _spec() -> dict:
    resource = {
        "apiVersion": "streamtrain.io/v1alpha1",
        "kind": "StreamingTraining",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {"fleet": {"devices": DEVICES}},
    }
    spec = validate.defaulted(resource)["spec"]
    assert connections.mqtt_users_operator_made(spec) and render_tls.operator_made(spec)  # both by default
    return spec


class OperatorAuthStack(LocalStack):
    """The local HiveMQ launcher running what the operator gives the Kubernetes broker: its config.xml
    (port, bind address and keystore folder moved to this machine's), its TLS Secret's keystore with the
    password only in the environment, and its credentials Secret's users file as the launcher's argument."""

    tls: dict[str, bytes] = {}
    users: dict[str, str] = {}
    ca: Path

    def start_hivemq(self) -> None:
        secrets = self.home / "hivemq" / "operator-secret"
        secrets.mkdir(parents=True, exist_ok=True)
        (secrets / render_tls.KEYSTORE).write_bytes(self.tls[render_tls.KEYSTORE])
        users = secrets / connections.USERS_KEY
        users.write_text(self.users[connections.USERS_KEY])
        cmd = hivemq.command(
            java(), self.hivemq_lib(), self.home / "hivemq", self.settings.mqtt_port, users, self.settings.bind_host
        )
        spec = _spec()
        rendered = render_hivemq.hivemq_config(NAME, NAMESPACE, spec)["data"][render_hivemq.CONFIG_KEY]
        local = (
            rendered.replace(
                f"<port>{connections.mqtt_container_port(spec)}</port>", f"<port>{self.settings.mqtt_port}</port>"
            )
            .replace("<bind-address>0.0.0.0</bind-address>", f"<bind-address>{self.settings.bind_host}</bind-address>")
            .replace(render_tls.KEYSTORE_MOUNT, str(secrets))
        )
        (self.home / "hivemq" / "conf" / "config.xml").write_text(local)
        spawn(self.hivemq, cmd, env={render_tls.PASSWORD_ENV: self.tls[render_tls.PASSWORD].decode()}, cwd=self.home)

    def hivemq_ready(self) -> bool:
        bridge = self.users[connections.BRIDGE_USERNAME_KEY], self.users[connections.BRIDGE_PASSWORD_KEY]
        client = Client(self.settings.mqtt_port, self.ca, *bridge, wait=False)
        try:
            return client.wait_connack(5) and not client.connack.is_failure
        finally:
            client.close()


class ServiceName(ssl.SSLContext):
    """Checks the broker's certificate against the Service's name, wherever the client connects."""

    def wrap_socket(self, sock, *args, **kwargs):
        kwargs["server_hostname"] = SERVICE
        return super().wrap_socket(sock, *args, **kwargs)


class Client:
    """A paho MQTT 5 client over TLS (checking the Service's name against the operator's CA) that records
    CONNACK and PUBACK reason codes."""

    def __init__(self, port: int, ca: Path, user: str, password: str, wait: bool = True) -> None:
        ctx = ServiceName(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(ca))
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        self.client.tls_set_context(ctx)
        self.client.username_pw_set(user, password)
        self.connack: Any = None  # paho's ReasonCode once the broker answers
        self.pubacks: dict[int, object] = {}
        self.client.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc)
        self.client.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        try:
            self.client.connect("127.0.0.1", port, keepalive=10)
        except (OSError, ssl.SSLError):
            return
        self.client.loop_start()
        if wait:
            assert self.wait_connack(30), "no CONNACK"

    def wait_connack(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.connack is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.connack is not None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def operator_broker(local_stack, tmp_path_factory):
    home = tmp_path_factory.mktemp("operator-mqtt-users")
    tls = mqtt_tls.new_material(NAME, NAMESPACE)
    users = mqtt_users.new_material(_spec())
    ca = home / render_tls.CA
    ca.write_bytes(tls[render_tls.CA])

    class Stack(OperatorAuthStack):
        pass

    Stack.tls, Stack.users, Stack.ca = tls, users, ca
    with another_hivemq(local_stack, home, stack_class=Stack) as stack:
        yield stack, ca, users


def _rendered(program: str, variable: str) -> str:
    (e,) = [e for e in programs.env(program, NAME, _spec()) if e["name"] == variable]
    return e.get("value") or json.dumps(e["valueFrom"])


def test_the_simulated_fleet_and_the_bridge_with_the_operators_identities_move_every_reading(
    operator_broker, local_stack, tmp_path
):
    stack, ca, users = operator_broker
    s = CommonSettings(
        kafka_bootstrap=local_stack.bootstrap,
        mqtt_host=SERVICE,
        mqtt_port=stack.settings.mqtt_port,
        topic_raw=stack.settings.topic_raw,
        topic_deadletter=stack.settings.topic_deadletter,
    )
    # The variables exactly as the operator renders them, the Secret's keys at this machine's paths.
    secret = connections.mqtt_users_generated_name(NAME)
    assert _rendered("bridge", "STREAMTRAIN_MQTT_PASSWORD_FILE") == f"{connections.MQTT_PASSWORD_MOUNT}/password"
    assert json.loads(_rendered("bridge", "STREAMTRAIN_MQTT_USERNAME")) == {
        "secretKeyRef": {"name": secret, "key": connections.BRIDGE_USERNAME_KEY}
    }
    assert _rendered("simulate", "STREAMTRAIN_CREDENTIALS_FILE") == f"{connections.MQTT_DEVICES_MOUNT}/credentials"
    password = tmp_path / "password"
    password.write_text(users[connections.BRIDGE_PASSWORD_KEY])
    devices = tmp_path / "credentials"
    devices.write_text(users[connections.DEVICES_KEY])
    devices.chmod(0o600)
    common = {
        render_tls.ca_file_variable(): str(ca),
        "PYTHONPATH": str(CLUSTER_DNS),
        "STREAMTRAIN_TEST_HOSTS": f"{SERVICE}=127.0.0.1",
    }
    tag = uuid.uuid4().hex[:8]
    bridge_env = settings_env(
        s,
        client_id=f"opusers-{tag}",
        share_group=f"opusers-{tag}",
        mqtt_username=users[connections.BRIDGE_USERNAME_KEY],
        mqtt_password_file=password,
    )
    bridge = Program(["bridge"], {**bridge_env, **common}, tmp_path / "bridge.log").start()
    try:
        bridge.wait_log('"mqtt_subscribed"', timeout=60)
        env = {**settings_env(s), **common, "STREAMTRAIN_CREDENTIALS_FILE": str(devices)}
        readings = simulated_readings(s, tmp_path, env, devices=DEVICES, count=20)
        assert {d for d, _ in readings} == set(credentials.fleet_ids(DEVICES))
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]
    for log in (
        bridge.log(),
        (tmp_path / "simulate.log").read_text(),
        stack.hivemq.log_file.read_text(errors="replace"),
    ):
        assert users[connections.BRIDGE_PASSWORD_KEY] not in log


def test_wrong_passwords_unknown_users_and_foreign_topics_are_refused(operator_broker, tmp_path):
    stack, ca, users = operator_broker
    port = stack.settings.mqtt_port
    (tmp_path / "devices").write_text(users[connections.DEVICES_KEY])
    devices = credentials.read_device_passwords(tmp_path / "devices")
    first, second = list(devices)[:2]
    for user, password in (
        (first, "not-" + devices[first]),
        (first, devices[second]),  # another device's password
        ("dev-99999", "whatever"),  # unknown user
        (users[connections.BRIDGE_USERNAME_KEY], "guess"),
    ):
        refused = Client(port, ca, user, password)
        assert refused.connack.is_failure and refused.connack.getName() == "Bad user name or password", user
        refused.close()
    device = Client(port, ca, first, devices[first])
    try:
        assert not device.connack.is_failure
        body = json.dumps({"device_id": second, "ts": time.time(), "seq": 1, "temperature": 20.0}).encode()
        mid = device.client.publish(f"devices/{second}/telemetry", body, qos=1).mid
        deadline = time.monotonic() + 30
        while mid not in device.pubacks and time.monotonic() < deadline:
            time.sleep(0.02)
        assert device.pubacks[mid].getName() == "Not authorized"
    finally:
        device.close()
