"""Which Secrets a pipeline's children mount or hand to KEDA: only those a StreamingTraining author names in
the documented fields below, or those the pipeline itself owns (the operator's model-signing Secret, the
Secrets Strimzi writes for the pipeline's own Kafka). And the operator may never read a Secret: its RBAC
grants only ``create`` (docs/security.md, "Secrets a pipeline may reach")."""

from __future__ import annotations

import copy

import helm_python as helm
import pytest
import yaml

from streamtrain.operator import render, validate
from streamtrain.operator.crd import spec_schema
from streamtrain.operator.render import connections, mqtt_tls
from streamtrain.operator.render import signing as render_signing
from streamtrain.operator.secret_refs import CHART_FILE, SECRET_REFERENCES, chart_file
from streamtrain.stack.monitoring import CHART
from tests.k8s.conftest import ROOT, load_example

#: The spec fields that name a Secret (the path to the reference's ``name``), as docs/security.md lists them.
DOCUMENTED = SECRET_REFERENCES
EXAMPLES = ("minimal", "full", "external", "secure", "production", "ingest-extension", "dev-external")


def _schema_secret_fields(node: dict, path: tuple = ()) -> set[tuple]:
    """Paths of every Secret-name field in the CRD schema: an object with a ``name`` and the word Secret in
    its own or its name's description."""
    found = set()
    props = node.get("properties") or {}
    name_desc = (props.get("name") or {}).get("description", "")
    if "name" in props and ("Secret" in node.get("description", "") or "Secret" in name_desc):
        found.add((*path, "name"))
    for key, child in props.items():
        if isinstance(child, dict):
            found |= _schema_secret_fields(child, (*path, key))
    return found


def test_every_secret_field_of_the_crd_is_documented():
    assert _schema_secret_fields(spec_schema()) == set(DOCUMENTED)
    doc = (ROOT / "docs/security.md").read_text()
    for path in DOCUMENTED:
        field = ".".join(k for k in path[:-1] if k != "secretKeyRef")
        assert f"`{field}`" in doc, path


def secret_names(node) -> set[str]:
    """Every Secret a manifest refers to: env secretKeyRef, secret volumes, projected sources, KEDA targets."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("secretKeyRef"), dict):
            found.add(node["secretKeyRef"]["name"])
        if isinstance(node.get("secret"), dict):
            found.add(node["secret"].get("secretName") or node["secret"]["name"])
        for target in node.get("secretTargetRef") or []:
            found.add(target["name"])
        for v in node.values():
            found |= secret_names(v)
    elif isinstance(node, list):
        for v in node:
            found |= secret_names(v)
    return found


def _named(spec: dict) -> set[str]:
    out: set[str] = set()
    for path in DOCUMENTED:
        node = spec
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):
            out.add(node)
    return out


@pytest.mark.parametrize("example", EXAMPLES)
def test_children_reach_only_named_or_own_secrets(example):
    r = load_example(ROOT / f"examples/{example}.yaml")
    name = r["metadata"]["name"]
    spec = validate.defaulted(r)["spec"]
    kids = render.render(name, "pipelines", spec)
    own = {render_signing.generated_name(name)} if render_signing.operator_made(spec) else set()
    if mqtt_tls.operator_made(spec):
        own.add(mqtt_tls.generated_name(name))
    if connections.mqtt_users_operator_made(spec):
        own.add(connections.mqtt_users_generated_name(name))
    if spec["kafka"]["mode"] == "managed":  # Strimzi writes these for the pipeline's own cluster and users
        own |= {m["metadata"]["name"] for m in kids if m["kind"] == "KafkaUser"}
        own.add(f"{name}-cluster-ca-cert")
    refs = set().union(*(secret_names(m) for m in kids))
    assert refs <= _named(spec) | own, refs - (_named(spec) | own)
    assert "Secret" not in {m["kind"] for m in kids}  # none rendered: no Secret's data is ever copied


def test_a_documented_field_is_the_only_way_to_name_a_secret():
    """Renaming every named Secret renames every reference: nothing else picks Secrets by convention."""
    r = load_example(ROOT / "examples/secure.yaml")
    spec = validate.defaulted(r)["spec"]
    before = set().union(*(secret_names(m) for m in render.render("secure", "pipelines", spec)))
    renamed = copy.deepcopy(spec)
    for path in DOCUMENTED:
        node = renamed
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            node[path[-1]] = f"renamed-{node[path[-1]]}"
    after = set().union(*(secret_names(m) for m in render.render("secure", "pipelines", renamed)))
    named = _named(spec)
    assert named and named <= before
    assert after == (before - named) | {f"renamed-{n}" for n in named}
    assert connections.kafka_user("secure", "bridge") not in named


def _docs(values: dict) -> list[dict]:
    out = helm.Chart.load(str(CHART)).render(values, name="st", namespace="streamtrain")
    return [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def _rules(values: dict) -> list[dict]:
    return [rule for d in _docs(values) if d["kind"] in ("ClusterRole", "Role") for rule in d["rules"]]


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a"]}], ids=["cluster", "namespaced"])
def test_the_operator_may_create_secrets_and_never_read_them(values):
    secrets = [r for r in _rules(values) if set(r["apiGroups"]) & {"", "*"} and set(r["resources"]) & {"secrets", "*"}]
    assert secrets and all(r["verbs"] == ["create"] for r in secrets)


def test_committed_admission_policy_matches_generator():
    assert (CHART / CHART_FILE).read_text() == chart_file(), "regenerate: make kube-crd"
