"""Building blocks of the StreamingTraining CRD's OpenAPI v3 schema (crd.py assembles them): the
structural form of the preprocessing spec's JSON schema, typed leaves with defaults and bounds, and
the cross-field rules that bound replicas by partitions."""

from __future__ import annotations

from streamtrain.preprocessing.spec import PreprocessSpec, json_schema

#: Pydantic JSON-schema keys the Kubernetes structural schema does not accept.
_DROP = {"title", "$defs", "examples"}


def _structural(node: dict, defs: dict) -> dict:
    """Inline $refs, turn ``anyOf: [X, null]`` into ``nullable`` and exclusive bounds into inclusive ones."""
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        return _structural({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    out: dict = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue  # the API server drops a null default; so must the committed CRD and its offline twin
        if key == "anyOf":
            branches = [b for b in value if b.get("type") != "null"]
            if len(branches) == 1 and len(value) == 2:
                out.update(_structural(branches[0], defs))
                out["nullable"] = True
                continue
        if key == "exclusiveMinimum" and isinstance(value, (int, float)) and not isinstance(value, bool):
            # Integers (PositiveInt): the next one. Numbers: the bound itself (the structural schema's boolean
            # exclusiveMinimum has no JSON-Schema twin offline); the model refuses the bound when the operator
            # loads the spec, marking the resource as one that cannot run.
            out["minimum"] = value + 1 if node.get("type") == "integer" else value
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if out.get("additionalProperties") is False:
        del out[
            "additionalProperties"
        ]  # not allowed next to properties in a structural schema; validate.py closes objects
    return out


def preprocessing_schema() -> dict:
    raw = json_schema()
    schema = _structural(raw, raw.get("$defs", {}))
    schema["description"] = (
        "Preprocessing of raw telemetry into features: the same spec as "
        "`streamtrain preprocess --spec` (filter, features, derived, windows, label)"
    )
    schema["properties"]["engine"] = {
        "type": "string",
        "enum": ["embedded", "ksqldb"],
        "default": "embedded",
        "description": "embedded: the `streamtrain preprocess` program; ksqldb: a ksqlDB server running the rendered queries",
    }
    schema["properties"]["replicas"] = _int(
        "Preprocessor instances (embedded) or ksqlDB servers, one consumer group: at most kafka.partitions", 1, 1, 1024
    )
    schema["default"] = PreprocessSpec.default().model_dump(mode="json") | {"engine": "embedded", "replicas": 1}
    return schema


def secret_key_ref(what: str) -> dict:
    return {
        "type": "object",
        "description": f"{what}, only ever read from a Secret",
        "required": ["secretKeyRef"],
        "properties": {
            "secretKeyRef": {
                "type": "object",
                "required": ["name", "key"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "description": "Secret name (same namespace)"},
                    "key": {"type": "string", "minLength": 1, "description": "Key inside the Secret"},
                },
            }
        },
    }


def secret_key(what: str) -> dict:
    """A {name, key} reference to one key of a Secret in the resource's namespace."""
    return {
        "type": "object",
        "description": f"{what}, only ever read from a Secret",
        "required": ["name", "key"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "description": "Secret name (same namespace)"},
            "key": {"type": "string", "minLength": 1, "description": "Key inside the Secret"},
        },
    }


def _obj(description: str, properties: dict, **extra) -> dict:
    """An object whose default is made of its fields' defaults, spelled out.

    A real API server evaluates the CEL rules (``x-kubernetes-validations``) against each literal
    ``default`` *before* nested defaults are filled in, so ``default: {}`` under a rule that reads
    ``self.mode`` is rejected with "no such key: mode". Nested objects already carry their full
    default, so this composes down the tree."""
    default = {name: field["default"] for name, field in properties.items() if "default" in field}
    return {"type": "object", "description": description, "default": default, "properties": properties, **extra}


def _int(description: str, default: int | None, minimum: int | None = None, maximum: int | None = None) -> dict:
    s: dict = {"type": "integer", "description": description}
    if default is not None:
        s["default"] = default
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


def _num(description: str, default: float, minimum: float | None = None, maximum: float | None = None) -> dict:
    """A number with bounds. A fractional bound becomes a CEL rule: the API server (1.35) prints
    ``maximum: 0.5`` as "should be less than or equal to 0", which names the wrong limit."""
    s: dict = {"type": "number", "description": description, "default": default}
    rules = []
    for key, bound, op, word in (("minimum", minimum, ">=", "greater"), ("maximum", maximum, "<=", "less")):
        if bound is None:
            continue
        if float(bound).is_integer():
            s[key] = bound
        else:
            rules.append({"rule": f"self {op} {bound}", "message": f"should be {word} than or equal to {bound}"})
    if rules:
        s["x-kubernetes-validations"] = rules
    return s


def _str(description: str, default: str | None = None, **extra) -> dict:
    s: dict = {"type": "string", "description": description, **extra}
    if default is not None:
        s["default"] = default
    return s


CRON = r"^(@(hourly|daily|weekly|monthly|yearly)|(\S+\s+){4}\S+)$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
DNS_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


#: Consumers beyond the partition count of their topic get no partition: replicas are bounded by it. The
#: error names the field (fieldPath) although the rule reads two branches of the spec.
PARTITION_BOUNDS = [
    {
        "rule": "self.scorer.replicas <= self.kafka.partitions",
        "fieldPath": ".scorer.replicas",
        "message": "scorer.replicas cannot exceed kafka.partitions (a scorer beyond the partition count gets none)",
    },
    {
        "rule": "self.preprocessing.replicas <= self.kafka.partitions",
        "fieldPath": ".preprocessing.replicas",
        "message": "preprocessing.replicas cannot exceed kafka.partitions (an instance beyond the partition count "
        "gets none)",
    },
    {
        "rule": "self.training.workers <= self.kafka.partitions",
        "fieldPath": ".training.workers",
        "message": "training.workers cannot exceed kafka.partitions (each worker reads its own partitions)",
    },
    {
        "rule": "!has(self.scorer.autoscaling.maxReplicas) || self.scorer.autoscaling.maxReplicas <= self.kafka.partitions",
        "fieldPath": ".scorer.autoscaling.maxReplicas",
        "message": "scorer.autoscaling.maxReplicas cannot exceed kafka.partitions",
    },
    {
        "rule": "self.scorer.autoscaling.minReplicas <= (has(self.scorer.autoscaling.maxReplicas) "
        "? self.scorer.autoscaling.maxReplicas : self.kafka.partitions)",
        "fieldPath": ".scorer.autoscaling.minReplicas",
        "message": "scorer.autoscaling.minReplicas cannot exceed maxReplicas (empty: kafka.partitions)",
    },
]
