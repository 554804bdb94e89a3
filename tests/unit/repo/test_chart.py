"""The Helm chart rendered by a real Helm (helm-python-sdk: the Helm Go SDK, no binary), linted
strictly, and every manifest validated offline for several Kubernetes versions."""

from __future__ import annotations

import json
import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from streamtrain import __version__
from streamtrain.operator import kube, render, validate
from streamtrain.operator.render import strimzi
from tests.k8s.conftest import KUBE_VERSIONS, ROOT, load_example

CHART = ROOT / "charts/streamtrain"
EVERYTHING = {
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}, "prometheusRule": {"enabled": True}},
    "grafana": {"enabled": True},
}
#: Kinds served by CRDs of other projects: kubernetes-validate has no schema for them (the Prometheus
#: Operator's are checked against its CRD schemas in test_prometheus_rule.py).
FOREIGN = {"ServiceMonitor", "PrometheusRule"}


def rendered(values: dict | None = None, namespace: str = "streamtrain") -> list[dict]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values or {}, name="st", namespace=namespace)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def notes(values: dict | None = None, namespace: str = "streamtrain") -> str:
    out = helm.Chart.load(str(CHART)).render(values or {}, name="st", namespace=namespace)
    return next(t for p, t in out.items() if p.endswith("NOTES.txt"))


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything"])
def test_rendered_manifests_validate(values, version):
    docs = rendered(values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Pod"} <= kinds
    for d in docs:
        if d["kind"] not in FOREIGN:
            kubernetes_validate.validate(d, version, strict=True)
    crd = yaml.safe_load((CHART / "crds/streamingtrainings.yaml").read_text())
    kubernetes_validate.validate(crd, version, strict=True)


def test_optional_pieces_follow_their_flags():
    assert {d["kind"] for d in rendered()} & {"ServiceMonitor", "PrometheusRule"} == set()
    assert not [d for d in rendered() if d["kind"] == "ConfigMap"]
    docs = rendered(EVERYTHING)
    sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    # The ServiceMonitor selects exactly the metrics Services the operator renders per pipeline.
    spec = validate.defaulted(load_example(ROOT / "examples/minimal.yaml"))["spec"]
    svc = next(m for m in render.render("demo", "ns", spec) if m["metadata"]["name"] == "demo-metrics")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert any(p["name"] == "metrics" for p in svc["spec"]["ports"])
    dash = next(d for d in docs if d["kind"] == "ConfigMap")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["streamtrain.json"])["uid"] == "streamtrain"


def test_dashboard_queries_metrics_the_programs_export():
    source = "".join(
        p.read_text()
        for d in ("streamtrain", "bridge", "scorer", "preprocessor", "trainer")
        for p in (ROOT / d).rglob("*.py")
    )
    exported = set(re.findall(r'(?:Counter|Gauge|Histogram)\(\s*"([a-z_]+)"', source))
    dash = json.loads((CHART / "dashboards/streamtrain.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"streamtrain_[a-z_]+", t["expr"])}
    assert used
    for metric in used:
        assert re.sub(r"_(total|bucket)$", "", metric) in exported, metric


def test_labels_and_selectors():
    docs = rendered()
    for d in docs:
        labels = d["metadata"]["labels"]
        for key in ("name", "instance", "version", "component", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, (d["kind"], key)
        assert labels["helm.sh/chart"] == f"streamtrain-{__version__}"
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert set(dep["spec"]["selector"]["matchLabels"]) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert c["livenessProbe"]["httpGet"]["port"] == "health"
    assert "--standalone" in c["args"] and c["args"][-2:] == ["-m", "streamtrain.operator.handlers"]


def test_long_release_names_are_truncated_to_63():
    chart = helm.Chart.load(str(CHART))
    out = chart.render({}, name="a" * 60, namespace="ns")
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d and "metadata" in d:
                assert len(d["metadata"]["name"]) <= 63


def test_values_schema_rejects_bad_values():
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema({})
    for bad in (
        {"operator": {"replicas": 2, "image": {"repository": "x"}}},
        {"operator": {"image": {"repository": "x", "pullPolicy": "Sometimes"}, "replicas": 1}},
        {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
        {"typo": True},
    ):
        with pytest.raises(helm.HelmError):
            chart.validate_schema(bad)


def test_every_value_is_commented():
    """Each value has a "# --" comment right above it or above the block it belongs to."""
    lines = (CHART / "values.yaml").read_text().splitlines()

    def commented(i: int) -> bool:
        return i > 0 and lines[i - 1].strip().startswith("# --")

    def parent(i: int) -> int | None:
        indent = len(lines[i]) - len(lines[i].lstrip())
        for j in range(i - 1, -1, -1):
            s = lines[j]
            if s.strip() and not s.strip().startswith("#") and len(s) - len(s.lstrip()) < indent:
                return j
        return None

    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#") or s.endswith(":"):
            continue
        j: int | None = i
        while j is not None and not commented(j):
            j = parent(j)
        assert j is not None, f"uncommented value: {line!r}"


def test_rbac_is_commented_and_covers_every_child():
    text = (CHART / "templates/rbac.yaml").read_text()
    rule_lines = text.splitlines()
    for i, line in enumerate(rule_lines):
        if line.strip().startswith("- apiGroups:"):
            assert rule_lines[i - 1].strip().startswith("#"), f"rule without a reason: {line}"
    role = next(d for d in rendered() if d["kind"] == "ClusterRole")
    allowed = {
        (g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert all("*" not in v for v in allowed.values()) and all("*" not in r for _, r in allowed)
    for example in ("minimal", "full", "external", "production"):
        spec = validate.defaulted(load_example(ROOT / f"examples/{example}.yaml"))["spec"]
        for m in render.render("x", "ns", spec):
            group = m["apiVersion"].rpartition("/")[0]
            assert {"create", "patch", "get", "list", "delete"} <= allowed[(group, kube.PLURAL[m["kind"]])], m["kind"]
            assert m["kind"] in kube.KINDS[m["apiVersion"]], f"{m['kind']} is never listed: never pruned"
    assert allowed[("streamtrain.io", "streamingtrainings/status")] == {"get", "patch"}
    assert not any(r == "pods" for _, r in allowed), "the operator never reads Pods"
    # The model-signing Secret is created once and never read: no other verb on secrets, in any group.
    assert {(g, r): v for (g, r), v in allowed.items() if r == "secrets"} == {("", "secrets"): {"create"}}


def test_operator_and_test_pod_run_the_operator_image_without_tensorflow():
    """The operator's image (images/Dockerfile with EXTRAS=operator, tools/images/build.sh), not the
    programs' image that children run (the StreamingTraining's spec.image)."""
    docs = rendered()
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = next(d for d in docs if d["kind"] == "Pod")
    operator_image = f"ghcr.io/streamtrain/streamtrain-operator:{__version__}"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == operator_image
    assert pod["spec"]["containers"][0]["image"] == operator_image
    programs = validate.defaulted({"spec": {}})["spec"]["image"]
    assert f"{programs['repository']}:{programs['tag']}" != operator_image
    custom = rendered({"operator": {"image": {"repository": "r.example/op", "tag": "t1"}, "replicas": 1}})
    assert {
        c["image"]
        for d in custom
        if d["kind"] in ("Deployment", "Pod")
        for c in (d["spec"].get("template", d)["spec"]["containers"])
    } == {"r.example/op:t1"}


def test_helm_test_pod():
    pod = next(d for d in rendered() if d["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["command"] == ["python", "-m", "streamtrain.operator.selftest"]
    assert (ROOT / "operator/streamtrain_operator/selftest.py").exists()


def test_notes_name_the_namespace():
    text = notes(namespace="pipelines")
    assert "kubectl --namespace pipelines apply -f examples/minimal.yaml" in text
    assert (
        "helm install strimzi oci://quay.io/strimzi-helm/strimzi-kafka-operator --version 1.2.0 \\\n"
        "       --namespace pipelines"
    ) in text


def test_no_chart_dependency_and_strimzi_pinned_in_the_notes():
    """`helm install` of the folder fails while a dependency is missing from charts/ (even one behind a
    false condition), and fetching it needs the network: Strimzi is its own release, pinned."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert "dependencies" not in chart
    assert "--version 1.2.0" in notes()
    assert strimzi.STRIMZI_API == "kafka.strimzi.io/v1"  # what Strimzi 1.2.0 serves


@pytest.mark.parametrize("version", ["v1.29.0", "v1.32.0", "v1.37.0"])
def test_helm_lint_strict(version):
    """Strict lint of the chart as committed: no finding at all."""
    for values in ({}, EVERYTHING):
        report = helm.lint(str(CHART), values, strict=True, kube_version=version)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_watch_namespaces_scope_the_operator_to_a_role_in_each(version):
    """Issue 24: with watchNamespaces the operator holds rights only in those namespaces (a compromised
    operator cannot create Pods in kube-system); its ClusterRole keeps reading CRDs only."""
    cluster_wide = rendered()
    everywhere = next(d for d in cluster_wide if d["kind"] == "ClusterRole")["rules"]
    assert not [d for d in cluster_wide if d["kind"] in ("Role", "RoleBinding")]
    args = next(d for d in cluster_wide if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" in args["args"] and not any(a.startswith("--namespace") for a in args["args"])

    docs = rendered({"watchNamespaces": ["team-a", "team-b"]})
    for d in docs:
        if d["kind"] not in FOREIGN:
            kubernetes_validate.validate(d, version, strict=True)
    crd_rule = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"]}
    crd_rule["verbs"] = ["get", "list", "watch"]
    assert next(d for d in docs if d["kind"] == "ClusterRole")["rules"] == [crd_rule]
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for ns, role in roles.items():
        assert role["rules"] == [r for r in everywhere if r != crd_rule], ns
        assert bindings[ns]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]
        assert bindings[ns]["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
        ]
    c = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" not in c["args"]
    assert [a for a in c["args"] if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    # The status task lists only these namespaces (handlers.NAMESPACES reads this variable).
    assert {"name": "STREAMTRAIN_OPERATOR_NAMESPACES", "value": "team-a,team-b"} in c["env"]
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert {"name": "STREAMTRAIN_NAMESPACE", "value": "team-a"} in pod["spec"]["containers"][0]["env"]
    chart = helm.Chart.load(str(CHART))
    for bad in (["Team_A"], ["a", "a"], "team-a"):
        with pytest.raises(helm.HelmError):
            chart.validate_schema({"watchNamespaces": bad})
