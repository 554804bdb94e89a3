"""`skaffold run` and the `skaffold dev` loop for real: the skaffold binary builds our images through
podman's Docker-compatible API, pushes them to a registry on loopback, installs the chart and applies
the dev example on the real control plane and node of test_real_node.py; then `skaffold dev` rebuilds
after a source change and the new code runs in the new Pods; Ctrl-C removes what it deployed.

Everything runs as in ``make test-node`` (root), plus:

- a registry (distribution/distribution, ``tools/kube/build.sh --registry``) on 127.0.0.1, its blobs
  kept in the project's cache so that a second run pushes only what changed;
- ``podman system service`` on ``unix:///run/streamtrain-podman.sock`` as skaffold's DOCKER_HOST (the
  images already in podman's storage are the build cache), started here and stopped after;
- the node's containerd pulling from that registry over plain HTTP (``certs.d/<host>/hosts.toml``);
  only the pause image is imported, every image of a Pod is pulled;
- the API server reached by the operator's Pod through the ``kubernetes`` Service: the control plane
  listens on loopback, so a relay on the Pods' gateway forwards to it and an EndpointSlice of that
  Service points there (kube-proxy translates the ClusterIP);
- Kafka external (the local stack on the gateway, as in test_real_node.py): Strimzi's release is
  fetched from quay.io, which cannot be reached here, so the profiles are external-kafka + local-registry.

skaffold works in a temporary copy of the repository: the test edits a program's source there, never
in the tree others work in. Stage timings are printed (``-s``) for docs/kubernetes.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streamtrain.credentials import make_fleet, new_password, set_user
from streamtrain.ports import free_port
from tests.k8s import controlplane
from tests.k8s import node as real_node
from tests.k8s.conftest import ROOT, foreign_crds
from tests.k8s.node_config import IMAGES, SANDBOX_IMAGE
from tests.k8s.registry import running_registry
from tests.k8s.test_real_node import scores_of
from tests.programs import stop_group
from tests.waiting import eventually

pytestmark = [pytest.mark.kube, pytest.mark.node, pytest.mark.skaffold]

NS = "streamtrain"  # the namespace of skaffold.yaml's releases and of the dev example
NAME = "dev"  # the dev example's StreamingTraining
PROFILES = "external-kafka,local-registry,stand-in-bases"
PODMAN_SOCKET = "/run/streamtrain-podman.sock"
#: The registry's blobs survive runs (a warm run pushes only changed layers); skaffold's own
#: artifact cache too.
CACHE = ROOT / ".streamtrain/skaffold"
#: Image builds take the lock every podman build on this machine takes (tools/images/build.sh).
HEAVY_LOCK = Path(os.environ.get("STREAMTRAIN_HEAVY_LOCK", "/tmp/streamtrain-heavy.lock"))
DEVICES = 20
#: The program whose source the dev loop changes, and the line after which the new code logs.
EDITED = "simulator/cli.py"
ANCHOR = 'log = logs.get("simulator")\n'


def stage(t0: float, what: str) -> None:
    print(f"skaffold test: {what} after {time.monotonic() - t0:.0f} s", flush=True)


@contextlib.contextmanager
def heavy_lock() -> Iterator[None]:
    with open(HEAVY_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- what skaffold needs around the node -------------------------------------------------------


@pytest.fixture(scope="module")
def binaries() -> Path:
    # Built by `make test-skaffold` before pytest starts (tools/kube/build.sh --node --registry).
    return controlplane.build(node=True, check=True, registry=True)


@pytest.fixture(scope="module")
def registry(binaries, tmp_path_factory) -> Iterator[str]:
    """distribution's registry on loopback; yields its address (host:port)."""
    with running_registry(binaries, tmp_path_factory.mktemp("registry"), CACHE / "registry") as address:
        yield address


@pytest.fixture(scope="module")
def docker_host(registry, tmp_path_factory) -> Iterator[str]:
    """podman's Docker-compatible API for skaffold, pushing to the loopback registry over plain HTTP."""
    if Path(PODMAN_SOCKET).exists():
        pytest.fail(f"{PODMAN_SOCKET} exists: another podman service (or a stale socket) is in the way")
    d = tmp_path_factory.mktemp("podman")
    conf = d / "registries.conf"
    conf.write_text(
        f'unqualified-search-registries = ["docker.io"]\n\n[[registry]]\nlocation = "{registry}"\ninsecure = true\n'
    )
    log = open(d / "podman.log", "ab")
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{PODMAN_SOCKET}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)},
    )
    host = f"unix://{PODMAN_SOCKET}"
    try:
        eventually(
            lambda: (
                proc.poll() is not None
                or subprocess.run(
                    ["curl", "-fsS", "--unix-socket", PODMAN_SOCKET, "http://d/_ping"], capture_output=True, check=False
                ).returncode
                == 0
            ),
            "podman's API socket",
            timeout=60,
        )
        assert proc.poll() is None, (d / "podman.log").read_text()[-3000:]
        yield host
    finally:
        stop_group(proc)
        with contextlib.suppress(FileNotFoundError):
            Path(PODMAN_SOCKET).unlink()


@pytest.fixture(scope="module")
def cluster(binaries, tmp_path_factory) -> Iterator[controlplane.ControlPlane]:
    """Its own control plane: skaffold installs the chart (the CRD with it); Strimzi's and KEDA's CRDs
    stand in for their installation, as in the other real-cluster tests."""
    with controlplane.running(tmp_path_factory.mktemp("kube"), build_missing=False) as cp:
        crds = foreign_crds()
        for crd in crds:
            cp.kubectl("create", "-f", "-", input=json.dumps(crd))
        cp.kubectl("cordon", controlplane.FAKE_NODE)  # every Pod goes to the real node
        yield cp


@pytest.fixture(scope="module")
def node(cluster, registry, tmp_path_factory):
    pause = IMAGES / "pause.tar"
    if not pause.exists():
        pytest.fail(f"{pause} missing: `make test-skaffold` saves {SANDBOX_IMAGE} there first")
    with real_node.running(cluster, tmp_path_factory.mktemp("node"), archives=("pause",), registries=(registry,)) as n:
        yield n


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def api_for_pods(cluster, node) -> Iterator[None]:
    """The API server for in-cluster clients: a relay on the gateway to its loopback port, and the
    ``kubernetes`` Service's EndpointSlice naming that relay (the server's certificate names 10.96.0.1)."""
    server = socket.create_server((real_node.GATEWAY, free_port()))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kubernetes-relay",
                    "namespace": "default",
                    "labels": {
                        "kubernetes.io/service-name": "kubernetes",
                        "endpointslice.kubernetes.io/managed-by": "streamtrain-test",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [real_node.GATEWAY], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }
        ),
    )
    try:
        yield
    finally:
        stop.set()
        server.close()


@pytest.fixture(scope="module")
def secrets(cluster, tmp_path_factory) -> None:
    """The MQTT identities of the managed broker, as test_real_node.py makes them."""
    d = tmp_path_factory.mktemp("mqtt")
    bridge_password = new_password()
    set_user(d / "users", "bridge", "bridge", bridge_password)
    make_fleet(d / "users", d / "devices", DEVICES, "dev")
    (d / "password").write_text(bridge_password)
    cluster.kubectl("create", "namespace", NS)
    for name, sources in (
        ("mqtt-users", [f"--from-file=users={d / 'users'}"]),
        ("mqtt-bridge", ["--from-literal=username=bridge", f"--from-file=password={d / 'password'}"]),
        ("devices", [f"--from-file=credentials={d / 'devices'}"]),
    ):
        cluster.kubectl("create", "secret", "generic", f"{NAME}-{name}", "-n", NS, *sources)


@pytest.fixture(scope="module")
def workspace(stack, tmp_path_factory) -> Path:
    """A copy of the repository (tracked and new files, not the ignored ones) with the dev example
    pointed at this Kafka, as a user sets its bootstrap; the broker is the managed one with credentials
    (its launcher image is built by skaffold: Docker Hub's HiveMQ image cannot be pulled here)."""
    src = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        path = ROOT / rel
        if path.is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / rel)
    example = src / "examples/dev-external.yaml"
    resource = yaml.safe_load(example.read_text())
    spec = resource["spec"]
    spec["kafka"]["bootstrap"] = stack.bootstrap
    spec["fleet"] = {
        "devices": DEVICES,
        "rate": 5.0,
        "credentialsSecretRef": {"name": f"{NAME}-devices", "key": "credentials"},
    }
    spec["mqtt"] = {
        "authentication": "credentials",
        "launcherImage": "ghcr.io/streamtrain/streamtrain-hivemq:dev",
        "usersSecretRef": {"name": f"{NAME}-mqtt-users", "key": "users"},
        "username": {"secretKeyRef": {"name": f"{NAME}-mqtt-bridge", "key": "username"}},
        "password": {"secretKeyRef": {"name": f"{NAME}-mqtt-bridge", "key": "password"}},
    }
    spec["model"] = {"trainRecords": 600, "epochs": 2, "layers": [8, 2, 8]}
    spec["training"] = {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}}
    example.write_text(yaml.safe_dump(resource))
    return src


# --- the test ----------------------------------------------------------------------------------


def skaffold_env(cp, docker_host: str) -> dict[str, str]:
    home = CACHE / "home"  # skaffold's global config and artifact cache
    home.mkdir(parents=True, exist_ok=True)
    return {
        **cp.env(),
        "DOCKER_HOST": docker_host,
        "HOME": str(home),
        "SKAFFOLD_UPDATE_CHECK": "false",
        "SKAFFOLD_COLLECT_METRICS": "false",
    }


def skaffold_args(registry: str) -> list[str]:
    return ["-p", PROFILES, f"--default-repo={registry}", f"--insecure-registry={registry}", "--interactive=false"]


def model_version(cp) -> int:
    st = (cp.get_object("streamingtraining", NAME, NS) or {}).get("status") or {}
    return int(st.get("modelVersion") or 0)


def pods(cp, component: str, phase: str = "Running") -> list[dict]:
    items = json.loads(
        cp.kubectl(
            "get",
            "pods",
            "-n",
            NS,
            "-o",
            "json",
            "-l",
            f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component={component}",
        ).stdout
    )["items"]
    return [p for p in items if p["status"]["phase"] == phase and not p["metadata"].get("deletionTimestamp")]


def diagnose(cp, node, log: Path | None = None) -> str:
    out = [cp.kubectl("get", "pods,jobs,deployments", "-A", "-o", "wide", check=False).stdout]
    out.append(json.dumps((cp.get_object("streamingtraining", NAME, NS) or {}).get("status"), indent=1))
    for p in json.loads(cp.kubectl("get", "pods", "-n", NS, "-o", "json", check=False).stdout or '{"items": []}')[
        "items"
    ]:
        name = p["metadata"]["name"]
        out.append(f"--- {name}: {json.dumps(p['status'].get('containerStatuses'))[:600]}")
        out.append(cp.kubectl("logs", "-n", NS, name, "--tail", "12", check=False).stdout[-2000:])
    out.append(cp.kubectl("get", "events", "-n", NS, "--sort-by=.lastTimestamp", check=False).stdout[-3000:])
    out.append("--- kubelet\n" + node.logs("kubelet", 2000))
    if log and log.exists():
        out.append("--- skaffold\n" + log.read_text(errors="replace")[-4000:])
    return "\n".join(out)


# A cold build and push of four images, then a rebuild: the per-test default (600 s) is for one step.
@pytest.mark.timeout(7200)
def test_skaffold_run_then_dev_rebuilds_on_a_source_change_and_cleans_up(
    cluster, node, api_for_pods, registry, docker_host, stack, secrets, workspace
):
    cp = cluster
    env = skaffold_env(cp, docker_host)
    skaffold = str(cp.bin / "skaffold")
    registry_was_empty = not any((CACHE / "registry").rglob("data"))
    t0 = time.monotonic()

    # 1. skaffold run: build (through podman), push, helm install of the chart, the dev example.
    run_log = workspace.parent / "skaffold-run.log"
    with heavy_lock(), open(run_log, "w") as out:
        stage(t0, "heavy lock taken, skaffold run")
        done = subprocess.run(
            [skaffold, "run", *skaffold_args(registry), "--status-check=false"],
            cwd=workspace,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=3000,
        )
    stage(t0, f"skaffold run exited {done.returncode} ({'cold' if registry_was_empty else 'warm'} registry)")
    assert done.returncode == 0, run_log.read_text(errors="replace")[-6000:]

    try:
        operator = cp.get_object("deployment", "streamtrain", NS)
        assert operator, "the chart's operator Deployment"
        assert operator["spec"]["template"]["spec"]["containers"][0]["image"].startswith(f"{registry}/")
        eventually(lambda: model_version(cp) >= 1, "status.modelVersion from the scorer", timeout=900, every=3)
        v1 = model_version(cp)
        stage(t0, f"pipeline from skaffold run: status.modelVersion {v1}")
        assert scores_of(stack, v1), f"no score by version {v1} on Kafka"
        stage(t0, f"scores by version {v1} on Kafka")
        for component in ("hivemq", "simulator", "bridge", "preprocess", "scorer"):
            running = pods(cp, component)
            assert running and all(p["spec"]["nodeName"] == node.name for p in running), component
            for p in running:
                assert all(c["image"].startswith(f"{registry}/") for c in p["spec"]["containers"]), p["spec"]
        old = {p["metadata"]["uid"]: p["spec"]["containers"][0]["image"] for p in pods(cp, "simulator")}
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(cp, node, run_log)}") from None

    # 2. skaffold dev: watches the copy; a change to the simulator's source is rebuilt and rolled out.
    dev_log = workspace.parent / "skaffold-dev.log"
    dev_out = open(dev_log, "w")
    dev = subprocess.Popen(
        [skaffold, "dev", *skaffold_args(registry), "--port-forward=off", "--status-check=false"],
        cwd=workspace,
        env=env,
        stdout=dev_out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        watching = lambda n: dev_log.read_text(errors="replace").count("Watching for changes") >= n  # noqa: E731
        eventually(lambda: dev.poll() is not None or watching(1), "skaffold dev watching", timeout=1200, every=2)
        assert dev.poll() is None, dev_log.read_text(errors="replace")[-6000:]
        stage(t0, "skaffold dev watching")

        marker = f"skaffold-dev-{uuid.uuid4().hex[:12]}"
        edited = workspace / EDITED
        text = edited.read_text()
        assert ANCHOR in text, f"{EDITED} no longer has {ANCHOR!r}"
        with heavy_lock():
            edited.write_text(text.replace(ANCHOR, f'{ANCHOR}log.info("dev_loop_marker", marker="{marker}")\n', 1))
            t_edit = time.monotonic()
            eventually(
                lambda: dev.poll() is not None or watching(2),
                "skaffold dev to rebuild and redeploy",
                timeout=2400,
                every=3,
            )
        assert dev.poll() is None, dev_log.read_text(errors="replace")[-6000:]
        stage(t0, f"rebuilt and redeployed {time.monotonic() - t_edit:.0f} s after the edit")

        def new_simulator_logs_marker() -> dict | None:
            for p in pods(cp, "simulator"):
                if p["metadata"]["uid"] in old:
                    continue
                logs = cp.kubectl("logs", "-n", NS, p["metadata"]["name"], check=False).stdout
                if marker in logs:
                    return p
            return None

        new = eventually(new_simulator_logs_marker, f"a new simulator Pod logging {marker}", timeout=900, every=3)
        stage(t0, f"new simulator Pod logs the marker {time.monotonic() - t_edit:.0f} s after the edit")
        assert new["spec"]["containers"][0]["image"] not in old.values()
        assert new["spec"]["containers"][0]["image"].startswith(f"{registry}/")
        eventually(
            lambda: not any(p["metadata"]["uid"] in old for p in pods(cp, "simulator")),
            "the old simulator Pod replaced",
            timeout=300,
        )
        # Only the new code logs the marker: the Pods from skaffold run never did.
        assert all(marker not in line for line in (workspace.parent / "skaffold-run.log").read_text().splitlines())
    except AssertionError as exc:
        stop_group(dev, signal.SIGINT, timeout=300)
        raise AssertionError(f"{exc}\n{diagnose(cp, node, dev_log)}") from None

    # 3. Ctrl-C: skaffold dev deletes what it deployed (the example, then the chart's release).
    os.killpg(dev.pid, signal.SIGINT)
    try:
        dev.wait(timeout=600)
    except subprocess.TimeoutExpired:
        stop_group(dev)
        raise AssertionError("skaffold dev did not stop on SIGINT\n" + dev_log.read_text(errors="replace")[-4000:])
    dev_out.close()
    stage(t0, f"skaffold dev stopped ({dev.returncode})")
    assert not cp.get_object("streamingtraining", NAME, NS), "the dev example outlived skaffold dev"
    assert not cp.helm("list", "-n", NS, "-q").stdout.strip(), "the chart's release outlived skaffold dev"
    eventually(
        lambda: not json.loads(cp.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"],
        "every Pod of the pipeline and the operator gone",
        timeout=300,
        every=2,
        explain=lambda: diagnose(cp, node),
    )
    stage(t0, "everything skaffold deployed is gone")
