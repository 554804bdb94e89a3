"""MQTT authentication and authorization on a real HiveMQ with the embedded auth extension:
per-device credentials, devices publish only to their own topic, the bridge has its own identity.
Its own HiveMQ on free ports (users file given at start), the session's Kafka."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import paho.mqtt.client as mqtt
import pytest

from streamtrain.kafka import read_topic
from streamtrain.settings import StackSettings
from streamtrain.stack.local import LocalStack, free_port
from tests.conftest import REPO
from tests.programs import Program, settings_env

pytestmark = pytest.mark.e2e

PASSWORDS = {"dev-a": "alpha-secret", "dev-b": "bravo-secret", "bridge-1": "bridge-secret"}
FLEET = 20  # simulated devices with their own credentials (stack passwd-fleet)


@pytest.fixture(scope="module")
def auth_broker(local_stack, tmp_path_factory):
    home = tmp_path_factory.mktemp("auth-hivemq")
    users = home / "mqtt-users"
    for user, password in PASSWORDS.items():
        role = "bridge" if user.startswith("bridge") else "device"
        # Through the CLI, as an operator would (password on stdin, never on the command line).
        subprocess.run(
            [
                sys.executable,
                "-m",
                "streamtrain.cli.main",
                "stack",
                "passwd",
                user,
                "--role",
                role,
                "--file",
                str(users),
                "--password-stdin",
            ],
            input=password + "\n",
            text=True,
            check=True,
        )
    # A simulated fleet's identities in one go, as an operator would.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "streamtrain.cli.main",
            "stack",
            "passwd-fleet",
            "--devices",
            str(FLEET),
            "--prefix",
            "fleet",
            "--out",
            str(home / "fleet-creds"),
            "--file",
            str(users),
        ],
        check=True,
    )
    assert "secret" not in users.read_text()
    stack = LocalStack(
        StackSettings(
            home=home,
            jars=REPO / ".streamtrain" / "lib",
            mqtt_port=free_port(),
            kafka_port=local_stack.settings.kafka_port,
            mqtt_users_file=users,
        )
    )
    stack.start_hivemq()
    stack._wait(stack.hivemq, stack.hivemq_ready, 120)
    yield stack
    stack.stop_service(stack.hivemq)


class Device:
    """A paho MQTT 5 client that records CONNACK, PUBACK and SUBACK reason codes."""

    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.connack = None
        self.pubacks: dict[int, object] = {}
        self.subacks: list = []
        self.client.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc)
        self.client.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.extend(rcs)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None, "CONNACK")

    def publish(self, topic: str, body: dict) -> int:
        return self.client.publish(topic, json.dumps(body).encode(), qos=1).mid

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.02)


def reading(device: str, seq: int) -> dict:
    return {"device_id": device, "ts": time.time(), "seq": seq, "temperature": 20.0 + seq}


def test_devices_and_bridge_authenticate_and_devices_publish_only_to_their_own_topic(pipeline, auth_broker, tmp_path):
    port = auth_broker.settings.mqtt_port
    log_path = auth_broker.hivemq.log_file
    group = f"auth-{uuid.uuid4().hex[:6]}"
    password_file = tmp_path / "bridge-password"
    password_file.write_text(PASSWORDS["bridge-1"] + "\n")
    metrics_port = free_port()
    env = settings_env(
        pipeline,
        mqtt_port=port,
        client_id=group,
        share_group=group,
        metrics_port=metrics_port,
        mqtt_username="bridge-1",
        mqtt_password_file=password_file,
    )
    bridge = Program(["bridge"], env, tmp_path / "bridge.log").start()
    wrong = None
    try:
        bridge.wait_log('"mqtt_subscribed"', timeout=60)

        # A bridge with a wrong password is refused, logs it and is not ready.
        intruder_port = free_port()
        wrong = Program(
            ["bridge"],
            settings_env(
                pipeline,
                mqtt_port=port,
                client_id=f"{group}-x",
                share_group=group,
                metrics_port=intruder_port,
                mqtt_username="bridge-1",
                mqtt_password="guess",
            ),
            tmp_path / "intruder-bridge.log",
        ).start()
        wrong.wait_log('"mqtt_refused"', timeout=60)

        good = Device(port, "dev-a", PASSWORDS["dev-a"])
        assert not good.connack.is_failure
        mids = [good.publish("devices/dev-a/telemetry", reading("dev-a", i)) for i in range(20)]
        wait_for(lambda: all(m in good.pubacks for m in mids), "PUBACKs")
        assert all(not good.pubacks[m].is_failure for m in mids)
        # Publishing to another device's topic: PUBACK "Not authorized", never forwarded (and HiveMQ then
        # disconnects the device, which reconnects; one at a time so no retransmission blurs the count).
        for i in range(3):
            mid = good.publish("devices/dev-b/telemetry", reading("dev-b", 1000 + i))
            wait_for(lambda: mid in good.pubacks, "PUBACK of a spoofed message")
            assert good.pubacks[mid].getName() == "Not authorized"
        wait_for(lambda: good.client.is_connected(), "device reconnect")

        # Devices may not read other devices' telemetry. A SUBSCRIBE sent while HiveMQ is still closing the
        # connection of the last refused publish is lost with it: ask again on the new connection.
        def suback() -> bool:
            if not good.subacks and good.client.is_connected():
                good.client.subscribe("devices/+/telemetry", qos=1)
                time.sleep(2)
            return bool(good.subacks)

        wait_for(suback, "SUBACK")
        assert good.subacks and all(code.is_failure for code in good.subacks)

        wrong_password = Device(port, "dev-b", "not-bravo")
        unknown = Device(port, "dev-zz", "whatever")
        anonymous = Device(port, None, None)
        for refused in (wrong_password, unknown, anonymous):
            assert refused.connack.is_failure and refused.connack.getName() == "Bad user name or password"
            refused.close()

        msgs = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 20, timeout=60)
        assert sorted(json.loads(m.value())["seq"] for m in msgs) == list(range(20))
        assert all(m.key() == b"dev-a" for m in msgs)
        time.sleep(1)  # give any wrongly forwarded message the chance to show up
        after = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=10) + read_topic(
            pipeline.kafka_bootstrap, pipeline.topic_deadletter, timeout=10
        )
        assert not [m for m in after if b"dev-b" in (m.value() or b"")]

        broker_log = log_path.read_text()
        refused_connects = [json.loads(line) for line in broker_log.splitlines() if '"mqtt_auth_refused"' in line]
        refused_publishes = [json.loads(line) for line in broker_log.splitlines() if '"mqtt_publish_refused"' in line]
        print(f"refused connects={len(refused_connects)} publishes={len(refused_publishes)}")
        assert {r["reason"] for r in refused_connects} >= {"wrong password", "unknown user", "no credentials"}
        assert any(r["username"] == "bridge-1" for r in refused_connects)  # the intruding bridge
        assert int(refused_connects[-1]["refused_connects_total"]) == len(refused_connects)
        assert len(refused_publishes) == 3 and refused_publishes[-1]["refused_publishes_total"] == "3"
        assert all(r["username"] == "dev-a" and r["topic"] == "devices/dev-b/telemetry" for r in refused_publishes)
        assert '"mqtt_subscribe_refused"' in broker_log

        assert urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{intruder_port}/readyz", timeout=5)
        assert info.value.code == 503
        good.close()
        assert wrong.stop() == 0
        assert bridge.stop() == 0
    finally:
        for prog in (bridge, wrong):
            if prog is not None and prog.proc.poll() is None:
                prog.kill()


# ------------------------------------------------ the simulator, each device as itself
def start_bridge(pipeline, port: int, tmp_path) -> Program:
    """A bridge with its own identity (bridge-1), subscribed."""
    group = f"auth-{uuid.uuid4().hex[:6]}"
    password_file = tmp_path / "bridge-password"
    password_file.write_text(PASSWORDS["bridge-1"] + "\n")
    env = settings_env(
        pipeline,
        mqtt_port=port,
        client_id=group,
        share_group=group,
        metrics_port=free_port(),
        mqtt_username="bridge-1",
        mqtt_password_file=password_file,
    )
    bridge = Program(["bridge"], env, tmp_path / "bridge.log").start()
    bridge.wait_log('"mqtt_subscribed"', timeout=60)
    return bridge


def simulate(pipeline, port: int, *args: str) -> tuple[int, dict, str]:
    """`streamtrain simulate ARGS` against ``port``: exit code, JSON report, stderr (with the JSON log)."""
    env = settings_env(pipeline, mqtt_port=port)
    done = subprocess.run(
        [sys.executable, "-m", "streamtrain.cli.main", "simulate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    return done.returncode, report, done.stderr


def connect_seconds(stderr: str) -> float:
    line = next(json.loads(x) for x in stderr.splitlines() if '"simulator_devices_connected"' in x)
    return line["seconds"]


def arrived(pipeline, expected: int) -> list[tuple[str, int]]:
    msgs = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= expected, timeout=60)
    time.sleep(1)  # anything beyond the expected shows up too
    msgs += read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=5)[len(msgs) :]
    pairs = []
    for m in msgs:
        body = json.loads(m.value())
        assert m.key().decode() == body["device_id"]
        pairs.append((body["device_id"], body["seq"]))
    return pairs


def test_simulated_fleet_and_csv_replay_publish_each_device_as_itself(pipeline, auth_broker, tmp_path):
    port = auth_broker.settings.mqtt_port
    creds = auth_broker.settings.home / "fleet-creds"
    passwords = dict(line.split(":", 1) for line in creds.read_text().splitlines())
    ids = list(passwords)
    assert len(ids) == FLEET and (creds.stat().st_mode & 0o777) == 0o600
    bridge = start_bridge(pipeline, port, tmp_path)
    try:
        # Without credentials the authenticating broker lets nothing in: the gap this closes.
        code, _, err = simulate(pipeline, port, "--devices", "3", "--count", "1")
        assert code == 2 and "refused the connection: Bad user name or password" in err

        # The fleet: the file's first FLEET - 3 devices, 10 readings each, flat out.
        fleet = ids[: FLEET - 3]
        code, report, err = simulate(
            pipeline, port, "--credentials", str(creds), "--devices", str(len(fleet)), "--count", "10", "--rate", "0"
        )
        assert code == 0, err[-3000:]
        assert report["devices"] == len(fleet) and report["refused"] == {}
        assert report["published"] == report["acked"] == 10 * len(fleet) and report["unacked_at_exit"] == 0
        print(f"{len(fleet)} authenticated devices connected in {connect_seconds(err)}s")

        # CSV replay of the other three devices, one connection each, ids from the device column.
        csv = tmp_path / "replay.csv"
        csv.write_text(
            "timestamp,device,temperature\n"
            + "".join(f"{1700000000 + r},{d},{20 + r}\n" for r in range(4) for d in ids[FLEET - 3 :])
        )
        code, report, err = simulate(
            pipeline,
            port,
            "--credentials",
            str(creds),
            "--csv",
            str(csv),
            "--device-column",
            "device",
            "--speed",
            "0",
            "--seq-state",
            str(tmp_path / "replay-seqs.json"),
        )
        assert code == 0, err[-3000:]
        assert report["devices"] == 3 and report["published"] == report["acked"] == 12 and report["refused"] == {}

        expected = {(d, k) for d in fleet for k in range(10)} | {(d, k) for d in ids[FLEET - 3 :] for k in range(4)}
        pairs = arrived(pipeline, len(expected))
        assert sorted(pairs) == sorted(expected)  # every (device, seq) once, nothing else

        broker_log = auth_broker.hivemq.log_file.read_text()
        assert not any(
            f'"username":"{d}"' in line
            for d in ids
            for line in broker_log.splitlines()
            if '"mqtt_auth_refused"' in line or '"mqtt_publish_refused"' in line
        )
        assert not any(p in err for p in passwords.values())
        assert bridge.stop() == 0
    finally:
        if bridge.proc.poll() is None:
            bridge.kill()


def test_a_device_with_a_wrong_password_is_refused_by_name_and_nothing_of_it_arrives(pipeline, auth_broker, tmp_path):
    port = auth_broker.settings.mqtt_port
    lines = (auth_broker.settings.home / "fleet-creds").read_text().splitlines()
    victim = lines[7].split(":", 1)[0]
    lines[7] = f"{victim}:not-its-password"
    creds = tmp_path / "creds"
    creds.write_text("\n".join(lines) + "\n")
    creds.chmod(0o600)
    bridge = start_bridge(pipeline, port, tmp_path)
    try:
        code, report, err = simulate(pipeline, port, "--credentials", str(creds), "--count", "5", "--rate", "0")
        assert code == 1, err[-3000:]
        assert f"error: the broker refused 1 device(s): {victim} (Bad user name or password)" in err
        assert report["refused"] == {victim: "Bad user name or password"}
        # Honest counts: the others' readings only, all acknowledged.
        assert report["published"] == report["acked"] == 5 * (FLEET - 1) and report["unacked_at_exit"] == 0
        assert "not-its-password" not in err

        pairs = arrived(pipeline, 5 * (FLEET - 1))
        assert not [p for p in pairs if p[0] == victim]
        assert sorted(pairs) == sorted(
            (line.split(":", 1)[0], k) for line in lines if not line.startswith(victim) for k in range(5)
        )
        refused = [
            json.loads(line)
            for line in auth_broker.hivemq.log_file.read_text().splitlines()
            if '"mqtt_auth_refused"' in line and f'"username":"{victim}"' in line
        ]
        # Refused once: no reconnect attempts after the refusal.
        assert len(refused) == 1 and refused[0]["reason"] == "wrong password" and refused[0]["client_id"] == victim
        assert bridge.stop() == 0
    finally:
        if bridge.proc.poll() is None:
            bridge.kill()
