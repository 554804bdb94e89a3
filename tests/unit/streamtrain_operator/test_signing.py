"""Signed model versions on by default in the operator's pipelines: what each child sees of the key
Secret (pure rendering), and the key pair the operator puts in it."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamtrain.modelsign import ModelSigner, ModelTrust, parse_public_keys, public_key_text
from streamtrain.operator import render, signing, validate
from streamtrain.operator.render import signing as render_signing
from streamtrain.operator.render import trainer
from tests.k8s.conftest import ROOT, load_example

NAME = "demo"
SECRET = f"{NAME}-model-signing"


def children(example: str = "minimal", change=None) -> list[dict]:
    r = load_example(ROOT / f"examples/{example}.yaml")
    if change:
        change(r["spec"])
    return render.render(NAME, "pipelines", validate.defaulted(r)["spec"])


def pod_specs(ms: list[dict]) -> dict[tuple[str, str], dict]:
    """Pod spec of every child that has one, by (kind, name)."""
    out = {}
    for m in ms:
        spec = m.get("spec") or {}
        if m["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec and "containers" in spec["template"].get("spec", {}):
            out[(m["kind"], m["metadata"]["name"])] = spec["template"]["spec"]
    return out


def env_of(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for c in pod["containers"] for e in c.get("env") or []}


def schedule(spec: dict) -> None:
    spec.setdefault("training", {})["schedule"] = "0 * * * *"


@pytest.mark.parametrize("engine", ["python", "kafka-streams"])
def test_trainer_gets_only_the_private_key_file_and_every_scorer_the_verify_keys(engine):
    def change(spec):
        schedule(spec)
        spec["scorer"] = {"engine": engine}

    pods = pod_specs(children(change=change))
    trainers = {k: p for k, p in pods.items() if k[1].startswith(f"{NAME}-train")}
    assert {k[0] for k in trainers} == {"Job", "CronJob"}
    for key, pod in trainers.items():
        vols = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == SECRET]
        assert vols == [
            {
                "name": "model-signing",
                "secret": {
                    "secretName": SECRET,
                    "items": [{"key": "signing-key.pem", "path": "signing-key.pem"}],
                    "defaultMode": 0o440,
                },
            }
        ], key
        (mount,) = [m for c in pod["containers"] for m in c["volumeMounts"] if m["name"] == "model-signing"]
        assert mount["readOnly"] is True
        env = env_of(pod)
        assert env["STREAMTRAIN_MODEL_SIGNING_KEY_FILE"]["value"] == f"{mount['mountPath']}/signing-key.pem"
        # Its read-back then sees what the scorers accept.
        assert env["STREAMTRAIN_MODEL_VERIFY_KEYS"]["valueFrom"] == {
            "secretKeyRef": {"name": SECRET, "key": "verify-keys"}
        }
    scorer = pods[("Deployment", f"{NAME}-scorer")]
    env = env_of(scorer)
    assert env["STREAMTRAIN_MODEL_VERIFY_KEYS"] == {
        "name": "STREAMTRAIN_MODEL_VERIFY_KEYS",
        "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "verify-keys"}},
    }
    assert "STREAMTRAIN_MODEL_SIGNING_KEY_FILE" not in env
    assert not [v for v in scorer["volumes"] if "secret" in v and v["secret"]["secretName"] == SECRET]


@pytest.mark.parametrize("example", ["minimal", "full", "external", "secure", "production"])
def test_nothing_but_the_trainer_and_the_scorers_sees_the_key_secret(example):
    ms = children(example)
    for m in ms:
        assert m["kind"] != "Secret", "the key Secret is created once by the handler, never rendered"
    seen = {key for key, pod in pod_specs(ms).items() if SECRET in json.dumps(pod)}
    assert seen and {name.removeprefix(f"{NAME}-").split("-")[0] for _, name in seen} <= {"train", "scorer"}, seen
    for key, pod in pod_specs(ms).items():
        if key[1].startswith(f"{NAME}-train"):
            continue
        assert SECRET not in json.dumps(pod["volumes"]), key


def test_signing_disabled_renders_neither_the_key_nor_the_verify_keys():
    def off(spec):
        schedule(spec)
        spec["model"] = {"signing": {"enabled": False}}

    ms = children(change=off)
    text = json.dumps(ms)
    assert "model-signing" not in text and "MODEL_VERIFY_KEYS" not in text and "MODEL_SIGNING_KEY_FILE" not in text
    assert render_signing.secret_name(NAME, validate.defaulted(load_example(ROOT / "examples/minimal.yaml"))["spec"])


def test_a_secret_of_ones_own_replaces_the_generated_one():
    def own(spec):
        spec["model"] = {"signing": {"secretRef": {"name": "team-keys"}}}

    ms = children(change=own)
    text = json.dumps(ms)
    assert SECRET not in text and text.count('"team-keys"') >= 3  # trainer volume + trainer and scorer env
    spec = validate.defaulted({**load_example(ROOT / "examples/minimal.yaml"), "spec": {}})["spec"]
    assert render_signing.operator_made(spec)
    spec["model"]["signing"]["secretRef"] = {"name": "team-keys"}
    assert not render_signing.operator_made(spec)


def test_signing_is_part_of_the_training_recipe():
    """A Job's Pod template cannot change: turning signing on or off must name a new training Job."""
    spec = validate.defaulted(load_example(ROOT / "examples/minimal.yaml"))["spec"]
    on = trainer.training_hash(spec)
    spec["model"]["signing"]["enabled"] = False
    assert trainer.training_hash(spec) != on


def test_the_generated_secret_holds_a_fresh_ed25519_pair_that_verifies_as_the_scorers_read_it(tmp_path):
    secret = signing.new_secret(NAME, "pipelines")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == SECRET
    assert secret["metadata"]["namespace"] == "pipelines"
    data = secret["stringData"]
    assert set(data) == {"signing-key.pem", "verify-keys"}
    assert data["signing-key.pem"].startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8
    private = serialization.load_pem_private_key(data["signing-key.pem"].encode(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    assert public_key_text(private.public_key()) == data["verify-keys"]

    # What the trainer does with the file and the scorers with the keys: a signed manifest is accepted.
    (tmp_path / "signing-key.pem").write_text(data["signing-key.pem"])
    signer = ModelSigner.from_file(tmp_path / "signing-key.pem")
    trust = ModelTrust(parse_public_keys(data["verify-keys"]))
    assert trust.refusal(1, b"{}", [signer.header(b"{}")]) is None
    assert trust.refusal(1, b"{}", []) is not None

    assert signing.new_secret(NAME, "pipelines")["stringData"]["verify-keys"] != data["verify-keys"]
