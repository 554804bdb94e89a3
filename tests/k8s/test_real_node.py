"""A StreamingTraining on a real node: real Pods from our images, run by a kubelet on containerd.

The control plane of ``controlplane.py`` plus the node of ``node.py`` (the kwok fake node is cordoned,
so every Pod lands on the real one). HiveMQ CE is managed: our launcher image with MQTT credentials
from Secrets, reached by the simulator and the bridge by its Service name (CoreDNS, kube-proxy).
Kafka is external: the local stack's real broker, listening on the Pods' bridge gateway (the Strimzi
operator image cannot be had here). The operator runs in-process under the chart's ServiceAccount, as
in test_real_operator.py; it reads the scorers' /metrics at their Pod addresses for status.modelVersion.

Evidence asked for: the trainer Job's Pod ran on the kubelet (containerd container, exit 0), the
scorer Pod runs, status.modelVersion becomes the first version and the scores on Kafka carry it;
then a changed model spec trains a second version, which the running scorer takes without a restart.
"""

from __future__ import annotations

import json
import time

import pytest

from streamtrain.credentials import make_fleet, new_password, set_user
from streamtrain.kafka import read_topic
from tests.k8s import node as real_node
from tests.k8s.controlplane import FAKE_NODE, build
from tests.k8s.operator_process import Operator
from tests.waiting import eventually

pytestmark = [pytest.mark.kube, pytest.mark.node]

NS = "plant"
NAME = "line-1"
DEVICES = 20


@pytest.fixture(scope="module")
def node(crds, tmp_path_factory):
    build(node=True, check=True)  # built by `make test-node` before pytest starts
    crds.kubectl("cordon", FAKE_NODE)  # the chart's own Pods stay where they are; new ones go to the real node
    with real_node.running(crds, tmp_path_factory.mktemp("node")) as n:
        yield n


@pytest.fixture(scope="module")
def secrets(crds, tmp_path_factory) -> None:
    """The MQTT identities as the docs make them: a users file of hashes for the broker, the bridge's
    name and password, the devices' passwords for the simulator."""
    d = tmp_path_factory.mktemp("mqtt")
    bridge_password = new_password()
    set_user(d / "users", "bridge", "bridge", bridge_password)
    make_fleet(d / "users", d / "devices", DEVICES, "dev")
    (d / "password").write_text(bridge_password)
    crds.kubectl("create", "namespace", NS, check=False)
    for name, sources in (
        ("mqtt-users", [f"--from-file=users={d / 'users'}"]),
        ("mqtt-bridge", ["--from-literal=username=bridge", f"--from-file=password={d / 'password'}"]),
        ("devices", [f"--from-file=credentials={d / 'devices'}"]),
    ):
        crds.kubectl("create", "secret", "generic", f"{NAME}-{name}", "-n", NS, *sources)


@pytest.fixture(scope="module")
def operator(crds, stack, secrets, tmp_path_factory):
    op = Operator(crds, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()


def resource(stack) -> dict:
    return {
        "apiVersion": "streamtrain.io/v1alpha1",
        "kind": "StreamingTraining",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "fleet": {
                "devices": DEVICES,
                "rate": 5.0,
                "credentialsSecretRef": {"name": f"{NAME}-devices", "key": "credentials"},
            },
            "mqtt": {
                "authentication": "credentials",
                "usersSecretRef": {"name": f"{NAME}-mqtt-users", "key": "users"},
                "username": {"secretKeyRef": {"name": f"{NAME}-mqtt-bridge", "key": "username"}},
                "password": {"secretKeyRef": {"name": f"{NAME}-mqtt-bridge", "key": "password"}},
            },
            "kafka": {"mode": "external", "bootstrap": stack.bootstrap},
            "model": {"trainRecords": 600, "epochs": 2, "layers": [8, 2, 8]},
            "training": {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}},
            "scorer": {"replicas": 1, "startAt": "latest"},
        },
    }


def get(cp, kind: str, name: str) -> dict | None:
    return cp.get_object(kind, name, NS)


def pods(cp, component: str) -> list[dict]:
    return json.loads(
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


def model_version(cp) -> int:
    st = (get(cp, "streamingtraining", NAME) or {}).get("status") or {}
    return int(st.get("modelVersion") or 0)


def succeeded_job(cp, node, jobs_before: set[str]) -> dict:
    """The new trainer Job once it succeeded; its Pod ran in a containerd container on the real node."""

    def done():
        jobs = json.loads(
            cp.kubectl("get", "jobs", "-n", NS, "-o", "json", "-l", f"app.kubernetes.io/instance={NAME}").stdout
        )["items"]
        return next(
            (j for j in jobs if j["metadata"]["name"] not in jobs_before and j["status"].get("succeeded")), None
        )

    job = eventually(done, "the trainer Job to succeed on the real node", timeout=600, every=2)
    pod = next(
        p
        for p in pods(cp, "train")
        if p["metadata"]["labels"].get("job-name") == job["metadata"]["name"] and p["status"]["phase"] == "Succeeded"
    )
    assert pod["spec"]["nodeName"] == node.name
    term = pod["status"]["containerStatuses"][0]
    assert term["containerID"].startswith("containerd://") and term["state"]["terminated"]["exitCode"] == 0, term
    return job


def scores_of(stack, version: int) -> list:
    """Scores on Kafka made by ``version`` (read from the start; stops at the first one, or after 120 s)."""
    seen = {"checked": 0}

    def found(ms: list) -> bool:
        new, seen["checked"] = ms[seen["checked"] :], len(ms)
        return any(json.loads(m.value()).get("model_version") == version for m in new)

    ms = read_topic(stack.bootstrap, stack.settings.topic_scores, timeout=120, until=found)
    return [m for m in ms if json.loads(m.value()).get("model_version") == version]


def diagnose(cp, node, operator) -> str:
    """What a failure needs: Pods, their containers and logs, the status, the operator and kubelet logs."""
    out = [
        cp.kubectl("get", "pods,jobs", "-n", NS, "-o", "wide", check=False).stdout,
        json.dumps((get(cp, "streamingtraining", NAME) or {}).get("status"), indent=1),
    ]
    for p in json.loads(cp.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]:
        name = p["metadata"]["name"]
        out.append(f"--- {name}: {json.dumps(p['status'].get('containerStatuses'))[:600]}")
        out.append(cp.kubectl("logs", "-n", NS, name, "--tail", "12", check=False).stdout[-3000:])
    out.append("--- operator\n" + operator.output()[-3000:])
    out.append("--- kubelet\n" + node.logs("kubelet", 2000))
    return "\n".join(out)


def stage(t0: float, what: str) -> None:
    print(f"node test: {what} after {time.monotonic() - t0:.0f} s", flush=True)


def test_training_runs_on_the_real_node_and_a_new_version_reaches_the_running_scorer(node, stack, operator):
    try:
        run_pipeline(operator.cp, node, stack)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnose(operator.cp, node, operator)}") from None


def run_pipeline(cp, node, stack) -> None:
    t0 = time.monotonic()
    cp.kubectl("apply", "-f", "-", input=json.dumps(resource(stack)))

    first = succeeded_job(cp, node, set())
    stage(t0, f"trainer Job {first['metadata']['name']} succeeded")
    for component in ("hivemq", "simulator", "bridge", "preprocess"):  # every program a real container there
        running = [p for p in pods(cp, component) if p["status"]["phase"] == "Running"]
        assert running and all(p["spec"]["nodeName"] == node.name for p in running), component
    eventually(lambda: model_version(cp) >= 1, "status.modelVersion from the scorer", timeout=300, every=2)
    v1 = model_version(cp)
    stage(t0, f"status.modelVersion {v1}")
    scorer = eventually(
        lambda: [p for p in pods(cp, "scorer") if p["status"]["phase"] == "Running"], "a running scorer Pod"
    )[0]
    assert scorer["spec"]["nodeName"] == node.name
    assert scores_of(stack, v1), f"no score by version {v1} on Kafka"

    # A changed model recipe: a new Job, a new version, taken by the same scorer Pod without a restart.
    cp.patch_spec(NS, NAME, {"model": {"epochs": 3}})
    second = succeeded_job(cp, node, {first["metadata"]["name"]})
    stage(t0, f"trainer Job {second['metadata']['name']} succeeded")
    eventually(lambda: model_version(cp) > v1, f"status.modelVersion after {v1}", timeout=300, every=2)
    v2 = model_version(cp)
    stage(t0, f"status.modelVersion {v2}")
    same = next(p for p in pods(cp, "scorer") if p["metadata"]["uid"] == scorer["metadata"]["uid"])
    assert same["status"]["containerStatuses"][0]["restartCount"] == 0, same["status"]
    assert scores_of(stack, v2), f"no score by version {v2} on Kafka"
    stage(t0, f"scores by version {v2} on Kafka")

    cp.kubectl("delete", "streamingtraining", NAME, "-n", NS, "--wait=true", "--timeout", "120s")
    eventually(
        lambda: not json.loads(cp.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"],
        "every Pod of the pipeline gone from the node",
        timeout=180,
        every=2,
    )
    stage(t0, "every Pod gone")
