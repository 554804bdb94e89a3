"""`python -m streamtrain.schemas > docs/records.md`: the records' reference, generated from the schemas."""

from __future__ import annotations

import json

from streamtrain.schemas import NAMES, load

INTRO = """# The records

Generated from `streamtrain/schemas/*.schema.json` by `python -m streamtrain.schemas > docs/records.md`;
the schemas are the contract, this page only shows them (tests/unit/streamtrain/test_schemas.py keeps it in step).
A record travels as one UTF-8 JSON object per MQTT message or Kafka record value; its key is the
device id. Every producer's tests validate the records it really emits against its schema: the
simulator and the bridge (telemetry), the preprocessor (features), the Python scorer, the batch
scorer and the Kafka Streams scorer (score).
"""


def _type(spec: dict, schema: dict) -> str:
    if "$ref" in spec:
        spec = {**schema["$defs"][spec["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in spec.items() if k != "$ref"}}
    if "enum" in spec:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in spec["enum"])
    kind = spec.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    limits = [
        f"{word} {spec[key]}"
        for key, word in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("minLength", "length ≥"))
        if key in spec and abs(spec[key]) < 1e300
    ]
    if "pattern" in spec:
        limits.append(f"matching `{spec['pattern']}`")
    if abs(spec.get("maximum", 0)) >= 1e300:
        limits.append("finite")
    return text + (f" ({', '.join(limits)})" if limits else "")


def _rows(schema: dict, prefix: str = "") -> list[str]:
    required = set(schema.get("required", ()))
    always = set((schema.get("then") or {}).get("required", ()))
    rows = []
    for name, spec in schema.get("properties", {}).items():
        need = "yes" if name in required else "live scorers" if name in always else "no"
        rows.append(f"| `{prefix}{name}` | {_type(spec, schema)} | {need} | {spec.get('description', '')} |")
        if spec.get("type") == "object":
            rows += _rows(spec, f"{prefix}{name}.")
    return rows


def markdown() -> str:
    out = [INTRO]
    for name in NAMES:
        schema = load(name)
        out.append(f"## {schema['title']} (`streamtrain/schemas/{name}.schema.json`)\n\n{schema['description']}\n")
        out.append("| field | type | required | meaning |\n| --- | --- | --- | --- |")
        out += _rows(schema)
        extra = schema.get("additionalProperties")
        if extra:
            limit = f"; at most {schema['maxProperties']} fields in all" if "maxProperties" in schema else ""
            out.append(
                f"| any other | {_type(extra, schema)} | no | {extra.get('description', '').rstrip('.')}{limit} |"
            )
        else:
            out.append("\nNo other field.")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
