"""The fake node the control-plane tests run Pods on (kwok) stays Ready the way a kubelet's does:
kwok renews the node's Lease, so the controller-manager never marks the node NotReady, and Pods stay
Ready past the controller-manager's grace period.

Without a lease the node's only heartbeat was kwok's status stage, about every 55 s, past the 50 s
grace: the node went NotReady each time, and the node-lifecycle controller marked every Pod on it
not ready for good (kwok readies Pending Pods only). A later test counting ready Pods then failed
whenever its Pods were created just before such a flap."""

from __future__ import annotations

import json
import time

import pytest

from tests.k8s.controlplane import FAKE_NODE
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "st-kwok"
GRACE = 50  # kube-controller-manager's --node-monitor-grace-period (its default in 1.35)


def test_the_fake_node_renews_its_lease_and_its_pods_stay_ready(control_plane):
    cp = control_plane
    cp.kubectl("create", "namespace", NS, check=False)
    cp.kubectl("create", "deployment", "steady", "-n", NS, "--image=busybox", "--replicas=2")

    def ready() -> bool:
        pods = json.loads(cp.kubectl("get", "pods", "-n", NS, "-l", "app=steady", "-o", "json").stdout)["items"]
        conds = [{c["type"]: c["status"] for c in p["status"].get("conditions", [])} for p in pods]
        return len(conds) == 2 and all(c.get("Ready") == "True" for c in conds)

    eventually(ready, "two ready Pods on the fake node", explain=lambda: cp.describe(NS))
    since, renewals = time.monotonic(), set()

    def watched_past_the_grace_period() -> bool:
        # Once ready, never not ready: a Pod marked not ready by a node flap stays so.
        assert ready(), f"a Pod lost Ready {time.monotonic() - since:.0f} s after it got it\n{cp.describe(NS)}"
        got = cp.kubectl("get", "lease", FAKE_NODE, "-n", "kube-node-lease", "-o", "json", check=False)
        lease = json.loads(got.stdout)["spec"] if got.returncode == 0 else {}
        if lease.get("holderIdentity"):
            renewals.add(lease["renewTime"])
        return time.monotonic() - since > GRACE + 15

    eventually(watched_past_the_grace_period, f"{GRACE + 15} s of ready Pods", timeout=GRACE + 75, every=2)
    assert len(renewals) >= 4, f"the node's lease was renewed {max(len(renewals) - 1, 0)} times in {GRACE + 15} s"
    flaps = [
        e
        for e in json.loads(cp.kubectl("get", "events", "-A", "-o", "json").stdout)["items"]
        if e["reason"] == "NodeNotReady"
    ]
    assert not flaps, [(e["involvedObject"]["name"], e["message"], e["lastTimestamp"]) for e in flaps]
    cp.kubectl("delete", "namespace", NS, "--wait=false")
