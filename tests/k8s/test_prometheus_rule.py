"""The chart's PrometheusRule (metrics.prometheusRule.enabled) and ServiceMonitor, rendered by the Helm SDK
and validated against the Prometheus Operator's published CRD schemas (schemas/prometheus-operator-0.93.0);
the PrometheusRule embeds charts/streamtrain/rules/streamtrain-alerts.yaml, the file a local Prometheus loads."""

from __future__ import annotations

import copy
import json

import helm_python as helm
import jsonschema
import pytest
import yaml

from streamtrain.operator import validate
from streamtrain.stack.monitoring import CHART, RULES
from tests.k8s.conftest import ROOT

SCHEMAS = ROOT / "tests/k8s/schemas/prometheus-operator-0.93.0"
ENABLED = {
    "metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}, "serviceMonitor": {"enabled": True}}
}


def rendered(values: dict) -> list[dict]:
    out = helm.Chart.load(str(CHART)).render(values, name="st", namespace="streamtrain")
    return [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def validator(kind: str) -> jsonschema.Draft7Validator:
    data = json.loads((SCHEMAS / f"{kind}.json").read_text())
    return jsonschema.Draft7Validator(validate.to_jsonschema(data["openAPIV3Schema"]))


def test_prometheus_rule_is_off_by_default_and_is_the_rules_file_when_on():
    assert not [d for d in rendered({}) if d["kind"] == "PrometheusRule"]
    [rule] = [d for d in rendered(ENABLED) if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["labels"]["release"] == "kps"
    # No drift: the chart embeds the file a local Prometheus loads, rule for rule.
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


@pytest.mark.parametrize("kind", ["PrometheusRule", "ServiceMonitor"])
def test_monitoring_resources_validate_against_the_prometheus_operator_crd(kind):
    [doc] = [d for d in rendered(ENABLED) if d["kind"] == kind]
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(kind.lower()).iter_errors(doc)]
    assert errors == []


def test_prometheus_operator_schema_catches_a_mistake():
    [rule] = [d for d in rendered(ENABLED) if d["kind"] == "PrometheusRule"]
    bad = copy.deepcopy(rule)
    bad["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert list(validator("prometheusrule").iter_errors(bad))
    bad = copy.deepcopy(rule)
    bad["spec"]["groups"][0]["rules"][0]["severity"] = "critical"  # belongs under labels
    assert list(validator("prometheusrule").iter_errors(bad))


def test_servicemonitor_gives_series_the_labels_the_dashboard_and_alerts_group_by():
    [sm] = [d for d in rendered(ENABLED) if d["kind"] == "ServiceMonitor"]
    assert "app.kubernetes.io/instance" in sm["spec"]["targetLabels"]
    assert "app.kubernetes.io/part-of" in sm["spec"]["targetLabels"]
    assert sm["spec"]["podTargetLabels"] == ["app.kubernetes.io/component"]


def test_notes_point_to_the_alerts_only_when_monitoring_is_on():
    def notes(values: dict) -> str:
        out = helm.Chart.load(str(CHART)).render(values, name="st", namespace="pipelines")
        return next(t for p, t in out.items() if p.endswith("NOTES.txt"))

    assert "StreamTrain* alerts" not in notes({})
    text = notes(ENABLED)
    assert "get prometheusrule st-streamtrain-alerts" in text and "--namespace pipelines" in text
