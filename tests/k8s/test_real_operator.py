"""The operator against a real kube-apiserver, under the chart's own ServiceAccount (never as admin).

Pods run on a kwok fake node (they become ready, and Job Pods complete, without containers); the
controller-manager's Deployment, Job and garbage-collection controllers are the real ones. Strimzi's
CRDs are served but its operator cannot run here, so the test marks Kafka resources ready as Strimzi
would. The last test uninstalls the chart (tests in this file run in order, after test_real_chart.py)."""

from __future__ import annotations

import copy
import json

import pytest

from streamtrain.operator import children
from tests.k8s.conftest import RELEASE, RELEASE_NS, ROOT, load_example
from tests.k8s.operator_process import Operator
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "plant"
STRIMZI_KINDS = ("Kafka", "KafkaTopic", "KafkaUser")


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory):
    crds.kubectl("create", "namespace", NS, check=False)
    op = Operator(crds, tmp_path_factory.mktemp("operator"))
    yield op
    if op.proc is not None:
        op.stop()


def get(cp, kind: str, name: str, ns: str = NS) -> dict | None:
    return cp.get_object(kind, name, ns)


def create(cp, name: str, example: str = "minimal") -> dict:
    body = load_example(ROOT / f"examples/{example}.yaml")
    body["metadata"] = {"name": name, "namespace": NS}
    cp.kubectl("create", "-f", "-", input=json.dumps(body))
    return get(cp, "streamingtraining", name)


def owned_children(cp, name: str) -> list[dict]:
    kinds = (
        "deployments,services,configmaps,jobs,cronjobs,poddisruptionbudgets,kafkas,kafkanodepools,kafkatopics,"
        "kafkausers,scaledobjects,triggerauthentications,networkpolicies"
    )
    items = json.loads(
        cp.kubectl("get", kinds, "-n", NS, "-l", f"app.kubernetes.io/instance={name}", "-o", "json").stdout
    )["items"]
    return items


def wait_for_children(cp, body: dict) -> list[dict]:
    wanted = {children.key(m) for m in children.desired(body)}

    def all_there():
        have = {(o["kind"], o["metadata"]["name"]) for o in owned_children(cp, body["metadata"]["name"])}
        return have if wanted <= have else None

    eventually(all_there, f"every child of {body['metadata']['name']}: {sorted(wanted)}")
    return [o for o in owned_children(cp, body["metadata"]["name"]) if children.key(o) in wanted]


def act_as_strimzi(cp, objs: list[dict]) -> None:
    """What the Strimzi operator would write: Ready conditions on its resources."""
    for o in objs:
        if o["kind"] in STRIMZI_KINDS:
            cp.kubectl(
                "patch",
                o["kind"].lower(),
                o["metadata"]["name"],
                "-n",
                NS,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            )


def check_last_training(cp, status: dict) -> None:
    """lastTraining describes exactly one Job: Running has no finishedAt; finishedAt is that Job's."""
    lt = status.get("lastTraining")
    if not lt:
        return
    if lt["result"] == "Running":
        assert "finishedAt" not in lt, lt
    if "finishedAt" in lt:
        job = get(cp, "job", lt["job"])
        assert job is not None and job["status"].get("completionTime") == lt["finishedAt"], (lt, job and job["status"])


def test_operator_identity_is_least_privilege(operator):
    def can(verb_resource: str, ns: str = NS) -> bool:
        res = operator.cp.kubectl(
            "auth", "can-i", *verb_resource.split(), "-n", ns, check=False, kubeconfig=operator.kubeconfig
        )
        return res.stdout.strip() == "yes"

    assert can("create deployments") and can("patch streamingtrainings/status") and can("create events")
    assert can("update streamingtrainings --subresource=finalizers")  # OwnerReferencesPermissionEnforcement needs it
    assert not can("get secrets") and not can("create pods") and not can("delete namespaces")
    assert can("list endpointslices.discovery.k8s.io") and not can("get endpointslices.discovery.k8s.io")


def test_lifecycle_children_status_update_events_delete(operator):
    cp = operator.cp
    operator.start()
    body = create(cp, "plant-1")
    objs = wait_for_children(cp, body)
    uid = body["metadata"]["uid"]
    for o in objs:  # accepted by the server's admission (blockOwnerDeletion needs the finalizers right)
        assert o["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "streamtrain.io/v1alpha1",
                "kind": "StreamingTraining",
                "name": "plant-1",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], o["metadata"]

    # Conditions follow the real controllers: not ready while Strimzi has not reported ...
    def status():
        st = (get(cp, "streamingtraining", "plant-1") or {}).get("status") or {}
        check_last_training(cp, st)
        return st

    st = eventually(lambda: (s := status()).get("conditions") and s, "conditions")
    assert st["phase"] == "Progressing"
    # ... kwok-run Pods make the Deployments ready and the trainer Job complete; Strimzi's part is played here.
    act_as_strimzi(cp, objs)
    st = eventually(
        lambda: (s := status()).get("phase") == "Ready" and s,
        "phase Ready",
        timeout=180,
        explain=lambda: f"status: {status()}\n{cp.describe(NS)}",
    )
    assert all(c["status"] == "True" for c in st["conditions"]), st["conditions"]
    job = next(o for o in objs if o["kind"] == "Job")
    st = eventually(
        lambda: (s := status()).get("lastTraining", {}).get("result") == "Succeeded" and s,
        "training",
        explain=lambda: f"status: {status()}\n{cp.describe(NS)}",
    )
    done = get(cp, "job", job["metadata"]["name"])
    assert st["lastTraining"] == {
        "job": job["metadata"]["name"],
        "result": "Succeeded",
        "finishedAt": done["status"]["completionTime"],
    }
    table = cp.kubectl("get", "st", "plant-1", "-n", NS).stdout
    assert table.split("\n")[0].split()[:3] == ["NAME", "PHASE", "MODEL"] and " Ready " in table, table

    # A spec change patches children, prunes HiveMQ, and the new recipe's Job becomes lastTraining alone.
    spec = copy.deepcopy(body["spec"])
    spec["fleet"]["devices"] = 50
    spec["mqtt"] = {"mode": "external", "host": "mqtt.plant.example", "port": 8883}
    spec["model"]["epochs"] = 3
    cp.patch_spec(NS, "plant-1", spec)
    new_job = next(m["metadata"]["name"] for m in children.desired({**body, "spec": spec}) if m["kind"] == "Job")
    assert new_job != job["metadata"]["name"]

    def updated():
        sim = get(cp, "deployment", "plant-1-simulator")
        env = {e["name"]: e.get("value") for e in sim["spec"]["template"]["spec"]["containers"][0]["env"]}
        state = {
            "devices": env["STREAMTRAIN_DEVICES"],
            "hivemq gone": get(cp, "deployment", "plant-1-hivemq") is None,
            "jobs": [o["metadata"]["name"] for o in owned_children(cp, "plant-1") if o["kind"] == "Job"],
        }
        seen.append(state)
        return state["devices"] == "50" and state["hivemq gone"] and new_job in state["jobs"]

    seen: list[dict] = []
    try:
        eventually(updated, "the spec change reconciled")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; wanted Job {new_job}, last seen {seen[-1:]}") from None
    st = eventually(
        lambda: (
            (s := status()).get("lastTraining", {}).get("job") == new_job
            and s["lastTraining"]["result"] == "Succeeded"
            and s
        ),
        "the new Job in lastTraining",
    )
    assert st["lastTraining"]["finishedAt"] == get(cp, "job", new_job)["status"]["completionTime"]

    # A spec the operator cannot run: Failed, InvalidSpec, and a Kubernetes Event saying why.
    cp.patch_spec(NS, "plant-1", {"preprocessing": {"filter": "temperature >>> 3"}})
    st = eventually(lambda: (s := status()).get("phase") == "Failed" and s, "phase Failed")
    assert st["conditions"][0]["reason"] == "InvalidSpec" and "temperature" in st["conditions"][0]["message"]

    def event():
        evs = json.loads(
            cp.kubectl(
                "get", "events", "-n", NS, "-o", "json", "--field-selector", "involvedObject.name=plant-1"
            ).stdout
        )["items"]
        return [e for e in evs if "spec cannot run" in e.get("message", "")]

    evs = eventually(event, "an Event for the invalid spec")
    assert evs[0]["involvedObject"]["kind"] == "StreamingTraining" and evs[0]["type"] != "Normal", evs[0]

    # Delete: the resource goes, garbage collection takes every child.
    cp.kubectl("delete", "streamingtraining", "plant-1", "-n", NS, "--wait=true", "--timeout=60s")
    eventually(lambda: owned_children(cp, "plant-1") == [], "every child of plant-1 garbage-collected")
    assert operator.stop() == 0, operator.output()
    assert "Traceback" not in operator.output(), operator.output()


def test_production_children_under_the_operators_identity(operator):
    """The replicated, autoscaled example: the operator creates the budgets and KEDA's objects with its
    own RBAC; the autoscaled scorers' Deployment gets its count from the autoscaler, never from a patch."""
    cp = operator.cp
    operator.start()
    objs = wait_for_children(cp, create(cp, "fleet-1", "production"))
    kinds = {o["kind"] for o in objs}
    assert {"PodDisruptionBudget", "ScaledObject", "TriggerAuthentication", "KafkaNodePool"} <= kinds, kinds
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert len([o for o in objs if o["kind"] == "PodDisruptionBudget"]) == len(deployments)
    # What KEDA's HorizontalPodAutoscaler would do; the next reconcile must leave it be.
    cp.kubectl("scale", "deployment", "fleet-1-scorer", "-n", NS, "--replicas=5")
    cp.patch_spec(NS, "fleet-1", {"fleet": {"devices": 7}})
    eventually(
        lambda: get(cp, "streamingtraining", "fleet-1")["status"].get("observedGeneration") == 2,
        "the spec change reconciled",
    )
    assert get(cp, "deployment", "fleet-1-scorer")["spec"]["replicas"] == 5
    assert get(cp, "deployment", "fleet-1-preprocess")["spec"]["replicas"] == 3
    cp.kubectl("delete", "streamingtraining", "fleet-1", "-n", NS, "--wait=true", "--timeout=60s")
    eventually(lambda: owned_children(cp, "fleet-1") == [], "every child of fleet-1 garbage-collected")
    assert operator.stop() == 0, operator.output()
    assert "Traceback" not in operator.output(), operator.output()


def test_pinned_version_is_one_job_per_request_and_its_removal_unpins(operator):
    """scorer.pinnedVersion set, changed and removed by a user's merge patches: each request becomes its own
    Job (kwok completes its Pod), the older one is deleted with its Pods, and PinApplied follows the Job."""
    cp = operator.cp
    operator.start()
    wait_for_children(cp, create(cp, "plant-pin"))

    def requests() -> dict[str, dict]:
        return {
            o["metadata"]["name"]: o
            for o in owned_children(cp, "plant-pin")
            if o["kind"] == "Job" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "models"
        }

    def pods(job: str) -> list[dict]:
        out = cp.kubectl("get", "pods", "-n", NS, "-l", f"job-name={job}", "-o", "json").stdout
        return json.loads(out)["items"]

    def applied(generation: int):
        st = get(cp, "streamingtraining", "plant-pin").get("status") or {}
        conds = {c["type"]: c for c in st.get("conditions") or []}
        pin = conds.get("PinApplied", {})
        return pin.get("status") == "True" and pin.get("observedGeneration") == generation and pin

    assert requests() == {}
    cp.patch_spec(NS, "plant-pin", {"scorer": {"pinnedVersion": 2}})
    jobs = eventually(lambda: (r := requests()) and r, "the pin Job")
    assert list(jobs) == ["plant-pin-pin-2"]
    c = jobs["plant-pin-pin-2"]["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["models", "pin", "2"]
    assert "plant-pin-pin-2: succeeded" in eventually(lambda: applied(2), "PinApplied after the pin")["message"]
    assert pods("plant-pin-pin-2")

    cp.patch_spec(NS, "plant-pin", {"scorer": {"pinnedVersion": 3}})
    eventually(lambda: list(requests()) == ["plant-pin-pin-3"], "the newer request alone")
    eventually(lambda: pods("plant-pin-pin-2") == [], "the older request's Pods deleted with it")
    eventually(lambda: applied(3), "PinApplied after the second pin")

    cp.patch_spec(NS, "plant-pin", {"scorer": {"pinnedVersion": None}})  # the user removes the field
    eventually(lambda: list(requests()) == ["plant-pin-unpin"], "an unpin Job in place of the pin")
    unpin = requests()["plant-pin-unpin"]["spec"]["template"]["spec"]["containers"][0]
    assert unpin["args"] == ["models", "unpin"]
    eventually(lambda: applied(4), "PinApplied after the unpin")
    # Later reconciles keep it, and do not run it again.
    uid = requests()["plant-pin-unpin"]["metadata"]["uid"]
    cp.patch_spec(NS, "plant-pin", {"fleet": {"devices": 9}})
    eventually(lambda: applied(5), "the next spec change reconciled")
    assert requests()["plant-pin-unpin"]["metadata"]["uid"] == uid

    cp.kubectl("delete", "streamingtraining", "plant-pin", "-n", NS, "--wait=true", "--timeout=60s")
    eventually(lambda: owned_children(cp, "plant-pin") == [], "every child of plant-pin garbage-collected")
    assert operator.stop() == 0, operator.output()
    assert "Traceback" not in operator.output(), operator.output()


def created_then_operator_stopped(operator, name: str) -> dict:
    operator.start()
    body = create(operator.cp, name)
    wait_for_children(operator.cp, body)
    assert operator.stop() == 0, operator.output()
    return body


def test_delete_while_the_operator_is_down_leaves_nothing_stuck(operator):
    cp = operator.cp
    created_then_operator_stopped(operator, "plant-2")
    assert not get(cp, "streamingtraining", "plant-2")["metadata"].get("finalizers")
    cp.kubectl("delete", "streamingtraining", "plant-2", "-n", NS, "--wait=true", "--timeout=30s")
    eventually(lambda: owned_children(cp, "plant-2") == [], "every child of plant-2 garbage-collected")


def test_helm_uninstall_before_the_resources_then_namespace_deletion(operator):
    cp = operator.cp
    created_then_operator_stopped(operator, "plant-3")
    cp.helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout", "120s")
    assert get(cp, "deployment", "st-streamtrain", ns=RELEASE_NS) is None
    # CRDs stay (Helm never deletes crds/): the resource is still readable, and nothing blocks its deletion.
    assert get(cp, "streamingtraining", "plant-3") is not None
    cp.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=90s")
    assert cp.kubectl("get", "namespace", NS, check=False).returncode != 0
