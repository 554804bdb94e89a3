"""The record schemas (streamtrain/schemas) are the contract between the programs: valid schemas, the
reference page generated from them, and the records the simulator and the preprocessing engine really
make valid against them. The brokered producers (bridge, preprocess program, both scorers) are checked
in their end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pytest

from streamtrain import schemas
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.schemas.__main__ import markdown
from streamtrain.simulator.fleet import ANOMALY_KINDS, Fleet, FleetConfig
from streamtrain.simulator.hetero import HETERO_KINDS, HeteroConfig, HeterogeneousFleet
from streamtrain.simulator.publish import CsvReplayConfig, read_csv_rows
from tests.records import assert_valid

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", schemas.NAMES)
def test_each_schema_is_a_valid_json_schema(name):
    schema = schemas.load(name)
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["$id"].endswith(f"/{name}.schema.json")


def test_records_page_is_generated_from_the_schemas():
    assert (ROOT / "docs" / "records.md").read_text() == markdown(), (
        "docs/records.md is stale: python -m streamtrain.schemas > docs/records.md"
    )


def _fleet_messages(fleet, steps: int) -> list[dict]:
    out = []
    for k in range(steps):
        out += [msg for _, msg in fleet.messages(np.full(len(fleet.device_ids), 1.764e9 + k))]
    return out


def test_simulated_fleets_publish_valid_telemetry_including_every_anomaly_kind():
    uniform = _fleet_messages(Fleet(FleetConfig(devices=40, anomaly_rate=0.05)), 60)
    hetero = _fleet_messages(
        HeterogeneousFleet(HeteroConfig(devices=30, fault_fraction=0.3, anomaly_kinds=HETERO_KINDS)), 60
    )
    assert {m["anomaly"] for m in uniform} == {None, *ANOMALY_KINDS}
    assert {m["anomaly"] for m in hetero} == {None, *HETERO_KINDS}
    assert_valid("telemetry", uniform + hetero)


def test_csv_replay_publishes_valid_telemetry(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        "timestamp,machine,temp,rpm,note,is_fault\n2025-01-01T00:00:00Z,m-1,70.5,1500,ok,0\n"
        "2025-01-01T00:00:01Z,m-1,71,,ok,yes\n1735689602,m-2,69.9,1490,x,false\n"
    )
    rows = [
        m for _, m in read_csv_rows(CsvReplayConfig(path, device_column="machine", label_column="is_fault", speed=0))
    ]
    assert [m["label"] for m in rows] == [0, 1, 0]
    assert_valid("telemetry", rows)


@pytest.mark.parametrize(
    "spec", [PreprocessSpec.default(), PreprocessSpec.load(ROOT / "docs" / "fleet_spec.yaml")], ids=["default", "fleet"]
)
def test_preprocessing_engine_makes_valid_feature_records(spec):
    engine = Engine(spec)
    raw = _fleet_messages(Fleet(FleetConfig(devices=20, anomaly_rate=0.05)), 30)
    features = [r.features for r in map(engine.process, raw) if r.features is not None]
    assert len(features) > len(raw) // 2
    assert_valid("features", features)


def test_the_schemas_refuse_what_the_programs_refuse():
    good = {"device_id": "dev-1", "ts": 1.0, "seq": 0, "temperature": 1.5}
    assert schemas.errors("telemetry", good) == []
    for bad in (
        {**good, "device_id": "a/b"},
        {**good, "seq": -1},
        {**good, "temperature": "hot"},
        {**good, "label": 2},
        {k: v for k, v in good.items() if k != "seq"},
    ):
        assert schemas.errors("telemetry", bad), bad
    score = {
        "device_id": "dev-1",
        "seq": 0,
        "ts": 1.0,
        "model_version": 1,
        "score": 0.1,
        "threshold": 0.5,
        "is_anomaly": False,
        "scorer": "python-batch",
        "source": {"partition": 0, "offset": 3},
    }
    assert schemas.errors("score", score) == []
    assert any("baseline" in e for e in schemas.errors("score", {**score, "scorer": "kafka-streams"})), (
        "the live scorers' fields are required of them"
    )
    assert schemas.errors("score", {**score, "scorer": "java"})
    assert schemas.errors("score", {**score, "extra_field": 1}), "a field one scorer adds alone is drift"
