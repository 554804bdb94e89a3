"""The command-line and configuration reference (docs/reference.md), generated from the code.

Every command's --help, every STREAMTRAIN_ variable with its default and description, and every field
of the StreamingTraining resource are read from where they are defined (the click commands, the
settings classes, the CRD generator), so the page cannot disagree with them. ``make docs`` writes it;
tests/unit/streamtrain/cli/test_reference.py fails when the committed page is stale.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import click
from pydantic_settings import BaseSettings

from streamtrain.kafka.config import KafkaClientProperties, KafkaSecurity
from streamtrain.mqtt import MqttTls
from streamtrain.settings import CommonSettings, StackSettings

#: Each command's settings class, as "module:class" (imported only when the page is made).
PROGRAM_SETTINGS = {
    "simulate": "streamtrain.simulator.settings:SimulatorSettings",
    "bridge": "streamtrain.bridge.app:BridgeSettings",
    "preprocess": "streamtrain.preprocessor.app:PreprocessSettings",
    "train": "streamtrain.trainer.settings:TrainSettings",
    "score": "streamtrain.scorer.app:ScoreSettings",
}
WIDTH = 100
HEADER = """# Command-line and configuration reference

Generated from the code by `make docs` (`python -m streamtrain.cli.reference`): the commands' own
`--help`, the settings classes and the CRD generator. Do not edit by hand; a test fails when this page
is stale. Every option of a program can also be set by its `STREAMTRAIN_` variable.
"""


def _class(ref: str) -> type[BaseSettings]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _commands(group: click.Group, ctx: click.Context) -> list[tuple[str, click.Command, click.Context]]:
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx, terminal_width=WIDTH, max_content_width=WIDTH)
        out.append((sub.command_path, cmd, sub))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, sub))
    return out


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _default(field) -> str:
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if isinstance(value, Path) and value.is_absolute():
        return "(computed)"
    return f"`{value}`" if value not in ("", None) else "(empty)"


def _settings_table(cls: type[BaseSettings], skip: set[str]) -> list[str]:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        prefix = cls.model_config.get("env_prefix") or "STREAMTRAIN_"
        rows.append(f"| `{prefix}{name.upper()}` | {_cell(_default(field))} | {_cell(field.description)} |")
    return rows


def _crd_rows(schema: dict, prefix: str) -> list[str]:
    rows = []
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}"
        kind = prop.get("type", "object")
        if "enum" in prop:
            kind += " (" + ", ".join(map(str, prop["enum"])) + ")"
        default = prop.get("default")
        default = "" if default is None or isinstance(default, dict) else f"`{json.dumps(default)}`"
        rows.append(f"| `{path}` | {_cell(kind)} | {_cell(default)} | {_cell(prop.get('description', ''))} |")
        rows.extend(_crd_rows(prop, path))
        if prop.get("type") == "array" and isinstance(prop.get("items"), dict):
            rows.extend(_crd_rows(prop["items"], f"{path}[]"))
    return rows


def _model_note() -> list[str]:
    """Where spec.model comes from, which fields reproduce the README's detector for recordings, and
    which trainer settings the resource leaves out (model_settings.NOT_EXPOSED)."""
    from streamtrain.operator.model_settings import NOT_EXPOSED, OPERATOR_DEFAULTS  # noqa: PLC0415 - operator extra

    differ = ", ".join(f"`{name}`" for name in OPERATOR_DEFAULTS)
    left_out = ", ".join(f"`{name}`" for name in NOT_EXPOSED)
    return [
        "`spec.model` (but `signing`) is generated from the settings of `streamtrain train`: the same "
        "defaults, bounds and choices, camelCase names, and each field's STREAMTRAIN_ variable in its "
        f"meaning; the operator sets it in the training Job. Only {differ} has another default on a cluster. "
        "The README's per-device windowed detector for recordings (`streamtrain train --model windowed "
        "--baselines device`) is `model: {kind: windowed, baselines: device}` with "
        "`preprocessing.sequences.length` as its window (`examples/recordings.yaml`); the dense model per "
        f"device is `model: {{baselines: device}}`. Trainer settings not in the resource: {left_out}.",
    ]


def render() -> str:
    from streamtrain.cli.main import cli  # noqa: PLC0415 - main imports nothing of this module
    from streamtrain.operator.crd import spec_schema  # noqa: PLC0415 - the operator extra, needed here only

    # The group's own context settings (-h as well as --help), as `streamtrain` itself makes its context: the help
    # text must not depend on whether something in this process ran the CLI before (click caches the option).
    root = click.Context(
        cli, info_name="streamtrain", terminal_width=WIDTH, max_content_width=WIDTH, **cli.context_settings
    )
    lines = [HEADER, "## Commands", ""]
    for path, cmd, ctx in [("streamtrain", cli, root), *_commands(cli, root)]:
        lines += [f"### `{path}`", "", "```text", cmd.get_help(ctx).rstrip(), "```", ""]
    common = set(CommonSettings.model_fields)
    lines += ["## Settings", "", "### Every program", ""]
    lines += [*_settings_table(CommonSettings, set()), ""]
    lines += ["### Every Kafka client (KafkaSecurity, KafkaClientProperties)", ""]
    lines += [*_settings_table(KafkaSecurity, set()), *_settings_table(KafkaClientProperties, set())[2:], ""]
    lines += ["### Every MQTT client (MqttTls)", ""]
    lines += [*_settings_table(MqttTls, set()), ""]
    for command, ref in [*PROGRAM_SETTINGS.items(), ("stack", "streamtrain.settings:StackSettings")]:
        cls = StackSettings if command == "stack" else _class(ref)
        lines += [f"### `streamtrain {command}` ({cls.__name__})", ""]
        lines += [*_settings_table(cls, common), ""]
    lines += ["## The StreamingTraining resource (`spec`)", "", *_model_note(), ""]
    lines += ["| field | type | default | meaning |", "|---|---|---|---|", *_crd_rows(spec_schema(), "spec"), ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
