"""Signed model versions on by default, on a real kube-apiserver with the operator under the chart's
ServiceAccount (which may only create Secrets, never read them): each pipeline gets its key Secret once,
owned by the resource, holding a matching Ed25519 pair, never replaced by later reconciles, and the
trainer's and the scorers' Pods reference it.

Runs before test_real_operator.py, whose last test uninstalls the chart."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamtrain.modelsign import public_key_text
from tests.k8s.conftest import ROOT, load_example
from tests.k8s.operator_process import assert_secret_kept_across_a_reconcile, running_operator
from tests.k8s.operator_process import owned as owned_in
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "signing"
NAME = "signed"
SECRET = f"{NAME}-model-signing"


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory):
    with running_operator(crds, tmp_path_factory.mktemp("model-signing"), NS) as op:
        yield crds, op


def get(cp, kind: str, name: str) -> dict | None:
    return cp.get_object(kind, name, NS)


def owned(cp, kind: str, uid: str) -> list[dict]:
    return owned_in(cp, kind, NS, uid)


def test_operator_may_create_secrets_but_not_read_them(operator):
    cp, op = operator

    def can(verb: str) -> bool:
        res = cp.kubectl("auth", "can-i", verb, "secrets", "-n", NS, check=False, kubeconfig=op.kubeconfig)
        return res.stdout.strip() == "yes"

    assert can("create")
    assert not any(can(v) for v in ("get", "list", "watch", "update", "patch", "delete"))


def test_key_secret_created_once_owned_valid_and_referenced_by_the_trainer_and_scorers(operator):
    cp, op = operator
    body = {**load_example(ROOT / "examples/minimal.yaml"), "metadata": {"name": NAME, "namespace": NS}}
    cp.kubectl("create", "-f", "-", input=json.dumps(body))
    uid = get(cp, "streamingtraining", NAME)["metadata"]["uid"]

    secret = eventually(lambda: get(cp, "secret", SECRET), f"Secret {SECRET}", explain=op.output)
    refs = secret["metadata"].get("ownerReferences") or []
    assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [("StreamingTraining", NAME, uid)], refs
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert set(data) == {"signing-key.pem", "verify-keys"}
    private = serialization.load_pem_private_key(data["signing-key.pem"], password=None)
    assert isinstance(private, Ed25519PrivateKey)
    assert public_key_text(private.public_key()) == data["verify-keys"].decode()

    (job,) = eventually(lambda: owned(cp, "jobs", uid), "the training Job", explain=op.output)
    pod = job["spec"]["template"]["spec"]
    vols = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == SECRET]
    assert [v["secret"]["items"] for v in vols] == [[{"key": "signing-key.pem", "path": "signing-key.pem"}]]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["STREAMTRAIN_MODEL_SIGNING_KEY_FILE"]["value"].endswith("/signing-key.pem")

    def scorer() -> dict | None:
        return next((d for d in owned(cp, "deployments", uid) if d["metadata"]["name"] == f"{NAME}-scorer"), None)

    scorer_env = {
        e["name"]: e
        for e in eventually(scorer, "the scorer Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert scorer_env["STREAMTRAIN_MODEL_VERIFY_KEYS"]["valueFrom"] == {
        "secretKeyRef": {"name": SECRET, "key": "verify-keys"}
    }

    # A spec change reconciles again: the Secret is kept as it was (running scorers trust only its key).
    log = assert_secret_kept_across_a_reconcile(cp, op, NS, NAME, uid, secret)
    assert "PRIVATE KEY" not in log and data["verify-keys"].decode() not in log
    cp.kubectl("delete", "streamingtraining", NAME, "-n", NS, "--wait=true", "--timeout=60s")
