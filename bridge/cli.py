"""`streamtrain bridge`: MQTT shared subscription -> Kafka raw topic, at least once."""

from __future__ import annotations

import click

from streamtrain.bridge.app import Bridge, BridgeSettings
from streamtrain.kafka import require_topics
from streamtrain.lifecycle import StopFlag
from streamtrain.settings import load


def _help(name: str) -> str:
    """An option's help is its settings field's description, written once."""
    field = BridgeSettings.model_fields[name]
    return f"{field.description} (default {field.default})."


@click.command("bridge")
@click.option("--mqtt-host", help="MQTT broker host (default 127.0.0.1).")
@click.option("--mqtt-port", type=int, help="MQTT broker port (default 1883).")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092).")
@click.option("--client-id", help="MQTT client id; stable across restarts so the session resumes.")
@click.option("--topic-raw", help="Raw telemetry topic.")
@click.option("--topic-deadletter", help="Dead-letter topic.")
@click.option("--metrics-port", type=int, help="Port of /metrics, /healthz, /readyz (0 = off).")
@click.option("--receive-maximum", type=int, help="MQTT messages in flight before back-pressure (default 1000).")
@click.option(
    "--connections", type=int, help="MQTT connections (default 1; more is faster but does not keep per-device order)."
)
@click.option("--known-devices", help="Comma-separated allowed device ids (default: any).")
@click.option("--max-clock-skew-s", type=float, help=_help("max_clock_skew_s"))
@click.option("--mapping", "ingest_mapping", help=_help("ingest_mapping"))
@click.option("--subscription", help=_help("subscription"))
@click.pass_context
def command(ctx, **given) -> None:
    """Forward device telemetry from MQTT to Kafka.

    Valid messages go to the raw topic keyed by device id; invalid ones to the dead-letter
    topic with the reason in headers. A message is acknowledged to MQTT only once Kafka has
    it. Several bridges may run side by side (shared subscription). Stops cleanly on SIGTERM.
    """
    settings = load(
        BridgeSettings, **(ctx.obj or {}).get("log", {}), **{k: v for k, v in given.items() if v is not None}
    )
    require_topics(settings, [settings.topic_raw, settings.topic_deadletter])
    Bridge(settings, StopFlag().install()).run()
