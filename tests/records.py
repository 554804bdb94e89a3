"""Checks records that a producer really emitted against their schema (streamtrain/schemas)."""

from __future__ import annotations

import json

from streamtrain import schemas


def assert_valid(name: str, records) -> None:
    """Every record (a dict, or a Kafka message whose value is JSON) is a valid ``name`` record."""
    records = [json.loads(r.value()) if hasattr(r, "value") else r for r in records]
    assert records, f"no {name} records to check"
    bad = [(r, problems) for r in records if (problems := schemas.errors(name, r))]
    assert not bad, f"{len(bad)} of {len(records)} {name} records break {name}.schema.json; first: {bad[0]}"
