"""The indexed training Job for several workers: strict Kubernetes schemas, and the hosts and
index a worker reads resolve to the Cluster the trainer builds (no cluster needed)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from streamtrain.operator import validate
from streamtrain.operator.render.trainer import trainer
from streamtrain.operator.training_workers import indexed_training
from streamtrain.trainer.distributed import Cluster
from tests.k8s.conftest import KUBE_VERSIONS, ROOT, load_example


def plain_job() -> dict:
    r = load_example(ROOT / "examples/minimal.yaml")
    spec = validate.defaulted(r)["spec"]
    return next(m for m in trainer(r["metadata"]["name"], "pipelines", spec) if m["kind"] == "Job")


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_indexed_training_job_validates_strictly(version):
    for m in indexed_training(plain_job(), 3, until_ms=1_700_000_000_000):
        kubernetes_validate.validate(m, version, strict=True)


def test_each_pod_finds_the_cluster_and_its_own_index():
    service, job = indexed_training(plain_job(), 2, until_ms=1_700_000_000_000)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["STREAMTRAIN_UNTIL_MS"] == "1700000000000"  # every worker resolves the same range
    name = job["metadata"]["name"]
    for index in (0, 1):
        cluster = Cluster.from_env(
            {"STREAMTRAIN_WORKER_HOSTS": env["STREAMTRAIN_WORKER_HOSTS"], "JOB_COMPLETION_INDEX": str(index)}
        )
        assert cluster.index == index and cluster.workers == 2
        assert cluster.hosts[index] == f"{name}-{index}.{service['metadata']['name']}:2222"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    with pytest.raises(ValueError):
        indexed_training(plain_job(), 1, until_ms=0)
