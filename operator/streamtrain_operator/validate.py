"""Offline checks of a StreamingTraining against the CRD, with the messages the API server would give.

The API server enforces the openAPIV3Schema and evaluates the CEL rules (x-kubernetes-validations).
Here the schema is checked with ``jsonschema`` (objects closed, as ``kubectl`` strict field
validation does) and each CEL rule by its Python twin in ``CEL_TWINS``; a test fails if a rule
has no twin. The same module fills in the schema's defaults, as the API server does on create.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import jsonschema

from streamtrain.operator.crd import crd


def _get(d: dict, path: str, default: Any = None) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


#: CEL rule (as written in the CRD) -> the same predicate in Python, over the defaulted object.
CEL_TWINS: dict[str, Callable[[Any], bool]] = {  # a rule's `self` is an object or a number
    "!has(self.secretRef) || self.enabled": lambda s: "secretRef" not in s or bool(s.get("enabled", True)),
    "self.mode == 'managed' || !has(self.tls) || !has(self.tls.secretRef)": lambda s: (
        s.get("mode", "managed") == "managed" or "secretRef" not in (s.get("tls") or {})
    ),
    "self.metadata.name.size() <= 40": lambda r: len(_get(r, "metadata.name", "")) <= 40,
    "self.mode != 'external' || has(self.host)": lambda s: s.get("mode") != "external" or "host" in s,
    "self.mode != 'external' || has(self.bootstrap)": lambda s: s.get("mode") != "external" or "bootstrap" in s,
    "self.replicationFactor <= self.replicas || self.mode == 'external'": lambda s: (
        s.get("replicationFactor", 1) <= s.get("replicas", 1) or s.get("mode") == "external"
    ),
    "self.mode != 'external' || !has(self.authentication) || self.authentication != 'scram-sha-512' "
    "|| (has(self.username) && has(self.passwordSecretRef))": lambda s: (
        s.get("mode") != "external"
        or s.get("authentication") != "scram-sha-512"
        or ("username" in s and "passwordSecretRef" in s)
    ),
    "self.mode == 'external' || (!has(self.username) && !has(self.passwordSecretRef) && !has(self.caSecretRef))": lambda s: (
        s.get("mode") == "external" or not ({"username", "passwordSecretRef", "caSecretRef"} & set(s))
    ),
    "(!has(self.username) && !has(self.passwordSecretRef) && !has(self.caSecretRef)) "
    "|| (has(self.authentication) && self.authentication == 'scram-sha-512')": lambda s: (
        not ({"username", "passwordSecretRef", "caSecretRef"} & set(s)) or s.get("authentication") == "scram-sha-512"
    ),
    "self.fleet.simulated == false || self.mqtt.mode == 'managed' || has(self.mqtt.host)": lambda s: (
        not _get(s, "fleet.simulated", True) or _get(s, "mqtt.mode") == "managed" or "host" in s["mqtt"]
    ),
    "!has(self.authentication) || self.authentication != 'credentials' || self.mode == 'managed'": lambda s: (
        s.get("authentication") != "credentials" or s.get("mode") == "managed"
    ),
    "!has(self.usersSecretRef) || (has(self.username) && has(self.password))": lambda s: (
        "usersSecretRef" not in s or {"username", "password"} <= set(s)
    ),
    "has(self.usersSecretRef) || self.mode == 'external' || (has(self.authentication) "
    "&& self.authentication == 'none') || (!has(self.username) && !has(self.password))": lambda s: (
        "usersSecretRef" in s
        or s.get("mode") == "external"
        or s.get("authentication") == "none"
        or not ({"username", "password"} & set(s))
    ),
    "!has(self.usersSecretRef) || (self.mode == 'managed' && (!has(self.authentication) "
    "|| self.authentication == 'credentials'))": lambda s: (
        "usersSecretRef" not in s
        or (s.get("mode") == "managed" and s.get("authentication", "credentials") == "credentials")
    ),
    "self.fleet.simulated == false || !has(self.mqtt.usersSecretRef) || has(self.fleet.credentialsSecretRef)": lambda s: (
        not _get(s, "fleet.simulated", True)
        or "usersSecretRef" not in s["mqtt"]
        or "credentialsSecretRef" in s["fleet"]
    ),
    # Fractional bounds (crd._num, model_settings): fleet.anomalyRate, model.validationFraction.
    "self <= 0.5": lambda v: v <= 0.5,
    "self < 0.5": lambda v: v < 0.5,
    "!has(self.fleet.credentialsSecretRef) || has(self.mqtt.usersSecretRef)": lambda s: (
        "credentialsSecretRef" not in s["fleet"] or "usersSecretRef" in s["mqtt"]
    ),
    "self.scorer.replicas <= self.kafka.partitions": lambda s: (
        _get(s, "scorer.replicas") <= _get(s, "kafka.partitions")
    ),
    "self.preprocessing.replicas <= self.kafka.partitions": lambda s: (
        _get(s, "preprocessing.replicas") <= _get(s, "kafka.partitions")
    ),
    "self.mqtt.ingest != 'extension' || self.mqtt.mode == 'managed'": lambda s: (
        _get(s, "mqtt.ingest") != "extension" or _get(s, "mqtt.mode") == "managed"
    ),
    "self.mqtt.ingest != 'extension' || (has(self.kafka.authentication) "
    "? self.kafka.authentication == 'none' : self.kafka.mode == 'external')": lambda s: (
        _get(s, "mqtt.ingest") != "extension"
        or (
            _get(s, "kafka.authentication") == "none"
            if "authentication" in s["kafka"]
            else _get(s, "kafka.mode") == "external"
        )
    ),
    "self.training.workers <= self.kafka.partitions": lambda s: (
        _get(s, "training.workers") <= _get(s, "kafka.partitions")
    ),
    "!has(self.scorer.autoscaling.maxReplicas) || self.scorer.autoscaling.maxReplicas <= self.kafka.partitions": lambda s: (
        _get(s, "scorer.autoscaling.maxReplicas", 0) <= _get(s, "kafka.partitions")
    ),
    "self.scorer.autoscaling.minReplicas <= (has(self.scorer.autoscaling.maxReplicas) "
    "? self.scorer.autoscaling.maxReplicas : self.kafka.partitions)": lambda s: (
        _get(s, "scorer.autoscaling.minReplicas")
        <= _get(s, "scorer.autoscaling.maxReplicas", _get(s, "kafka.partitions"))
    ),
    "self.model.kind != 'windowed' || (has(self.preprocessing.sequences) "
    "&& self.preprocessing.engine == 'embedded')": lambda s: (
        _get(s, "model.kind") != "windowed"
        or (_get(s, "preprocessing.sequences") is not None and _get(s, "preprocessing.engine") == "embedded")
    ),
    "!has(self.model.smoothing) || self.model.kind == 'windowed'": lambda s: (
        "smoothing" not in s["model"] or _get(s, "model.kind") == "windowed"
    ),
    "(self.ingest.preset == 'streamtrain' && !has(self.ingest.mapping)) || self.mqtt.mode == 'external' "
    "|| (has(self.mqtt.authentication) && self.mqtt.authentication == 'none')": lambda s: (
        (_get(s, "ingest.preset") == "streamtrain" and "mapping" not in s["ingest"])
        or _get(s, "mqtt.mode") == "external"
        or s["mqtt"].get("authentication") == "none"
    ),
    "!has(self.ingest.topics) || self.ingest.preset != 'streamtrain' || has(self.ingest.mapping)": lambda s: (
        "topics" not in s["ingest"] or _get(s, "ingest.preset") != "streamtrain" or "mapping" in s["ingest"]
    ),
}


def openapi_schema() -> dict:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def to_jsonschema(node: dict) -> dict:
    """OpenAPI v3 (structural) -> JSON Schema: nullable becomes a null type, objects are closed."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.get("nullable"):
        out.pop("nullable")
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    for side in ("Minimum", "Maximum"):  # OpenAPI v3.0 flags a bound exclusive; JSON Schema names it
        if out.pop(f"exclusive{side}", False):
            out[f"exclusive{side}"] = out.pop(side.lower())
    if "properties" in node:
        out["properties"] = {k: to_jsonschema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if "items" in node:
        out["items"] = to_jsonschema(node["items"])
    return out


def apply_defaults(node: dict, value: Any) -> Any:
    """Fill defaults top-down like the API server: a missing field with a default gets it, recursively."""
    if not isinstance(value, dict) or "properties" not in node:
        if isinstance(value, list) and "items" in node:
            return [apply_defaults(node["items"], v) for v in value]
        return value
    out = dict(value)
    for name, sub in node["properties"].items():
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = apply_defaults(sub, out[name])
    return out


def defaulted(resource: dict) -> dict:
    """The resource as stored after the API server applied the CRD defaults."""
    return apply_defaults(openapi_schema(), resource)


def _cel_errors(node: dict, value: Any, path: str) -> list[str]:
    errors = []
    for rule in node.get("x-kubernetes-validations", []):
        if not CEL_TWINS[rule["rule"]](value):
            # fieldPath (relative to the rule's node) names the field the API server reports.
            errors.append(f"{path}{rule.get('fieldPath', '')}: Invalid value: {rule['message']}")
    if not isinstance(value, dict):
        return errors
    for name, sub in node.get("properties", {}).items():
        if name in value:
            errors.extend(_cel_errors(sub, value[name], f"{path}.{name}"))
    return errors


def errors(resource: dict) -> list[str]:
    """Every reason the API server would reject ``resource`` (empty when it is valid), one line each."""
    schema = openapi_schema()
    validator = jsonschema.Draft7Validator(to_jsonschema(schema))
    out = []
    for err in sorted(validator.iter_errors(resource), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "<root>"
        out.append(f"{where}: {err.message}")
    if not out:
        out = _cel_errors(schema, defaulted(resource), "<root>")
        out = [
            e.replace("<root>.", "").replace("<root>: ", "metadata.name: ")
            if "metadata.name" in e
            else e.replace("<root>.", "")
            for e in out
        ]
    return out


def cel_rules() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.extend(r["rule"] for r in node.get("x-kubernetes-validations", []))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(openapi_schema())
    return found
