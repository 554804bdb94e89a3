"""The CRD, the examples and the invalid resources against a real kube-apiserver (``make test-k8s``).

The offline checks (tests/unit/streamtrain_operator/test_crd.py) cannot see what only the server does: CEL rules evaluated
against literal defaults, its own error messages, pruning of unknown fields. These tests fail on a CRD
with ``default: {}`` under rules that read nested keys."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from tests.k8s.conftest import EXAMPLES, ROOT, load_example
from tests.unit.streamtrain_operator.test_crd import INVALID

pytestmark = pytest.mark.kube

NS = "st-validation"


@pytest.fixture(scope="module")
def namespace(crds):
    crds.kubectl("create", "namespace", NS, check=False)
    return crds


def server_create(cp, resource: dict, *extra: str):
    resource = {**resource, "metadata": {**resource["metadata"], "namespace": NS}}
    return cp.kubectl(
        "create", "--dry-run=server", "-n", NS, "-f", "-", *extra, check=False, input=json.dumps(resource)
    )


def test_crd_is_established_with_its_printer_columns(crds):
    crd = json.loads(crds.kubectl("get", "crd", "streamingtrainings.streamtrain.io", "-o", "json").stdout)
    conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conds["Established"] == "True" and conds["NamesAccepted"] == "True", crd["status"]
    assert conds.get("NonStructuralSchema", "False") == "False"
    cols = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols == ["Phase", "Model", "AnomalyRate", "Age"]


def test_server_reports_its_real_version(crds):
    version = json.loads(crds.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"].startswith("v1.") and version["minor"].isdigit(), version


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_is_accepted(namespace, path):
    res = server_create(namespace, load_example(path))
    assert res.returncode == 0, res.stderr


def test_defaults_are_filled_by_the_server(namespace):
    res = server_create(namespace, load_example(ROOT / "examples/minimal.yaml"), "-o", "json")
    assert res.returncode == 0, res.stderr
    spec = json.loads(res.stdout)["spec"]
    assert spec["mqtt"]["mode"] == "managed" and spec["kafka"]["replicationFactor"] == 1
    assert spec["fleet"]["devices"] == 100 and spec["scorer"]["challenger"]["enabled"] is False
    assert spec["model"]["layers"] == [16, 4, 16]


def _limit(message: str) -> str | None:
    m = re.search(r"(?:minimum of|maximum of|than or equal to) (?!the )(\S+)", message)
    return m.group(1) if m else None


@pytest.mark.parametrize("spec,message", INVALID, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(INVALID)])
def test_invalid_resources_rejected_naming_field_and_limit(namespace, spec, message):
    resource = copy.deepcopy(load_example(ROOT / "examples/minimal.yaml"))
    resource["spec"] = spec
    res = server_create(namespace, resource)
    assert res.returncode != 0, f"the server accepted {spec}"
    field = message.split(":")[0]
    assert field in res.stderr, res.stderr
    limit = _limit(message)
    if limit is not None:  # the server must state the real limit (it once said 0 for anomalyRate's 0.5)
        # An exclusive bound: "0 is less than or equal to the minimum of 0" offline, "greater than 0" from the server.
        exclusive = re.search(r"(?:less|greater) than or equal to the (minimum|maximum) of", message)
        wording = (
            "than or equal to" if not exclusive else {"minimum": "greater than", "maximum": "less than"}[exclusive[1]]
        )
        assert re.search(rf"{re.escape(field)}\b.*{wording} {re.escape(limit)}\b", res.stderr), res.stderr


def test_a_whole_ingest_mapping_is_accepted_and_kept(namespace):
    """spec.ingest.mapping: the fields of a mapping file, kept as written (no defaults filled in: a field left out
    keeps the preset's value), and one the model does not have refused, not pruned."""
    resource = copy.deepcopy(load_example(ROOT / "examples/minimal.yaml"))
    mapping = {"ts_timezone": "Europe/Berlin", "rename": {"ENERGY_Power": "watts"}, "exclude": ["*Unit"], "hold_s": 60}
    resource["spec"]["ingest"] = {"preset": "tasmota", "topics": ["home/tele/{device_id}/SENSOR"], "mapping": mapping}
    resource["spec"]["mqtt"] = {"authentication": "none"}  # other topics than devices/<user>/telemetry: named
    res = server_create(namespace, resource, "-o", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["spec"]["ingest"]["mapping"] == mapping
    resource["spec"]["ingest"]["mapping"] = {**mapping, "timezone": "UTC"}
    res = server_create(namespace, resource)
    assert res.returncode != 0 and 'unknown field "spec.ingest.mapping.timezone"' in res.stderr, res.stderr


def test_unknown_fields_are_refused_not_pruned(namespace):
    resource = load_example(ROOT / "examples/minimal.yaml")
    resource["spec"]["fleet"] = {"size": 10}
    res = server_create(namespace, resource)  # kubectl asks for strict field validation by default
    assert res.returncode != 0 and 'unknown field "spec.fleet.size"' in res.stderr, res.stderr


def test_committed_crd_file_is_what_the_server_got(crds):
    served = json.loads(crds.kubectl("get", "crd", "streamingtrainings.streamtrain.io", "-o", "json").stdout)
    committed = yaml.safe_load((ROOT / "charts/streamtrain/crds/streamingtrainings.yaml").read_text())
    assert served["spec"]["versions"][0]["schema"] == committed["spec"]["versions"][0]["schema"]
