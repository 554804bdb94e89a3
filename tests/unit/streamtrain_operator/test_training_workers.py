"""Training by several workers on Kubernetes: ``training.workers`` renders indexed Jobs (the one-off
Job and the CronJob's) and the headless Service that names their Pods; strict Kubernetes schemas;
and the hosts a worker's Pod reads, once the kubelet expands them, are the Cluster the trainer
builds (no cluster needed: the real-server tests apply the same manifests)."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from streamtrain.operator import validate
from streamtrain.operator.render.trainer import trainer
from streamtrain.operator.training_workers import expand, indexed_job_spec
from streamtrain.trainer.distributed import Cluster
from tests.k8s.conftest import KUBE_VERSIONS, ROOT, load_example


def rendered(workers: int, schedule: str = "") -> tuple[str, list[dict]]:
    r = load_example(ROOT / "examples/minimal.yaml")
    r["spec"].setdefault("training", {}).update(workers=workers, schedule=schedule)
    assert validate.errors(r) == []
    spec = validate.defaulted(r)["spec"]
    return r["metadata"]["name"], trainer(r["metadata"]["name"], "pipelines", spec)


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {m["kind"]: m for m in manifests}


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_indexed_training_validates_strictly(version):
    for m in rendered(3, schedule="@daily")[1]:
        kubernetes_validate.validate(m, version, strict=True)


def test_one_worker_is_the_plain_job():
    out = by_kind(rendered(1)[1])
    assert set(out) == {"Job"} and "completionMode" not in out["Job"]["spec"]


def test_each_pod_finds_the_cluster_and_its_own_index():
    name, out = rendered(2, schedule="@daily")
    kinds = by_kind(out)
    service, job, cron = kinds["Service"], kinds["Job"], kinds["CronJob"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    for spec in (job["spec"], cron["spec"]["jobTemplate"]["spec"]):  # the CronJob's Jobs too
        assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
        pod = spec["template"]["spec"]
        assert pod["subdomain"] == service["metadata"]["name"]
        # the Service selects every training Pod
        pod_labels = spec["template"]["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        field = env["STREAMTRAIN_TRAINING_JOB"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "metadata.labels['batch.kubernetes.io/job-name']"
        job_name = job["metadata"]["name"] if spec is job["spec"] else f"{name}-train-29012345"
        hosts = expand(env["STREAMTRAIN_WORKER_HOSTS"]["value"], {"STREAMTRAIN_TRAINING_JOB": job_name})
        for index in (0, 1):
            cluster = Cluster.from_env({"STREAMTRAIN_WORKER_HOSTS": hosts, "JOB_COMPLETION_INDEX": str(index)})
            assert cluster.index == index and cluster.workers == 2
            assert cluster.hosts[index] == f"{job_name}-{index}.{service['metadata']['name']}:2222"
        # the job-name variable is defined before the hosts that expand it (Kubernetes expands in order)
        names = [e["name"] for e in pod["containers"][0]["env"]]
        assert names.index("STREAMTRAIN_TRAINING_JOB") < names.index("STREAMTRAIN_WORKER_HOSTS")


def test_rendering_is_stable_between_reconciles():
    """A Job's template is immutable: the same spec must render the same Job every time."""
    assert rendered(2)[1] == rendered(2)[1]


def test_one_worker_is_refused_by_the_indexed_rendering():
    job = by_kind(rendered(1)[1])["Job"]
    with pytest.raises(ValueError):
        indexed_job_spec(copy.deepcopy(job["spec"]), "x", 1)
