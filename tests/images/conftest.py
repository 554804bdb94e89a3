"""The built images, started with podman (tools/images/build.sh builds them; `make images`).

Every container runs as Kubernetes runs our Pods: read-only root filesystem, the non-root uid of the
image (10001, given explicitly like the Pods' runAsUser), writable paths only where a volume is
mounted (/tmp, and HiveMQ's data and log folders, each a tmpfs owned by root as podman mounts it).
Programs reach the session's real Kafka (tests/conftest.py) through the host network."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence

import pytest

from streamtrain.operator import validate
from streamtrain.operator.render import hivemq, objects
from tests.conftest import REPO

os.environ["CONTAINERS_CONF"] = str(REPO / "tools/images/containers.conf")
USER = f"{objects.UID}:{objects.UID}"
#: As the operator runs them: read-only root, non-root, /tmp on a volume (an emptyDir in the Pod).
HARDENED = ["--read-only", "--user", USER, "--tmpfs", "/tmp"]


def _chart(path: str, pattern: str) -> str:
    return re.search(pattern, (REPO / path).read_text(), re.M).group(1)


#: The programs' image: a StreamingTraining's default spec.image; the operator's: the chart's.
REPOSITORY = validate.defaulted({"spec": {}})["spec"]["image"]["repository"]
OPERATOR_REPOSITORY = _chart(
    "charts/streamtrain/values.yaml", r"^operator:\n  image:\n(?:    #.*\n)*    repository: (\S+)"
)
VERSION = _chart("charts/streamtrain/Chart.yaml", r'^appVersion: "?([^"\s]+)"?')
#: The names the chart and the operator use (render/hivemq.py, render/programs.py: <repository>-lite, -hivemq, -scorer-streams).
IMAGES = {
    "streamtrain": f"{REPOSITORY}:{VERSION}",
    "lite": f"{REPOSITORY}-lite:{VERSION}",
    "operator": f"{OPERATOR_REPOSITORY}:{VERSION}",
    "hivemq": hivemq.hivemq_launcher_image({"image": {"repository": REPOSITORY, "tag": VERSION}, "mqtt": {}}),
    "scorer-streams": f"{REPOSITORY}-scorer-streams:{VERSION}",
}
PAUSE = "registry.k8s.io/pause:3.10"


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


class Container:
    """One detached container, removed at the end; its log is kept for failures."""

    def __init__(self, image: str, *args: str, options: Sequence[str] = (), env: dict | None = None) -> None:
        self.name = f"streamtrain-test-{uuid.uuid4().hex[:8]}"
        env_args = [a for k, v in (env or {}).items() for a in ("--env", f"{k}={v}")]
        podman("run", "-d", "--name", self.name, *options, *env_args, image, *args)

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def state(self) -> dict:
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout)

    def wait_log(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.logs():
            if not self.state()["Running"]:
                raise AssertionError(f"{self.name} exited with {self.state()['ExitCode']}:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.logs()[-4000:]}")
            time.sleep(0.2)

    def wait_exit(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.state()["Running"]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout}s:\n{self.logs()[-4000:]}")
            time.sleep(0.5)
        return self.state()["ExitCode"]

    def wait_http(self, url: str, timeout: float = 120) -> str:
        """The body of ``url`` once it answers 200; the container's log on failure."""
        try:
            return wait_status(url, 200, timeout)
        except (AssertionError, OSError) as e:
            raise AssertionError(f"{e}\n{self.logs()[-4000:]}") from e

    def stop(self, timeout: int = 30) -> int:
        """SIGTERM, then the exit code (podman kills after ``timeout`` s: a test then sees 137)."""
        podman("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return self.state()["ExitCode"]

    def remove(self) -> None:
        podman("rm", "-f", self.name, check=False)


@pytest.fixture
def containers():
    started: list[Container] = []

    def start(image: str, *args: str, **kw) -> Container:
        started.append(Container(image, *args, **kw))
        return started[-1]

    yield start
    for c in started:
        c.remove()


def http_get(url: str, timeout: float = 120) -> tuple[int, str]:
    """The first answer of ``url`` (any status), retrying while nothing listens yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def wait_status(url: str, status: int = 200, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        code, body = http_get(url, timeout)
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: {code} {body[:300]} (waited {timeout}s for {status})")
        time.sleep(0.5)


def container_env(env: dict) -> dict:
    """Only the STREAMTRAIN_ settings of a host program's environment (tests.programs.settings_env)."""
    return {k: v for k, v in env.items() if k.startswith("STREAMTRAIN_")}


@pytest.fixture(scope="session", autouse=True)
def built_images():
    """Every image must exist: a missing one fails here (build with `make images`), never skips."""
    missing = [name for name in [*IMAGES.values(), PAUSE] if podman("image", "exists", name, check=False).returncode]
    assert not missing, f"not built: {missing}; run `make images` (tools/images/build.sh)"
