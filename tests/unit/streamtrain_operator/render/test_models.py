"""``scorer.pinnedVersion`` as rendered, without a cluster: one Job per request running ``streamtrain models
pin V`` (or ``unpin`` once the field is removed) under the trainer's Kafka identity, pruned when a newer
request replaces it; training Jobs are still never pruned. The Job against real Kafka and a running scorer:
tests/cli/test_models_pin_e2e.py; against a real API server: tests/k8s/test_real_operator.py."""

from __future__ import annotations

import pytest

from streamtrain.modelsign import KEY_PATTERN_MAX
from streamtrain.operator import children, status, validate
from streamtrain.operator.render import models, signing
from streamtrain.operator.render.connections import KAFKA_USER_MOUNT, kafka_user
from streamtrain.operator.render.programs import program_image
from tests.k8s.conftest import KUBE_VERSIONS, ROOT, load_example


def body(example: str = "secure", pinned: int | None = None) -> dict:
    b = load_example(ROOT / f"examples/{example}.yaml")
    b["metadata"].update(namespace="ns", uid="u-1")
    if pinned is not None:
        b["spec"].setdefault("scorer", {})["pinnedVersion"] = pinned
    return b


def requests(wanted: list[dict]) -> list[dict]:
    return [m for m in wanted if models.is_request(m)]


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_no_pin_no_job():
    assert requests(children.desired(body())) == []
    assert requests(children.desired(body(), existing=children.desired(body()))) == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_a_pinned_version_is_one_job_running_models_pin_as_the_trainer(version):
    import kubernetes_validate

    b = body(pinned=3)
    (job,) = requests(children.desired(b))
    kubernetes_validate.validate(job, version, strict=True)
    name = b["metadata"]["name"]
    assert job["metadata"]["name"] == f"{name}-pin-3"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    c = container(job)
    assert c["args"] == ["models", "pin", "3"]
    spec = validate.defaulted(b)["spec"]
    assert c["image"] == program_image("train", spec["image"])  # the image the models CLI runs in
    env = {e["name"]: e for e in c["env"]}
    # The trainer's KafkaUser (the only writer of the models topic), its password as a file.
    assert env["STREAMTRAIN_KAFKA_USERNAME"]["value"] == kafka_user(name, "train")
    assert any(m["mountPath"] == KAFKA_USER_MOUNT for m in c["volumeMounts"])
    # It checks the version is one the scorers accept (verify keys), and never sees the signing key.
    assert env["STREAMTRAIN_MODEL_VERIFY_KEYS"]["valueFrom"]["secretKeyRef"]["key"] == signing.VERIFY_KEYS
    assert "STREAMTRAIN_MODEL_SIGNING_KEY_FILE" not in env
    secret_keys = [
        i["key"] for v in job["spec"]["template"]["spec"]["volumes"] for i in v.get("secret", {}).get("items", [])
    ]
    assert signing.SIGNING_KEY not in secret_keys
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure" and pod["automountServiceAccountToken"] is False
    assert job["spec"]["backoffLimit"] == models.BACKOFF_LIMIT
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == models.COMPONENT


def test_each_request_is_its_own_job_and_replaces_the_last():
    pin3 = children.desired(body(pinned=3))
    pin4 = children.desired(body(pinned=4), existing=pin3)
    training = [m for m in pin3 if m["kind"] == "Job" and not models.is_request(m)]
    assert training, "the trainer's Job"
    (job4,) = requests(pin4)
    assert container(job4)["args"] == ["models", "pin", "4"]
    # The older request goes (its Pods with it); the training Job stays even when its recipe changes.
    old_training = {**training[0], "metadata": {**training[0]["metadata"], "name": "x-train-old"}}
    gone = {children.key(m) for m in children.stale([*pin3, old_training], pin4)}
    assert gone == {children.key(requests(pin3)[0])}


def test_removing_the_field_unpins_once_and_keeps_asking_nothing_else():
    pinned = children.desired(body(pinned=3))
    removed = children.desired(body(), existing=pinned)
    (unpin,) = requests(removed)
    assert container(unpin)["args"] == ["models", "unpin"]
    assert unpin["metadata"]["name"].endswith("-unpin")
    assert children.key(requests(pinned)[0]) in {children.key(m) for m in children.stale(pinned, removed)}
    # The unpin Job itself keeps being wanted (not pruned, not run again) until a new pin.
    again = children.desired(body(), existing=removed)
    assert requests(again) == [unpin]
    assert children.stale(removed, again) == []
    (repin,) = requests(children.desired(body(pinned=3), existing=again))
    assert container(repin)["args"] == ["models", "pin", "3"]


def test_the_pin_job_has_its_own_condition():
    wanted = children.desired(body(pinned=2))
    job = requests(wanted)[0]
    failed = {**job, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    conds = {c["type"]: c for c in status.conditions(children.observed_by_component(wanted, [failed]), [], 1)}
    assert conds["PinApplied"]["status"] == "False" and "failed" in conds["PinApplied"]["message"]
    assert conds["Ready"]["status"] == "False"
    done = {**job, "status": {"succeeded": 1}}
    conds = {c["type"]: c for c in status.conditions(children.observed_by_component(wanted, [done]), [], 1)}
    assert conds["PinApplied"]["status"] == "True"


def test_only_a_version_the_readers_accept_is_valid():
    assert validate.errors(body(pinned=5)) == []
    for bad in (0, KEY_PATTERN_MAX + 1):
        errors = validate.errors(body(pinned=bad))
        assert errors and "pinnedVersion" in " ".join(errors), (bad, errors)
