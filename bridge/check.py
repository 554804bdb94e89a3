"""`streamtrain ingest check`: what a mapping makes of the messages a broker carries, without writing anything.

Subscribes (plainly, not in the bridge's shared group, so the bridge loses nothing) to the mapping's
topics or a wider filter, reads live and retained messages for a while, and prints the reading each
would become or the reason it would be dead-lettered, then the topics no pattern matches.
"""

from __future__ import annotations

import collections
import json
import queue
import threading
import time

import click

from streamtrain import ingest_mapping as mappings
from streamtrain import sparkplug, telemetry
from streamtrain.bridge.app import BridgeSettings
from streamtrain.mqtt import make_client, wait_connected
from streamtrain.settings import load


@click.group("ingest")
def group() -> None:
    """Check how devices' messages map to readings before running the bridge."""


@group.command("check")
@click.option("--mapping", "ingest_mapping", help="Preset or YAML mapping file (env STREAMTRAIN_INGEST_MAPPING).")
@click.option("--mqtt-host", help="MQTT broker host (default 127.0.0.1).")
@click.option("--mqtt-port", type=int, help="MQTT broker port (default 1883).")
@click.option("--subscription", default="#", show_default=True, help="Topic filters to read, comma-separated.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="How long to read.")
@click.option("--max-messages", type=int, default=20, show_default=True, help="Stop after this many messages.")
@click.option("--show", type=int, default=10, show_default=True, help="Messages printed in full per outcome.")
@click.pass_context
def check(ctx, seconds: float, max_messages: int, show: int, subscription: str, **given) -> None:
    """Read a few live messages and print the readings the mapping would make, the refusals with their
    reasons, and the topics no pattern of the mapping matches. Writes nothing, acknowledges nothing the
    bridge would miss (a plain subscription, not the bridge's shared one). Exit 1 when no message became a reading."""
    settings = load(
        BridgeSettings, **(ctx.obj or {}).get("log", {}), **{k: v for k, v in given.items() if v is not None}
    )
    mapping = settings.mapping()
    known = frozenset(d.strip() for d in settings.known_devices.split(",")) if settings.known_devices else None
    inbox: queue.Queue = queue.Queue()
    client = make_client(username=settings.mqtt_username, password=settings.password())
    client.on_message = lambda c, u, m: inbox.put((m.topic, m.payload, time.time()))
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    filters = [f.strip() for f in subscription.split(",") if f.strip()]
    client.connect(settings.mqtt_host, settings.mqtt_port, 30)
    client.loop_start()
    try:
        wait_connected(client)
        client.subscribe([(f, 0) for f in filters])
        if not subscribed.wait(10):  # from here on every live message is read
            raise click.ClickException(f"no SUBACK from {settings.mqtt_host}:{settings.mqtt_port} within 10 s")
        click.echo(
            f"mapping {mapping.name}: topics {', '.join(mapping.topics)}; reading {', '.join(filters)} on "
            f"{settings.mqtt_host}:{settings.mqtt_port} for up to {seconds:g} s or {max_messages} messages"
        )
        outcomes = _read(inbox, mapping, settings, known, seconds, max_messages, show)
    finally:
        client.disconnect()
        client.loop_stop()
    readings, refused, unmatched = outcomes
    click.echo(f"\n{readings} reading(s), {sum(refused.values())} refused, {sum(unmatched.values())} unmatched")
    for reason, n in refused.most_common():
        click.echo(f"  refused {reason}: {n}")
    if unmatched:
        click.echo("topics no pattern matches:")
        for topic, n in unmatched.most_common(50):
            click.echo(f"  {topic} ({n})")
    if not readings:
        ctx.exit(1)


def _read(inbox, mapping, settings, known, seconds, max_messages, show):
    readings = 0
    refused: collections.Counter[str] = collections.Counter()
    unmatched: collections.Counter[str] = collections.Counter()
    arrival = mappings.ArrivalSeq()
    held = mappings.HeldValues(mapping.hold_s) if mapping.one_value_per_topic else None  # as the bridge merges
    # A dry run asks no edge node for anything: births are only read (an NBIRTH sent before it started is missed).
    decoder = sparkplug.SparkplugDecoder(mapping, rebirth_interval_s=0) if mapping.format == "sparkplug_b" else None
    deadline = time.monotonic() + seconds
    seen = 0
    while seen < max_messages and time.monotonic() < deadline:
        try:
            topic, payload, arrived = inbox.get(timeout=max(0.01, min(0.2, deadline - time.monotonic())))
        except queue.Empty:
            continue
        if mapping.match_topic(topic) is None:
            unmatched[topic] += 1
            continue
        seen += 1
        if decoder is not None:
            outcome = decoder.apply(topic, payload, arrived, max_bytes=settings.max_payload_bytes, known_devices=known)
            for event, fields in outcome.events:
                click.echo(f"noted    {topic} -> {event} {json.dumps(fields, separators=(',', ':'))}")
            skew = next((r for r in (settings.clock_skew(x.ts, arrived) for x in outcome.readings) if r), None)
            rejection = outcome.rejection or skew
            if rejection is not None:
                refused[rejection.reason] += 1
                if refused[rejection.reason] <= show:
                    click.echo(f"refused  {topic} -> {rejection.reason}: {rejection.detail}")
            for reading in outcome.readings if rejection is None else ():
                readings += 1
                if readings <= show:
                    click.echo(f"reading  {topic} -> {json.dumps(reading.to_dict(), separators=(',', ':'))}")
            continue
        result = mappings.apply(
            mapping,
            topic,
            payload,
            arrived,
            max_bytes=settings.max_payload_bytes,
            known_devices=known,
            arrival_seq=arrival,
            held=held,
        )
        if isinstance(result, telemetry.Reading):
            result = settings.clock_skew(result.ts, arrived) or result
        if isinstance(result, telemetry.Reading):
            readings += 1
            if readings <= show:
                click.echo(f"reading  {topic} -> {json.dumps(result.to_dict(), separators=(',', ':'))}")
        else:
            refused[result.reason] += 1
            if refused[result.reason] <= show:
                click.echo(f"refused  {topic} -> {result.reason}: {result.detail}")
    return readings, refused, unmatched
