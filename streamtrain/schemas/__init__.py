"""The records that travel between the programs, as JSON Schemas written once (docs/records.md).

``telemetry`` (device -> MQTT -> bridge -> raw topic), ``features`` (preprocessor -> features
topic) and ``score`` (Python and Kafka Streams scorers -> scores topic). The programs check
records with their own fast code, which takes its limits from these files (streamtrain/telemetry.py);
the tests of every producer, the Java scorer's included, validate what it really emits against them.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

NAMES = ("telemetry", "features", "score")


@functools.cache
def load(name: str) -> dict:
    """The schema ``name`` (one of NAMES) as a dict."""
    if name not in NAMES:
        raise ValueError(f"unknown record schema {name!r}; known: {', '.join(NAMES)}")
    return json.loads(resources.files(__name__).joinpath(f"{name}.schema.json").read_text())


@functools.cache
def validator(name: str):
    """A jsonschema validator of ``name`` (jsonschema comes with the `operator` and `dev` extras)."""
    import jsonschema  # noqa: PLC0415 - not a dependency of the programs themselves

    schema = load(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors(name: str, record) -> list[str]:
    """Why ``record`` is not a valid ``name`` record: one line per violation, empty when it is valid."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(record)'}: {e.message}"
        for e in sorted(validator(name).iter_errors(record), key=lambda e: list(map(str, e.absolute_path)))
    ]
