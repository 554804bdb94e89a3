"""The images as built (`make images`), started and checked: non-root on a read-only root, every
program's --help, health endpoints, the HiveMQ launcher image with StreamTrain's authentication
carrying a device's messages through the bridge image into real Kafka, the Kafka Streams scorer
image ready on real Kafka, clean exits on SIGTERM, and the locally made pause image.
Marker `images`: not in the default run (`make test-images` builds, then runs these)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from streamtrain.kafka import read_topic
from streamtrain.operator.render import connections, hivemq, objects
from streamtrain.operator.render.programs import LITE_PROGRAMS
from streamtrain.stack.local import free_port
from tests.conftest import REPO
from tests.images.conftest import HARDENED, IMAGES, PAUSE, USER, container_env, podman
from tests.ingest.test_auth_e2e import Device, reading, wait_for
from tests.programs import settings_env
from tests.score.test_scorer_e2e import FeatureStream, wait_scores

pytestmark = pytest.mark.images

PASSWORDS = {"dev-a": "alpha-secret", "bridge-1": "bridge-secret"}
HIVEMQ_DATA, HIVEMQ_LOG = hivemq.WRITES["data"], hivemq.WRITES["log"]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_runs_as_the_pods_non_root_uid_on_a_read_only_root(name):
    image = IMAGES[name]
    assert podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == USER
    # The image's own user (no --user), as a runtime without runAsUser starts it.
    assert podman("run", "--rm", "--read-only", "--entrypoint", "id", image, "-u").stdout.strip() == str(objects.UID)
    wrote = podman("run", "--rm", "--read-only", "--entrypoint", "sh", image, "-c", "touch /app/x /opt/x", check=False)
    assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr


def test_every_streamtrain_command_answers_help_and_the_operator_imports():
    from streamtrain.cli.main import cli

    commands = sorted(cli.list_commands(None))
    assert {"simulate", "bridge", "preprocess", "train", "score"} <= set(commands)
    script = "streamtrain --help >/dev/null || exit 1; " + " ".join(
        f"streamtrain {c} --help | grep -q Usage: || {{ echo {c} failed; exit 1; }};" for c in commands
    )
    done = podman("run", "--rm", *HARDENED, "--entrypoint", "sh", IMAGES["streamtrain"], "-c", script, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # The default command is --help (CMD), and the operator's handlers import as `kopf run` loads them.
    assert "Usage:" in podman("run", "--rm", *HARDENED, IMAGES["streamtrain"]).stdout
    operator = podman(
        "run",
        "--rm",
        *HARDENED,
        "--entrypoint",
        "python",
        IMAGES["streamtrain"],
        "-c",
        "import streamtrain.operator.handlers; print('operator-ok')",
        check=False,
    )
    assert "operator-ok" in operator.stdout, operator.stdout + operator.stderr


def test_operator_image_runs_the_operator_and_carries_no_tensorflow():
    """The chart's operator Deployment and `helm test` Pod run this image (EXTRAS=operator)."""
    script = (
        "import importlib.util, streamtrain.operator.handlers, streamtrain.operator.selftest; "
        "print('operator-ok', [m for m in ('tensorflow', 'keras', 'matplotlib') if importlib.util.find_spec(m)])"
    )
    done = podman("run", "--rm", *HARDENED, "--entrypoint", "python", IMAGES["operator"], "-c", script, check=False)
    assert "operator-ok []" in done.stdout, done.stdout + done.stderr
    kopf = podman("run", "--rm", *HARDENED, "--entrypoint", "kopf", IMAGES["operator"], "run", "--help", check=False)
    assert kopf.returncode == 0 and "--standalone" in kopf.stdout, kopf.stdout + kopf.stderr
    sizes = {
        name: int(podman("image", "inspect", "--format", "{{.Size}}", IMAGES[name]).stdout)
        for name in ("streamtrain", "operator")
    }
    assert sizes["operator"] < sizes["streamtrain"] / 2, sizes


def test_lite_image_runs_the_programs_without_tensorflow():
    """simulate, bridge and preprocess Pods run <repository>-lite (render/programs.py LITE_PROGRAMS)."""
    script = " ".join(
        f"streamtrain {c} --help | grep -q Usage: || {{ echo {c} failed; exit 1; }};" for c in sorted(LITE_PROGRAMS)
    )
    script += (
        " python -c \"import importlib.util; print('lite-ok', [m for m in ('tensorflow', 'keras', 'onnxruntime', "
        "'matplotlib', 'kopf') if importlib.util.find_spec(m)])\""
    )
    done = podman("run", "--rm", *HARDENED, "--entrypoint", "sh", IMAGES["lite"], "-c", script, check=False)
    assert done.returncode == 0 and "lite-ok []" in done.stdout, done.stdout + done.stderr
    sizes = {
        name: int(podman("image", "inspect", "--format", "{{.Size}}", IMAGES[name]).stdout)
        for name in ("streamtrain", "lite")
    }
    assert sizes["lite"] < sizes["streamtrain"] / 2, sizes


def test_launcher_image_has_no_compiler_and_answers_help():
    modules = podman("run", "--rm", "--entrypoint", "java", IMAGES["hivemq"], "--list-modules").stdout
    assert "java.base@17" in modules and "jdk.compiler" not in modules  # a JRE: the launcher is precompiled
    done = podman("run", "--rm", *HARDENED, IMAGES["hivemq"], "--help")
    assert done.stdout.startswith("usage: HiveMQLauncher")


def test_launcher_refuses_a_read_only_data_folder_with_a_clear_error():
    done = podman("run", "--rm", *HARDENED, IMAGES["hivemq"], check=False, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    event = json.loads(done.stdout.strip().splitlines()[-1])
    assert event["event"] == "hivemq_data_folder_not_writable" and event["folder"] == HIVEMQ_DATA
    assert "Read-only file system" in event["error"] and "emptyDir" in event["fix"]


@pytest.fixture
def users_file(tmp_path):
    users = tmp_path / "users"
    for user, password in PASSWORDS.items():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "streamtrain.cli.main",
                "stack",
                "passwd",
                user,
                "--role",
                "bridge" if user.startswith("bridge") else "device",
                "--file",
                str(users),
                "--password-stdin",
            ],
            input=password + "\n",
            text=True,
            check=True,
        )
    # As the Pod mounts its Secret: defaultMode 0440, group fsGroup.
    os.chown(users, 0, objects.UID)
    users.chmod(0o440)
    return users


def test_launcher_and_bridge_images_carry_a_device_into_kafka(pipeline, users_file, tmp_path, containers):
    mqtt_port, metrics_port = free_port(), free_port()
    # The finding: podman's --tmpfs is root-owned and takes the image folder's mode; HiveMQ locks
    # data.lock in it as uid 10001.
    hivemq = containers(
        IMAGES["hivemq"],
        f"{connections.MQTT_USERS_MOUNT}/users",
        options=[
            *HARDENED,
            "--tmpfs",
            HIVEMQ_DATA,
            "--tmpfs",
            HIVEMQ_LOG,
            "-p",
            f"127.0.0.1:{mqtt_port}:1883",
            "-v",
            f"{users_file}:{connections.MQTT_USERS_MOUNT}/users:ro",
        ],
    )
    hivemq.wait_log('"hivemq_started"')
    owner = podman("exec", hivemq.name, "stat", "-c", "%U %a", HIVEMQ_DATA, f"{HIVEMQ_DATA}/data.lock").stdout.split()
    assert owner == ["root", "1777", "streamtrain", "644"], owner
    assert '"mqtt_auth_enabled","users":"2"' in hivemq.logs()

    password = tmp_path / "bridge-password"
    password.write_text(PASSWORDS["bridge-1"] + "\n")
    os.chown(password, 0, objects.UID)
    password.chmod(0o440)
    group = f"img-{uuid.uuid4().hex[:6]}"
    env = container_env(
        settings_env(
            pipeline,
            mqtt_port=mqtt_port,
            client_id=group,
            share_group=group,
            metrics_port=metrics_port,
            mqtt_username="bridge-1",
            mqtt_password_file="/var/run/streamtrain/mqtt-bridge/password",
        )
    )
    bridge = containers(
        IMAGES["lite"],  # the image the operator runs the bridge with
        "bridge",
        env=env,
        options=[*HARDENED, "--network", "host", "-v", f"{password}:/var/run/streamtrain/mqtt-bridge/password:ro"],
    )
    bridge.wait_log('"mqtt_subscribed"')
    bridge.wait_http(f"http://127.0.0.1:{metrics_port}/healthz")
    bridge.wait_http(f"http://127.0.0.1:{metrics_port}/readyz")

    device = Device(mqtt_port, "dev-a", PASSWORDS["dev-a"])
    assert not device.connack.is_failure
    mids = [device.publish("devices/dev-a/telemetry", reading("dev-a", i)) for i in range(50)]
    wait_for(lambda: all(m in device.pubacks for m in mids), "PUBACKs")
    assert not any(device.pubacks[m].is_failure for m in mids)
    intruder = Device(mqtt_port, "dev-a", "guess")
    assert intruder.connack.getName() == "Bad user name or password"
    device.close()
    intruder.close()
    records = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 50, timeout=60)
    assert sorted(json.loads(r.value())["seq"] for r in records) == list(range(50))
    assert "streamtrain_bridge" in bridge.wait_http(f"http://127.0.0.1:{metrics_port}/metrics")

    assert bridge.stop() == 0, bridge.logs()[-3000:]
    # The JVM ends with 128+SIGTERM after its shutdown hook has stopped HiveMQ (not killed: 137).
    assert hivemq.stop() == 143 and '"hivemq_stopping"' in hivemq.logs() and "Shutdown completed" in hivemq.logs()


def test_trainer_image_trains_and_the_streams_scorer_image_scores_with_its_model(pipeline, containers):
    stream = FeatureStream(pipeline, seed=5)
    stream.send(100)
    # TensorFlow on a read-only root: caches and HOME under /tmp.
    trainer = containers(
        IMAGES["streamtrain"],
        "train",
        options=[*HARDENED, "--network", "host"],
        env=container_env(settings_env(pipeline, train_records=2000, epochs=3)),
    )
    assert trainer.wait_exit(300) == 0, trainer.logs()[-4000:]
    assert "model_published" in trainer.logs(), trainer.logs()[-2000:]

    metrics_port = free_port()
    env = container_env(settings_env(pipeline, metrics_port=metrics_port, group_id=f"img-{uuid.uuid4().hex[:6]}"))
    scorer = containers(IMAGES["scorer-streams"], env=env, options=[*HARDENED, "--network", "host"])
    assert scorer.wait_http(f"http://127.0.0.1:{metrics_port}/healthz") == "ok\n"
    # Ready once the model is loaded (ONNX Runtime unpacks its native library into /tmp) and Streams runs.
    scorer.wait_http(f"http://127.0.0.1:{metrics_port}/readyz")
    expected = set(stream.sent)
    scores = wait_scores(pipeline, expected)
    assert len(scores) == len(expected) and {s["scorer"] for s in scores} == {"kafka-streams"}
    assert {s["model_version"] for s in scores} == {1}
    assert "streamtrain_scorer_records_scored" in scorer.wait_http(f"http://127.0.0.1:{metrics_port}/metrics")
    assert scorer.stop() == 0, scorer.logs()[-3000:]


def test_pause_image_holds_a_sandbox_and_ends_on_sigint(containers):
    size = int(podman("image", "inspect", "--format", "{{.Size}}", PAUSE).stdout)
    assert size < 2_000_000, size
    pause = containers(PAUSE, options=["--read-only"])
    assert pause.state()["Running"]
    podman("kill", "--signal", "INT", pause.name)
    wait_for(lambda: not pause.state()["Running"], "pause to end")
    assert pause.state()["ExitCode"] == 0


def test_built_from_the_repository_dockerfiles():
    """The images carry the Dockerfiles' own entrypoints (built unmodified, tools/images/build.sh)."""
    for name, dockerfile in {
        "streamtrain": "Dockerfile",
        "lite": "Dockerfile",
        "operator": "Dockerfile",
        "hivemq": "hivemq.Dockerfile",
        "scorer-streams": "scorer-streams.Dockerfile",
    }.items():
        text = (REPO / "images" / dockerfile).read_text().replace("\\\n", "")
        declared = json.loads(next(line for line in text.splitlines() if line.startswith("ENTRYPOINT "))[11:])
        built = json.loads(podman("image", "inspect", "--format", "{{json .Config.Entrypoint}}", IMAGES[name]).stdout)
        assert built == declared, name
