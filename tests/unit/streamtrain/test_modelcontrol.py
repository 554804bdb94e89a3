"""The rule both scorer engines follow and `streamtrain models` reports, and the control records it reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamtrain.modelcontrol import (
    BadControl,
    ModelControl,
    pin_record,
    promote_record,
    rollback_target,
    serving_version,
)

#: Shared with the Kafka Streams scorer's unit tests (ModelRegistryTest reads the same file).
CASES = json.loads((Path(__file__).resolve().parents[3] / "tests" / "serving_rule_cases.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_serving_rule_and_rollback_target(case):
    healthy = {int(v): ok for v, ok in case["healthy"].items()}
    control = ModelControl(promoted=case.get("promoted"), pinned=case.get("pinned"))
    assert serving_version(healthy, control) == case["serves"]
    assert rollback_target(healthy, control) == case["rollback"]


def test_control_records_fold_to_the_newest_request_of_each_kind():
    records = [promote_record(2), pin_record(1), (b"model/3/manifest", b"{}"), pin_record(None), pin_record(3)]
    assert ModelControl.of(records) == ModelControl(promoted=2, pinned=3)
    assert ModelControl.of([pin_record(3), pin_record(None)]) == ModelControl()
    assert ModelControl().read(b"control/other", b'{"version": 1}') == ModelControl()  # a newer kind: ignored
    for value in (None, b"[]", b'{"version": "1"}', b'{"version": -1}', b'{"version": true}'):
        with pytest.raises(BadControl):
            ModelControl().read(b"control/pin", value)
    with pytest.raises(BadControl):
        ModelControl().read(b"control/promote", b'{"version": null}')
