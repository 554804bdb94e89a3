"""The alerting rules checked by the real promtool (Debian's prometheus package): syntax, and a unit test
per alert that makes it fire and resolve; labelled dead-letter counters start at 0. The chart's
PrometheusRule (the same file) is tested below.

The chart's PrometheusRule (metrics.prometheusRule.enabled) and ServiceMonitor, rendered by the Helm SDK
and validated against the Prometheus Operator's published CRD schemas (schemas/prometheus-operator-0.93.0);
the PrometheusRule embeds charts/streamtrain/rules/streamtrain-alerts.yaml, the file a local Prometheus loads."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import jsonschema
import pytest
import yaml

from streamtrain.model import BadInput
from streamtrain.operator import validate
from streamtrain.preprocessing.compile import EvalError
from streamtrain.stack.monitoring import CHART, RULES
from tests.k8s.conftest import ROOT

HERE = ROOT / "tests" / "monitoring"
UNIT_TESTS = HERE / "alerts.test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `bash .ci/install` installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def rule_files() -> list[Path]:
    return sorted((CHART / "rules").glob("*.yaml"))


def alerts() -> list[str]:
    return [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_promtool_checks_every_rule_file(path):
    res = promtool("check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_refuses_a_broken_rule(tmp_path):
    broken = yaml.safe_load(RULES.read_text())
    broken["groups"][0]["rules"][0]["expr"] = "sum by (namespace) (rate(streamtrain_bridge_received_total[5m]) >"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    res = promtool("check", "rules", str(tmp_path / "broken.yaml"))
    assert res.returncode != 0 and "parse error" in res.stdout + res.stderr


def test_every_alert_fires_and_resolves_in_promtool_unit_tests():
    res = promtool("test", "rules", str(UNIT_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    # Each alert has a case where it fires and, later in the same case, one where it is resolved.
    covered = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        by_alert: dict[str, list] = {}
        for check in sorted(case["alert_rule_test"], key=lambda c: _minutes(c["eval_time"])):
            by_alert.setdefault(check["alertname"], []).append(bool(check["exp_alerts"]))
        for name, states in by_alert.items():
            if True in states and False in states[states.index(True) :]:
                covered.add(name)
    assert covered == set(alerts()), f"without a fire-and-resolve case: {set(alerts()) - covered}"
    assert len(alerts()) == 10


def test_unit_tests_fail_when_a_rule_changes(tmp_path):
    """The unit tests pin behaviour: a rule with another threshold fails them."""
    changed = RULES.read_text().replace("> 0.05", "> 0.07")
    assert changed != RULES.read_text()
    rules = tmp_path / "charts/streamtrain/rules"
    rules.mkdir(parents=True)
    (rules / RULES.name).write_text(changed)
    (tmp_path / "tests/monitoring").mkdir(parents=True)
    (tmp_path / "tests/monitoring" / UNIT_TESTS.name).write_text(UNIT_TESTS.read_text())
    res = promtool("test", "rules", str(tmp_path / "tests/monitoring" / UNIT_TESTS.name))
    assert res.returncode != 0 and "StreamTrainDeadLetterRateHigh" in res.stdout + res.stderr


def _minutes(t: str) -> float:
    return float(t[:-1]) * {"s": 1 / 60, "m": 1, "h": 60}[t[-1]]


def test_every_dead_letter_reason_is_exported_from_the_start():
    source = {p: p.read_text() for d in ("streamtrain", "preprocessor", "scorer") for p in (ROOT / d).rglob("*.py")}
    raised = {cls: set() for cls in ("EvalError", "BadInput")}
    for text in source.values():
        for cls in raised:
            raised[cls] |= set(re.findall(rf'{cls}\("([a-z_]+)"', text))
    assert raised["EvalError"] and raised["EvalError"] <= set(EvalError.REASONS)
    assert raised["BadInput"] and raised["BadInput"] <= set(BadInput.REASONS)


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
