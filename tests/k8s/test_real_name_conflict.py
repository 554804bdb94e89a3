"""The operator touches only what it owns (issue 24, finding 1), on a real kube-apiserver with the
operator under the chart's ServiceAccount.

A tenant who may only manage StreamingTrainings in a namespace names one after objects another team
already has there. Before the fix the operator merge-patched them, made them its children (kopf.adopt),
and garbage collection deleted them with the tenant's resource; an object carrying our labels was pruned
as stale. Now they are left untouched (not even their resourceVersion moves), the resource says
NameConflict (condition, phase Failed, Event), and deleting it leaves them alive.

Runs before test_real_operator.py, whose last test uninstalls the chart."""

from __future__ import annotations

import asyncio
import json

import pytest

from streamtrain.operator import children, kube
from tests.k8s.conftest import ROOT, load_example
from tests.k8s.controlplane import kubeconfig
from tests.k8s.operator_process import Operator
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "shared"
TENANT = "tenant"
NAME = "victim"


@pytest.fixture(scope="module")
def setup(crds, tmp_path_factory):
    """The namespace, a tenant ServiceAccount that may only manage StreamingTrainings, the operator."""
    cp, workdir = crds, tmp_path_factory.mktemp("name-conflict")
    cp.kubectl("create", "namespace", NS)
    cp.kubectl("create", "serviceaccount", TENANT, "-n", NS)
    cp.kubectl(
        "create",
        "role",
        "streamingtrainings-only",
        "-n",
        NS,
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=streamingtrainings.streamtrain.io",
    )
    cp.kubectl(
        "create",
        "rolebinding",
        "tenant-streamingtrainings",
        "-n",
        NS,
        "--role=streamingtrainings-only",
        f"--serviceaccount={NS}:{TENANT}",
    )
    token = cp.kubectl("create", "token", TENANT, "-n", NS, "--duration", "2h").stdout.strip()
    tenant = workdir / "tenant.kubeconfig"
    tenant.write_text(
        kubeconfig(cp.server, cp.pki, user=f"system:serviceaccount:{NS}:{TENANT}", token=token, namespace=NS)
    )
    op = Operator(cp, workdir)
    yield cp, op, tenant
    if op.proc is not None:
        op.stop()
    cp.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def get(cp, kind: str, name: str) -> dict | None:
    return cp.get_object(kind, name, NS, "--show-managed-fields")


def create_as_admin(cp, obj: dict) -> dict:
    obj["metadata"]["namespace"] = NS
    cp.kubectl("create", "-f", "-", input=json.dumps(obj))
    return get(cp, obj["kind"].lower(), obj["metadata"]["name"])


def untouched(before: dict, after: dict | None) -> None:
    assert after is not None, f"{before['kind']}/{before['metadata']['name']} was deleted"
    for key in ("resourceVersion", "labels", "annotations", "ownerReferences", "managedFields"):
        assert after["metadata"].get(key) == before["metadata"].get(key), (key, before["metadata"], after["metadata"])
    for key in ("data", "spec"):
        assert after.get(key) == before.get(key), (key, before.get(key), after.get(key))


def run_in_process(op: Operator, monkeypatch, coroutine_fn):
    """Run kube's own calls in this process under the operator's identity (its ServiceAccount token)."""
    monkeypatch.setenv("KUBECONFIG", str(op.kubeconfig))
    kube.client.cache_clear()

    async def scenario():
        try:
            return await coroutine_fn()
        finally:
            await kube.client().close()

    try:
        return asyncio.run(scenario())
    finally:
        kube.client.cache_clear()


def configmap(name: str, data: dict, owner: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/managed-by": kube.FIELD_MANAGER}}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def test_tenant_may_only_manage_streamingtrainings(setup):
    cp, _, tenant = setup

    def can(verb_resource: str) -> bool:
        res = cp.kubectl("auth", "can-i", *verb_resource.split(), "-n", NS, check=False, kubeconfig=tenant)
        return res.stdout.strip() == "yes"

    assert can("create streamingtrainings.streamtrain.io") and can("delete streamingtrainings.streamtrain.io")
    assert not can("patch configmaps") and not can("delete services") and not can("create deployments")


def test_server_side_apply_removes_keys_we_stop_rendering_and_forces_nothing_of_others(setup, monkeypatch):
    """kube.apply against the real server: our removed key goes; a field another manager set to another
    value is refused (FieldConflict), not forced; only our own pre-SSA (Update) fields are taken over."""
    cp, op, _ = setup
    owner = create_as_admin(cp, {**load_example(ROOT / "examples/minimal.yaml"), "metadata": {"name": "ssa"}})
    uid = owner["metadata"]["uid"]

    async def apply_twice():
        first = await kube.apply(configmap("ssa-config", {"a": "1", "b": "2"}, owner), uid)
        second = await kube.apply(configmap("ssa-config", {"a": "1"}, owner), uid)
        return first, second

    assert run_in_process(op, monkeypatch, apply_twice) == ("created", "applied")
    cm = get(cp, "configmap", "ssa-config")
    assert cm["data"] == {"a": "1"}, cm["data"]
    assert [(m["manager"], m["operation"]) for m in cm["metadata"]["managedFields"]] == [(kube.FIELD_MANAGER, "Apply")]

    # Someone else changes a field we manage: not forced, reported, left as they set it.
    cp.kubectl(
        "patch", "configmap", "ssa-config", "-n", NS, "--type=merge", "--field-manager=kubectl-edit",
        "-p", json.dumps({"data": {"a": "theirs"}}),
    )  # fmt: skip

    async def apply_over_them():
        with pytest.raises(kube.FieldConflict, match="kubectl-edit"):
            await kube.apply(configmap("ssa-config", {"a": "1"}, owner), uid)

    run_in_process(op, monkeypatch, apply_over_them)
    assert get(cp, "configmap", "ssa-config")["data"] == {"a": "theirs"}

    # Written as operator versions before server-side apply did (merge patch, manager streamtrain-operator, operation Update):
    # the apply takes its own fields over and a removed key goes.
    create_as_admin(cp, configmap("ssa-legacy", {"a": "1", "b": "2"}, owner))
    cp.kubectl(
        "patch", "configmap", "ssa-legacy", "-n", NS, "--type=merge", f"--field-manager={kube.FIELD_MANAGER}",
        "-p", json.dumps({"data": {"a": "old"}}),
    )  # fmt: skip

    async def apply_legacy():
        return await kube.apply(configmap("ssa-legacy", {"a": "new"}, owner), uid)

    assert run_in_process(op, monkeypatch, apply_legacy) == "applied"
    assert get(cp, "configmap", "ssa-legacy")["data"]["a"] == "new"
    cp.kubectl("delete", "streamingtraining", "ssa", "-n", NS, "--wait=true", "--timeout=60s")


def test_objects_named_like_children_are_left_untouched_reported_and_survive_deletion(setup):
    cp, op, tenant = setup
    # Another team's objects, created first, named as the tenant's resource `victim` would name its children.
    config = create_as_admin(
        cp,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{NAME}-preprocessing", "labels": {"team": "b"}},
            "data": {"owner": "team-b", "preprocessing.yaml": "theirs"},
        },
    )
    service = create_as_admin(
        cp,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{NAME}-hivemq", "labels": {"team": "b"}},
            "spec": {"selector": {"app": "team-b-broker"}, "ports": [{"name": "mqtt", "port": 1884}]},
        },
    )
    # One carrying our labels under a name the resource does not render: before, pruned as stale.
    lookalike = create_as_admin(
        cp,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{NAME}-ksqldb",
                "labels": {"app.kubernetes.io/instance": NAME, "app.kubernetes.io/managed-by": kube.FIELD_MANAGER},
            },
            "data": {"owner": "team-c"},
        },
    )
    victims = [config, service, lookalike]

    op.start(STREAMTRAIN_OPERATOR_CONFLICT_RETRY="2")
    body = {**load_example(ROOT / "examples/minimal.yaml"), "metadata": {"name": NAME, "namespace": NS}}
    cp.kubectl("create", "-f", "-", input=json.dumps(body), kubeconfig=tenant)
    body = get(cp, "streamingtraining", NAME)
    uid = body["metadata"]["uid"]

    def status() -> dict:
        return (get(cp, "streamingtraining", NAME) or {}).get("status") or {}

    def conflict() -> dict | None:
        st = status()
        cond = next((c for c in st.get("conditions") or [] if c["type"] == "NameConflict"), None)
        return st if cond and cond["status"] == "True" and st.get("phase") == "Failed" else None

    st = eventually(conflict, "a NameConflict condition", explain=lambda: f"{status()}\n{op.output()}")
    message = next(c["message"] for c in st["conditions"] if c["type"] == "NameConflict")
    assert f"ConfigMap/{NAME}-preprocessing" in message and f"Service/{NAME}-hivemq" in message, message
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["reason"] == "NameConflict"

    def events() -> list[dict]:
        evs = json.loads(
            cp.kubectl(
                "get", "events", "-n", NS, "-o", "json", "--field-selector", f"involvedObject.name={NAME}"
            ).stdout
        )["items"]
        return [e for e in evs if e.get("reason") == "NameConflict" and e["involvedObject"]["uid"] == uid]

    def both_reported() -> list[dict] | None:
        evs = events()
        said = " ".join(e["message"] for e in evs)
        return evs if f"ConfigMap/{NAME}-preprocessing" in said and f"Service/{NAME}-hivemq" in said else None

    evs = eventually(both_reported, "NameConflict Events for the ConfigMap and the Service")
    assert {e["type"] for e in evs} == {"Warning"}, evs

    # The rest of the pipeline is created, owned by the resource.
    def own_children() -> set[tuple[str, str]]:
        items = json.loads(cp.kubectl("get", "deployments,services,configmaps,jobs", "-n", NS, "-o", "json").stdout)[
            "items"
        ]
        return {children.key(o) for o in items if kube.owned_by(o, uid)}

    eventually(lambda: ("Deployment", f"{NAME}-scorer") in own_children(), "the scorer Deployment")
    # Reconciles retried (every 2 s here) leave the other team's objects alone too.
    eventually(
        lambda: op.log.read_text().count(f"name_conflict ConfigMap/{NAME}-preprocessing exists") >= 3,
        "three reconciles meeting the conflict",
        explain=op.output,
    )
    for before in victims:
        untouched(before, get(cp, before["kind"].lower(), before["metadata"]["name"]))

    # The team removes its Service: the next retry creates ours, and only the ConfigMap stays in conflict.
    cp.kubectl("delete", "service", f"{NAME}-hivemq", "-n", NS, "--wait=true")
    eventually(lambda: ("Service", f"{NAME}-hivemq") in own_children(), "our HiveMQ Service", explain=op.output)

    def only_the_configmap() -> bool:
        cond = next((c for c in status().get("conditions") or [] if c["type"] == "NameConflict"), None)
        return bool(cond) and f"Service/{NAME}-hivemq" not in cond["message"]

    eventually(only_the_configmap, "NameConflict naming only the ConfigMap", explain=lambda: str(status()))

    # The tenant deletes the resource: its children go by garbage collection, the others' objects stay.
    cp.kubectl("delete", "streamingtraining", NAME, "-n", NS, "--wait=true", "--timeout=60s", kubeconfig=tenant)
    eventually(lambda: not own_children(), "every owned child garbage-collected")
    for before in (config, lookalike):
        untouched(before, get(cp, before["kind"].lower(), before["metadata"]["name"]))
    assert op.stop() == 0, op.output()
    assert "Traceback" not in op.output(), op.output()
