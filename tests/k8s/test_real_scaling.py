"""Replicas, autoscaling and disruption budgets on a real kube-apiserver (``make test-k8s``): the
production example is accepted, replicas above the partition count are refused by the server's CEL
rules naming the field (also when partitions are lowered later), every rendered child — PDBs, KEDA's
ScaledObject and TriggerAuthentication (served from KEDA 2.21.0's CRDs), Strimzi's kinds, Deployments
with their topology spread — is accepted, and a rendered PDB selects its Deployment's real Pods."""

from __future__ import annotations

import copy
import json

import pytest

from streamtrain.operator import render, validate
from tests.k8s.conftest import ROOT, load_example
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "st-scaling"


@pytest.fixture(scope="module")
def cp(crds):
    crds.kubectl("create", "namespace", NS, check=False)
    return crds


def production() -> dict:
    r = load_example(ROOT / "examples/production.yaml")
    r["metadata"]["namespace"] = NS
    return r


def create(cp, obj: dict, *extra: str):
    return cp.kubectl("create", "-n", NS, "-f", "-", *extra, check=False, input=json.dumps(obj))


def dry_run(cp, obj: dict, *extra: str):
    return create(cp, obj, "--dry-run=server", *extra)


def test_production_example_is_accepted_as_written(cp):
    res = dry_run(cp, production(), "-o", "json")
    assert res.returncode == 0, res.stderr
    spec = json.loads(res.stdout)["spec"]
    assert (spec["kafka"]["replicas"], spec["kafka"]["replicationFactor"], spec["kafka"]["partitions"]) == (3, 3, 12)
    assert spec["preprocessing"]["replicas"] == 3 and spec["scorer"]["replicas"] == 3
    assert spec["scorer"]["autoscaling"] == {
        "enabled": True,
        "minReplicas": 3,
        "maxReplicas": 12,
        "lagThreshold": 5000,
        "pollingInterval": 15,
    }  # the server's default


BOUNDED = [
    ("spec.scorer.replicas", lambda s, n: s["scorer"].update(replicas=n)),
    ("spec.preprocessing.replicas", lambda s, n: s["preprocessing"].update(replicas=n)),
    ("spec.scorer.autoscaling.maxReplicas", lambda s, n: s["scorer"]["autoscaling"].update(maxReplicas=n)),
    ("spec.training.workers", lambda s, n: s["training"].update(workers=n)),
]


@pytest.mark.parametrize("field,change", BOUNDED, ids=[f for f, _ in BOUNDED])
def test_replicas_above_the_partitions_are_refused_naming_the_field(cp, field, change):
    at_limit, above = production(), production()
    change(at_limit["spec"], 12)
    change(above["spec"], 13)
    ok = dry_run(cp, at_limit)
    assert ok.returncode == 0, ok.stderr
    res = dry_run(cp, above)
    assert res.returncode != 0, f"the server accepted {field} = 13 with 12 partitions"
    assert f"{field}: Invalid value" in res.stderr and "cannot exceed kafka.partitions" in res.stderr, res.stderr
    assert validate.errors(above) and validate.errors(above)[0].startswith(f"{field}: Invalid value")  # the twin agrees


def test_lowering_the_partitions_below_the_replicas_is_refused(cp):
    body = production()
    body["metadata"]["name"] = "fleet-lower"
    res = create(cp, body)
    assert res.returncode == 0, res.stderr
    res = cp.kubectl(
        "patch",
        "streamingtraining",
        "fleet-lower",
        "-n",
        NS,
        "--type=merge",
        "--dry-run=server",
        "-p",
        json.dumps({"spec": {"kafka": {"partitions": 2}}}),
        check=False,
    )
    assert res.returncode != 0, "partitions lowered below the replicas"
    for field in ("spec.scorer.replicas", "spec.preprocessing.replicas", "spec.scorer.autoscaling.maxReplicas"):
        assert f"{field}: Invalid value" in res.stderr, res.stderr
    cp.kubectl("delete", "streamingtraining", "fleet-lower", "-n", NS, "--wait=true")


def rendered(resource: dict, change=None) -> list[dict]:
    r = copy.deepcopy(resource)
    if change:
        change(r["spec"])
    return render.render(r["metadata"]["name"], NS, validate.defaulted(r)["spec"])


def cases() -> dict[str, list[dict]]:
    minimal = load_example(ROOT / "examples/minimal.yaml")
    return {
        "production": rendered(production()),
        "minimal-autoscaled-plain-kafka": rendered(
            minimal,
            lambda s: s.update(
                kafka={"authentication": "none"}, scorer={"autoscaling": {"enabled": True, "maxReplicas": 4}}
            ),
        ),
        "full": rendered(load_example(ROOT / "examples/full.yaml")),
    }


@pytest.mark.parametrize("case", ["production", "minimal-autoscaled-plain-kafka", "full"])
def test_every_rendered_child_is_accepted_by_the_server(cp, case):
    children = cases()[case]
    kinds = {m["kind"] for m in children}
    assert "PodDisruptionBudget" in kinds and (case == "full" or "ScaledObject" in kinds)
    res = dry_run(cp, {"apiVersion": "v1", "kind": "List", "items": children}, "-o", "json")
    assert res.returncode == 0, res.stderr
    accepted, at = [], 0  # kubectl prints one JSON document per object
    while at < len(res.stdout.rstrip()):
        obj, at = json.JSONDecoder().raw_decode(res.stdout, at)
        accepted.append(obj)
        while at < len(res.stdout) and res.stdout[at].isspace():
            at += 1
    assert sorted((m["kind"], m["metadata"]["name"]) for m in accepted) == sorted(
        (m["kind"], m["metadata"]["name"]) for m in children
    )


def test_the_server_enforces_kedas_schema(cp):
    """A negative control: the served KEDA CRD is the real schema, with its CEL rule and closed fields."""
    so = next(m for m in cases()["production"] if m["kind"] == "ScaledObject")
    inverted = copy.deepcopy(so)
    inverted["spec"]["minReplicaCount"] = 20
    res = dry_run(cp, inverted)
    assert res.returncode != 0 and "minReplicaCount must be less than or equal to maxReplicaCount" in res.stderr, (
        res.stderr
    )
    typo = copy.deepcopy(so)
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    res = dry_run(cp, typo)
    assert res.returncode != 0 and 'unknown field "spec.maxReplicas"' in res.stderr, res.stderr


def test_a_rendered_budget_guards_its_deployments_real_pods(cp):
    """The disruption controller counts the Pods the budget selects: three preprocessors (kwok runs them),
    one of which a drain may evict."""
    children = cases()["production"]
    dep = next(m for m in children if m["kind"] == "Deployment" and m["metadata"]["name"] == "fleet-preprocess")
    pdb = next(
        m for m in children if m["kind"] == "PodDisruptionBudget" and m["metadata"]["name"] == "fleet-preprocess"
    )
    for obj in (dep, pdb):  # as rendered: kwok runs Pods without mounting their Secrets and ConfigMap
        res = create(cp, obj)
        assert res.returncode == 0, res.stderr

    def status() -> dict:
        return json.loads(cp.kubectl("get", "pdb", "fleet-preprocess", "-n", NS, "-o", "json").stdout).get("status", {})

    st = eventually(
        lambda: (s := status()).get("expectedPods") == 3 and s.get("currentHealthy") == 3 and s,
        "the budget counting three healthy preprocessors",
        timeout=120,
        explain=lambda: f"budget status: {status()}\n{cp.describe(NS)}",
    )
    assert st["disruptionsAllowed"] == 1 and st["desiredHealthy"] == 2, st
    pods = json.loads(
        cp.kubectl("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=preprocess", "-o", "json").stdout
    )["items"]
    assert len(pods) == 3
    selector = dep["spec"]["selector"]["matchLabels"]
    for p in pods:  # each Pod spreads against its own rollout: pod-template-hash kept, or merged into the selector
        spread = p["spec"]["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"], spread
        own = {"key": "pod-template-hash", "operator": "In", "values": [p["metadata"]["labels"]["pod-template-hash"]]}
        for c in spread:
            assert c["labelSelector"]["matchLabels"] == selector, spread
            assert c.get("matchLabelKeys") == ["pod-template-hash"] or own in c["labelSelector"].get(
                "matchExpressions", []
            ), spread
    cp.kubectl("delete", "deployment,pdb", "fleet-preprocess", "-n", NS, "--wait=true")
