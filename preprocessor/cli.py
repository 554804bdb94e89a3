"""`streamtrain preprocess`: run the embedded engine, or print the ksqlDB statements."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from pydantic import ValidationError

from streamtrain import exitcodes
from streamtrain.kafka import require_topics
from streamtrain.lifecycle import StopFlag
from streamtrain.preprocessing.ksql import render
from streamtrain.preprocessing.spec import PreprocessSpec, SpecError
from streamtrain.preprocessor.app import Preprocessor, PreprocessSettings
from streamtrain.settings import load


def _help(name: str) -> str:
    """An option's help is its settings field's description, written once."""
    field = PreprocessSettings.model_fields[name]
    return f"{field.description} (default {field.default})."


@click.command("preprocess")
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Preprocessing spec (YAML/JSON); default: the built-in spec.",
)
@click.option("--ksql", is_flag=True, help="Print the ksqlDB statements for the spec and exit.")
@click.option("--check", is_flag=True, help="Only validate the spec and print its feature names.")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092).")
@click.option("--topic-raw", help="Raw topic to read.")
@click.option("--topic-features", help="Features topic to write.")
@click.option("--topic-windows", help="Window aggregates topic to write.")
@click.option("--topic-sequences", help="Per-device sequences topic to write (spec with sequences).")
@click.option("--metrics-port", type=int, help="Port of /metrics (0 = off).")
@click.option(
    "--guarantee",
    type=click.Choice(["exactly_once", "at_least_once"]),
    help="exactly_once (default): outputs and offsets in one Kafka transaction, repeated readings "
    "dropped; at_least_once: no transactions, no de-duplication.",
)
@click.option(
    "--dedup-window",
    type=int,
    help="exactly_once: per device, how many seqs below its newest are remembered to drop repeats and "
    "dead-letter reused seqs (default 4096; 0 = off; older ones are dead-lettered as too_old).",
)
@click.option("--group-id", help="Consumer group of the preprocessors (default streamtrain-preprocess).")
@click.option("--max-clock-skew-s", type=float, help=_help("max_clock_skew_s"))
@click.option("--max-seq-jump", type=int, help=_help("max_seq_jump"))
@click.option("--max-devices", type=int, help=_help("max_devices"))
@click.option("--window-idle-s", type=float, help=_help("window_idle_s"))
@click.option("--device-idle-s", type=float, help=_help("device_idle_s"))
@click.pass_context
def command(ctx, spec_path, ksql, check, **given) -> None:
    """Filter, select and derive features and per-device windows from the raw stream.

    The same spec renders to ksqlDB (--ksql) for a cluster. A spec that cannot be expressed
    is rejected with a message before anything starts.
    """
    s = load(
        PreprocessSettings,
        **(ctx.obj or {}).get("log", {}),
        **{k: v for k, v in given.items() if v is not None},
        **({"spec_path": spec_path} if spec_path else {}),
    )
    try:
        spec = PreprocessSpec.load(s.spec_path) if s.spec_path else PreprocessSpec.default()
    except (SpecError, ValidationError) as exc:
        click.echo(f"error: invalid preprocessing spec: {exc}", err=True)
        sys.exit(exitcodes.CONFIG)
    if ksql:
        click.echo("\n\n".join(render(spec, s)))
        return
    if check:
        click.echo(f"ok: features {spec.feature_names}")
        return
    require_topics(
        s,
        [
            s.topic_features,
            s.topic_windows if spec.windows else None,
            s.topic_deadletter,
            s.topic_sequences if spec.sequences else None,
        ],
    )
    sys.exit(Preprocessor(s, spec, StopFlag().install()).run())
