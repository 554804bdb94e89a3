"""The operator against kmock's Kubernetes API emulator (no kube-apiserver can be built here in time).

kopf runs in a thread (KopfRunner) and talks HTTP to the emulator served by this test's event loop,
so the test awaits while it runs. The emulator has no garbage collector: deletion is checked as
"the resource is gone and every child carries the owner reference GC follows"."""
from __future__ import annotations

import asyncio
import copy
import os
import time

import pytest
import yaml
from kopf.testing import KopfRunner

from tests.k8s.conftest import ROOT, load_example

# Before the handlers are imported (the interval is read once at import).
os.environ["STREAMTRAIN_OPERATOR_STATUS_INTERVAL"] = "0.5"

from streamtrain_operator import GROUP, PLURAL, VERSION, children, kube  # noqa: E402

NS = "plant"
CR_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
PATHS = {"Deployment": "/apis/apps/v1/namespaces/{ns}/deployments", "Service": "/api/v1/namespaces/{ns}/services",
         "ConfigMap": "/api/v1/namespaces/{ns}/configmaps", "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
         "CronJob": "/apis/batch/v1/namespaces/{ns}/cronjobs",
         "Kafka": "/apis/kafka.strimzi.io/v1/namespaces/{ns}/kafkas",
         "KafkaNodePool": "/apis/kafka.strimzi.io/v1/namespaces/{ns}/kafkanodepools",
         "KafkaTopic": "/apis/kafka.strimzi.io/v1/namespaces/{ns}/kafkatopics",
         "KafkaUser": "/apis/kafka.strimzi.io/v1/namespaces/{ns}/kafkausers"}
DEADLINE = 120.0  # generous: the machine is shared; passing runs take 10-25 s in total
# kmock matches each request against its whole request history, so every request costs more than the
# last: poll at a pace that keeps the history short (at 50 ms the test's own GETs made it CPU-bound).
POLL = 0.5
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


async def eventually(check, what: str, deadline: float = DEADLINE):
    """Poll ``check`` (sync, returns a truthy value when done) until it holds or the deadline passes."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except (KeyError, StopIteration, TypeError, IndexError) as exc:
            last = exc
        await asyncio.sleep(POLL)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def fetch(kmock, path: str) -> dict | None:
    async with kmock.get(path) as resp:
        return await resp.json() if resp.status == 200 else None


@pytest.fixture
def emulator(kmock, tmp_path, monkeypatch):
    kmock.resources.load_bundled()
    kmock.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(
        kind="StreamingTraining", namespaced=True, subresources={"status"}, verbs=VERBS)
    for plural, kind in (("kafkas", "Kafka"), ("kafkanodepools", "KafkaNodePool"), ("kafkatopics", "KafkaTopic"),
                         ("kafkausers", "KafkaUser")):
        kmock.resources[f"kafka.strimzi.io/v1/{plural}"] = kmock.ResourceInfo(
            kind=kind, namespaced=True, subresources={"status"}, verbs=VERBS)
    # One configuration for kopf's login and the operator's client, as in a laptop setup.
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "kmock",
              "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
              "users": [{"name": "kmock", "user": {}}],
              "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": NS}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube.client.cache_clear()  # a fresh client for this test's server and event loop
    yield kmock
    kube.client.cache_clear()


def watching(kmock) -> bool:
    return any(r.params.get("watch") in ("true", "1") and PLURAL in str(r.url) for r in list(kmock._requests))


def resource(example: str, uid: str) -> dict:
    body = load_example(ROOT / f"examples/{example}.yaml")
    body["metadata"].update(namespace=NS, uid=uid, resourceVersion="1", generation=1)  # kmock assigns neither
    return body


async def children_of(kmock, wanted: list[dict]) -> dict[tuple[str, str], dict]:
    out = {}
    for m in wanted:
        obj = await fetch(kmock, PATHS[m["kind"]].format(ns=NS) + "/" + m["metadata"]["name"])
        if obj is not None:
            out[children.key(m)] = obj
    return out


async def mark_ready(kmock, obj: dict) -> None:
    kind = obj["kind"]
    status = {"Deployment": {"readyReplicas": (obj.get("spec") or {}).get("replicas", 1)},
              "Job": {"succeeded": 1, "completionTime": "2026-11-25T09:00:00Z"},
              "Kafka": {"conditions": [{"type": "Ready", "status": "True"}]},
              "KafkaTopic": {"conditions": [{"type": "Ready", "status": "True"}]},
              "KafkaUser": {"conditions": [{"type": "Ready", "status": "True"}]}}.get(kind)
    if status is None:
        return
    url = PATHS[kind].format(ns=NS) + "/" + obj["metadata"]["name"] + "/status"
    async with kmock.patch(url, json={"status": status},
                           headers={"Content-Type": "application/merge-patch+json"}) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.asyncio
async def test_lifecycle_create_update_status_delete(emulator):
    kmock = emulator
    with KopfRunner(["run", "--standalone", "-A", str(ROOT / "operator/main.py")], timeout=60) as runner:
        await eventually(lambda: watching(kmock), "kopf to watch StreamingTrainings")

        # 1. Apply the full example: every child appears, each owned by the resource.
        body = resource("full", uid="uid-plant-7")
        async with kmock.post(CR_PATH, json=body) as resp:
            assert resp.status in (200, 201), await resp.text()
        wanted = children.desired(body)
        kinds = {m["kind"] for m in wanted}
        assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Deployment", "Job", "CronJob", "ConfigMap", "Service"} <= kinds
        found: dict = {}

        async def all_children():
            found.update(await children_of(kmock, wanted))
            return len(found) == len(wanted)
        end = time.monotonic() + DEADLINE
        while not await all_children():
            assert time.monotonic() < end, f"missing: {sorted(set(map(children.key, wanted)) - set(found))}"
            await asyncio.sleep(POLL)
        for obj in found.values():
            ref = obj["metadata"]["ownerReferences"]
            assert ref == [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "StreamingTraining", "name": "plant-7",
                            "uid": "uid-plant-7", "controller": True, "blockOwnerDeletion": True}], obj["metadata"]

        # 2. Status: conditions per child, not ready while the children are not.
        async def cr_status():
            return ((await fetch(kmock, f"{CR_PATH}/plant-7")) or {}).get("status") or {}
        end = time.monotonic() + DEADLINE
        while not (st := await cr_status()).get("conditions"):
            assert time.monotonic() < end, st
            await asyncio.sleep(POLL)
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        assert conds["Ready"] == "False" and conds["KafkaReady"] == "False" and conds["ScorerReady"] == "False"
        assert {"HivemqReady", "SimulatorReady", "BridgeReady", "PreprocessingReady", "TrainingReady"} <= set(conds)
        assert st["phase"] == "Progressing"

        # ... and they move as children become ready.
        for obj in found.values():
            await mark_ready(kmock, obj)
        end = time.monotonic() + DEADLINE
        while (st := await cr_status()).get("phase") != "Ready":
            assert time.monotonic() < end, st
            await asyncio.sleep(POLL)
        assert all(c["status"] == "True" for c in st["conditions"]), st["conditions"]
        assert st["lastTraining"]["result"] == "Succeeded"

        # 3. A spec change (fleet scaled, preprocessing and schedule changed, broker made external)
        #    patches the children, adds the new recipe's Job and prunes HiveMQ.
        changed = copy.deepcopy(body["spec"])
        changed["fleet"]["devices"] = 50
        changed["training"]["schedule"] = "@hourly"
        changed["preprocessing"]["filter"] = "temperature > -10"
        changed["mqtt"] = {"mode": "external", "host": "mqtt.plant.example", "port": 8883}
        async with kmock.patch(f"{CR_PATH}/plant-7", json={"spec": changed, "metadata": {"generation": 2}},
                               headers={"Content-Type": "application/merge-patch+json"}) as resp:
            assert resp.status == 200, await resp.text()
        new_body = {**body, "spec": changed}
        new_wanted = children.desired(new_body)
        new_job = next(m["metadata"]["name"] for m in new_wanted if m["kind"] == "Job")
        assert new_job not in {m["metadata"]["name"] for m in wanted}

        async def updated():
            sim = await fetch(kmock, PATHS["Deployment"].format(ns=NS) + "/plant-7-simulator")
            cron = await fetch(kmock, PATHS["CronJob"].format(ns=NS) + "/plant-7-train")
            queries = await fetch(kmock, PATHS["ConfigMap"].format(ns=NS) + "/plant-7-ksqldb-queries")
            job = await fetch(kmock, PATHS["Job"].format(ns=NS) + "/" + new_job)
            hivemq = await fetch(kmock, PATHS["Deployment"].format(ns=NS) + "/plant-7-hivemq")
            env = {e["name"]: e.get("value") for e in sim["spec"]["template"]["spec"]["containers"][0]["env"]}
            return (env["STREAMTRAIN_DEVICES"] == "50" and env["STREAMTRAIN_MQTT_HOST"] == "mqtt.plant.example"
                    and cron["spec"]["schedule"] == "@hourly" and "-10" in queries["data"]["queries.sql"]
                    and job is not None and hivemq is None)
        end = time.monotonic() + DEADLINE
        while not await updated():
            assert time.monotonic() < end, "spec change not reconciled"
            await asyncio.sleep(POLL)

        # ... and kopf has recorded it as handled. (A DELETE that reaches kmock while kopf is still
        # storing the handled spec leaves kopf re-running the update for ever against the emulator.)
        async def update_recorded():
            meta = ((await fetch(kmock, f"{CR_PATH}/plant-7")) or {}).get("metadata") or {}
            handled = (meta.get("annotations") or {}).get(f"{GROUP}/last-handled-configuration", "")
            progress = [k for k in meta.get("annotations") or {} if k.startswith(f"{GROUP}/reconcile")]
            return "temperature > -10" in handled and not progress
        end = time.monotonic() + DEADLINE
        while not await update_recorded():
            assert time.monotonic() < end, "kopf did not record the handled update"
            await asyncio.sleep(POLL)

        # 4. Delete: the resource goes away (no finalizer left behind); every remaining child is owned by it.
        async with kmock.delete(f"{CR_PATH}/plant-7") as resp:
            assert resp.status in (200, 202), await resp.text()
        end = time.monotonic() + DEADLINE
        while await fetch(kmock, f"{CR_PATH}/plant-7") is not None:
            assert time.monotonic() < end, "resource not deleted"
            await asyncio.sleep(POLL)
        remaining = await children_of(kmock, wanted + new_wanted)
        assert remaining
        for obj in remaining.values():
            assert [r["uid"] for r in obj["metadata"]["ownerReferences"]] == ["uid-plant-7"], obj["metadata"]["name"]
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
