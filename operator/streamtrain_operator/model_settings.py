"""``spec.model`` of the StreamingTraining CRD, generated from the trainer's settings (``TrainSettings``)
so a cluster trains with the same model settings, defaults and bounds as ``streamtrain train``.

Every ``TrainSettings`` field is either exposed (``MODEL_FIELDS``: its CRD name) or in ``NOT_EXPOSED``
with the reason; a test fails when a new setting is neither. The operator renders each field present
in ``spec.model`` into the trainer's environment as ``STREAMTRAIN_<FIELD>``, the variable the CLI
reads. The scorers need none of them: what scoring depends on (baselines, window score, smoothing,
thresholds) travels in each model version's metadata.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic.fields import FieldInfo

from streamtrain.settings import CommonSettings
from streamtrain.train_settings import TrainSettings

#: CRD name (under spec.model) -> TrainSettings field, in the order the CRD lists them.
MODEL_FIELDS: dict[str, str] = {
    "kind": "model_kind",
    "layers": "layers",
    "convFilters": "conv_filters",
    "kernelSize": "kernel_size",
    "baselines": "baselines",
    "warmupRecords": "warmup_records",
    "thresholdK": "threshold_k",
    "windowScore": "window_score",
    "windowThresholdFactor": "window_threshold_factor",
    "windowNewestK": "window_newest_k",
    "smoothing": "smoothing",
    "epochs": "epochs",
    "minSteps": "min_steps",
    "batchSize": "batch_size",
    "learningRate": "learning_rate",
    "validationFraction": "validation_fraction",
    "seed": "seed",
    "trainRecords": "train_records",
    "fromEnd": "from_end",
    "sinceLast": "since_last",
    "minRecords": "min_records",
}

#: Settings written as comma-separated integers ("16,4,16"): arrays of integers in the CRD.
INT_LISTS = {"layers", "conv_filters"}

#: Patterns of string settings the trainer parses (it refuses others when it starts; the API server earlier).
PATTERNS = {"smoothing": r"^[0-9]+/[0-9]+$"}

#: The only defaults a cluster does not share with the CLI, and why.
OPERATOR_DEFAULTS: dict[str, tuple[Any, str]] = {
    "from_end": (
        True,
        "true on a cluster (the CLI: false): a training.schedule CronJob retrains on the newest records, "
        "not the same oldest ones again",
    ),
}

#: TrainSettings fields the CRD does not expose, and why. Every field of CommonSettings (Kafka, topics,
#: logs, metrics, model_verify_keys, model_max_version) is set by the operator from the rest of the spec.
NOT_EXPOSED: dict[str, str] = {
    "features": "the operator sets it from spec.preprocessing (the raw and derived features, in order)",
    "since_ms": "an absolute time range fits one run, not a recipe a schedule repeats",
    "until_ms": "an absolute time range fits one run, not a recipe a schedule repeats",
    "source_range": "pinned per worker by the multi-worker launcher (training.workers)",
    "worker_hosts": "set by the operator for an indexed Job (training.workers)",
    "tensorboard_dir": "needs a volume the trainer Pod does not mount (read-only root filesystem)",
    "model_signing_key_file": "mounted by the operator from the signing Secret (spec.model.signing)",
    "model_keep_versions": "retention of the models topic, not the model: the operator keeps the default",
    "cache": "how the range is read (memory against Kafka re-reads), not what is learned; sized by the default",
    "backend": "how the range is read; the image's reader is confluent (tfio lacks per-device baselines)",
    "readers": "how the range is read (threads), not what is learned",
    "reader_process": "how the range is read (a child process), not what is learned",
}

#: Settings every program shares: not model settings (see NOT_EXPOSED).
COMMON_FIELDS = frozenset(CommonSettings.model_fields)


def env_name(field: str) -> str:
    return f"STREAMTRAIN_{field.upper()}"


def _base_type(annotation: Any) -> tuple[type | None, list | None]:
    """The JSON type's Python type of a (possibly optional) annotation, and a Literal's choices."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is Literal:
        return str, list(typing.get_args(annotation))
    return annotation, None


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _bounds(field: FieldInfo, json_type: str) -> tuple[dict, list[dict]]:
    """minimum/maximum (exclusive ones flagged) from ge/gt/le/lt; a fractional bound on a number becomes a
    CEL rule instead, whose message names the real limit (the API server rounds it in its own)."""
    out: dict = {}
    rules: list[dict] = []
    for meta in field.metadata:
        for attr, side, exclusive, op, word in (
            ("ge", "minimum", False, ">=", "greater than or equal to"),
            ("gt", "minimum", True, ">", "greater than"),
            ("le", "maximum", False, "<=", "less than or equal to"),
            ("lt", "maximum", True, "<", "less than"),
        ):
            bound = getattr(meta, attr, None)
            if bound is None:
                continue
            if json_type == "integer":
                out[side] = bound + (1 if exclusive and side == "minimum" else -1 if exclusive else 0)
            elif float(bound).is_integer():
                out[side] = int(bound)
                if exclusive:
                    out[f"exclusive{side.capitalize()}"] = True
            else:
                rules.append({"rule": f"self {op} {bound}", "message": f"should be {word} {bound}"})
    return out, rules


def property_for(field_name: str) -> dict:
    """The CRD property of one TrainSettings field: type, enum, bounds, default and description."""
    field = TrainSettings.model_fields[field_name]
    description = f"{field.description} ({env_name(field_name)})"
    default = field.default
    if field_name in OPERATOR_DEFAULTS:
        default, why = OPERATOR_DEFAULTS[field_name]
        description += f"; default {why}"
    if field_name in INT_LISTS:
        return {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "minItems": 1,
            "default": [int(w) for w in str(default).split(",")],
            "description": description,
        }
    python_type, choices = _base_type(field.annotation)
    json_type = _JSON_TYPES[python_type]  # a new kind of setting (a list, a path) fails here, loudly
    prop: dict = {"type": json_type, "description": description}
    if choices is not None:
        prop["enum"] = choices
    if field_name in PATTERNS:
        prop["pattern"] = PATTERNS[field_name]
    bounds, rules = _bounds(field, json_type)
    prop.update(bounds)
    if rules:
        prop["x-kubernetes-validations"] = rules
    if default is not None:
        prop["default"] = default
    return prop


def model_properties() -> dict[str, dict]:
    """spec.model's settings, each generated from its TrainSettings field."""
    return {crd_name: property_for(field) for crd_name, field in MODEL_FIELDS.items()}


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def model_env(model: dict) -> list[dict]:
    """STREAMTRAIN_* of the trainer for every model setting present in spec.model (the API server fills
    in the defaults; a setting without one, like epochs, is left to the trainer when absent)."""
    return [
        {"name": env_name(field), "value": _env_value(model[crd_name])}
        for crd_name, field in MODEL_FIELDS.items()
        if model.get(crd_name) is not None
    ]


#: Combinations the trainer refuses when it starts, refused by the API server already (rules on spec).
MODEL_RULES = [
    {
        "rule": "self.model.kind != 'windowed' || (has(self.preprocessing.sequences) "
        "&& self.preprocessing.engine == 'embedded')",
        "fieldPath": ".model.kind",
        "message": "model.kind windowed trains on the sequences topic: it needs preprocessing.sequences (the "
        "window length) and preprocessing.engine embedded (ksqlDB builds no sequences)",
    },
    {
        "rule": "!has(self.model.smoothing) || self.model.kind == 'windowed'",
        "fieldPath": ".model.smoothing",
        "message": "model.smoothing needs model.kind windowed (the window carries the last m readings)",
    },
]
