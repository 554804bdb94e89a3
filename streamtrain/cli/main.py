"""`streamtrain` command line. Each subcommand imports its program lazily, so
`streamtrain --help` stays fast and a program's heavy imports load only when it runs."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import typing
from pathlib import Path

import click

import streamtrain
from streamtrain import exitcodes, logs
from streamtrain.access import PROGRAMS as KAFKA_PROGRAMS
from streamtrain.settings import LogSettings, StackSettings, load

# TensorFlow's C++ INFO/WARNING lines (e.g. the end of every tf.data epoch) are not events.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _overrides(**kwargs) -> dict:
    return {k: v for k, v in kwargs.items() if v is not None}


#: Subcommands that live in the programs' own packages, as "module:attribute" of a click command.
PROGRAMS = {
    "simulate": (
        "streamtrain.simulator.cli:command",
        "Publish telemetry from a simulated fleet or a CSV replay over MQTT.",
    ),
    "bridge": ("streamtrain.bridge.cli:command", "Forward MQTT telemetry to the Kafka raw topic, at least once."),
    "ingest": ("streamtrain.bridge.check:group", "Check how devices' messages map to readings (dry run)."),
    "preprocess": (
        "streamtrain.preprocessor.cli:command",
        "Preprocess the raw topic into features (embedded engine) or print ksqlDB.",
    ),
    "train": (
        "streamtrain.trainer.cli:command",
        "Train a model from the features topic and publish it to the models topic.",
    ),
    "score": ("streamtrain.scorer.cli:command", "Score the features stream live with hot model updates."),
    "evaluate": ("streamtrain.scorer.evaluate:command", "Quality of the scores topic against ground-truth labels."),
    "demo": ("streamtrain.cli.demo:command", "Run the whole pipeline locally on real brokers and report quality."),
    "models": ("streamtrain.cli.models:group", "Model versions on the models topic: list, show, export, promote."),
}


#: Options of the group that may also be written after the subcommand (``streamtrain score --log-level DEBUG``).
GLOBAL_OPTIONS = ("--log-level", "--log-format", "-X", "--kafka-property")


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the global options found after the subcommand in front of it (up to a ``--``)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            takes_next = "=" not in arg and i + 1 < len(args)
            front.extend(args[i : i + 2] if takes_next else [arg])
            i += 2 if takes_next else 1
            continue
        rest.append(arg)
        i += 1
    return front + rest


class LazyGroup(click.Group):
    """Loads a program's command only when it is invoked (or its help is asked for)."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(PROGRAMS))

    def get_command(self, ctx, name):
        if name in PROGRAMS:
            module, attr = PROGRAMS[name][0].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:
                if exc.name and module.startswith(exc.name):
                    reason = f"{name}: not available: {exc}"  # `exc` is unbound once the except block ends
                    return click.Command(
                        name, help=f"(not available in this build: {exc})", callback=lambda: sys.exit(reason)
                    )
                raise
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [
            (n, PROGRAMS[n][1] if n in PROGRAMS else super(LazyGroup, self).get_command(ctx, n).get_short_help_str())
            for n in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _log_option(name: str):
    """A global option made from its LogSettings field: the same values, description and variable."""
    field = LogSettings.model_fields[name]
    return click.option(
        f"--{name.replace('_', '-')}",
        type=click.Choice(typing.get_args(field.annotation), case_sensitive=False),
        default=None,
        help=f"{field.description} (env STREAMTRAIN_{name.upper()}; default {field.default}).",
    )


def _kafka_properties(ctx: click.Context, param: click.Parameter, given: tuple[str, ...]) -> dict[str, str]:
    """``-X key=value`` pairs, each checked: a reserved or secret key, or one librdkafka does not know, is a
    usage error (exit 2) naming it."""
    from confluent_kafka import KafkaException, Producer  # noqa: PLC0415 - only when -X is given

    from streamtrain.kafka.config import check_property  # noqa: PLC0415

    props: dict[str, str] = {}
    for item in given:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected key=value (a librdkafka property)", ctx, param)
        if why := check_property(key):
            raise click.BadParameter(f"{key}: {why}", ctx, param)
        props[key] = value
    if props:
        silent = logging.Logger("librdkafka-check")
        silent.addHandler(logging.NullHandler())
        try:  # a client that never connects (no bootstrap) tells whether librdkafka knows each property
            Producer({**props, "logger": silent}).flush(0)
        except KafkaException as exc:
            raise click.BadParameter(exc.args[0].str(), ctx, param) from None
    return props


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(streamtrain.__version__, "-V", "--version", prog_name="streamtrain")
@_log_option("log_level")
@_log_option("log_format")
@click.option(
    "-X",
    "--kafka-property",
    "kafka_properties",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_kafka_properties,
    help="A librdkafka property for every Kafka client of the command and of the programs it starts "
    "(repeatable; env STREAMTRAIN_KAFKA_PROPERTIES as a JSON object). Properties the programs' guarantees, "
    "address or security depend on, and secrets, are refused.",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str | None, log_format: str | None, kafka_properties: dict[str, str]) -> None:
    """StreamTrain: streaming machine learning for IoT fleets.

    Devices publish over MQTT, the bridge forwards to Kafka, the stream is preprocessed,
    a TensorFlow model is trained straight from Kafka, and the scorer picks up each new
    model version from the models topic while it scores the live stream.

    The global options may also follow the subcommand.
    """
    ctx.ensure_object(dict)
    ctx.obj["log"] = _overrides(log_level=log_level, log_format=log_format)
    # Only the log settings are read here: a bad value of another variable is the subcommand's to
    # report (exit 2, naming it), and never stops its --help.
    logs.configure()  # the defaults, on stderr, until the log settings themselves are read
    base = load(LogSettings, **ctx.obj["log"])
    logs.configure(base.log_level, base.log_format)
    if kafka_properties:  # the environment carries them to every client here and to the programs started
        known = json.loads(os.environ.get("STREAMTRAIN_KAFKA_PROPERTIES") or "{}")
        os.environ["STREAMTRAIN_KAFKA_PROPERTIES"] = json.dumps({**known, **kafka_properties})


# ------------------------------------------------------------------ stack
@cli.group()
def stack() -> None:
    """Run real Apache Kafka (KRaft) and HiveMQ CE on this machine, no Docker needed."""


def _stack_options(f):
    f = click.option(
        "--home",
        type=click.Path(path_type=Path),
        default=None,
        help="Directory for jars, broker data and logs (default .streamtrain).",
    )(f)
    f = click.option("--kafka-port", type=int, default=None, help="Kafka listener port (default 9092).")(f)
    f = click.option("--mqtt-port", type=int, default=None, help="MQTT listener port (default 1883).")(f)
    return f


def _local_stack(ctx, home, kafka_port, mqtt_port):
    from streamtrain.stack.local import LocalStack

    return LocalStack(
        load(StackSettings, **ctx.obj["log"], **_overrides(home=home, kafka_port=kafka_port, mqtt_port=mqtt_port))
    )


@stack.command("up")
@_stack_options
@click.option(
    "--kafka-auth",
    type=click.Choice(["none", "scram"]),
    default=None,
    help="scram: SASL/SCRAM-SHA-512 over TLS with ACLs (env STREAMTRAIN_KAFKA_AUTH; default none). "
    "Chosen when the Kafka data is first made.",
)
@click.option(
    "--kafka-brokers",
    type=click.IntRange(1, 9),
    default=None,
    help="Kafka nodes (broker and controller each, one quorum) on --kafka-port and the ports after it; "
    "with 3, topics get 3 replicas and min.insync.replicas=2 (env STREAMTRAIN_KAFKA_BROKERS; "
    "default 1). Chosen when the Kafka data is first made; status and down find it.",
)
@click.option(
    "--monitoring",
    is_flag=True,
    help="Also run Prometheus (Debian's prometheus package) with StreamTrain's alerts, scraping the "
    "bridge, preprocess and score programs started with --metrics-port 9401, 9402 and 9403, and HiveMQ's "
    "own counters on 9404 (dropped messages; when HiveMQ starts).",
)
@click.option("--prometheus-port", type=int, default=None, help="Prometheus web port with --monitoring (default 9090).")
@click.option(
    "--mqtt-tls",
    is_flag=True,
    default=None,
    help=StackSettings.model_fields["mqtt_tls"].description + " (env STREAMTRAIN_MQTT_TLS). Takes effect when "
    "HiveMQ starts.",
)
@click.option(
    "--ingest",
    type=click.Choice(["bridge", "extension"]),
    default=None,
    help="bridge (default): run `streamtrain bridge` to move telemetry to Kafka; extension: install "
    "StreamTrain's HiveMQ extension (built with Maven), which writes each PUBLISH to Kafka inside "
    "the broker before its PUBACK (env STREAMTRAIN_INGEST). Takes effect when HiveMQ starts.",
)
@click.pass_context
def stack_up(
    ctx, home, kafka_port, mqtt_port, kafka_auth, kafka_brokers, monitoring, prometheus_port, mqtt_tls, ingest
) -> None:
    """Start both brokers (if not running), wait until ready, create the pipeline topics."""
    from streamtrain.stack.ingest_extension import BuildError
    from streamtrain.stack.local import StackError

    try:
        if kafka_auth:
            ctx.obj["log"]["kafka_auth"] = kafka_auth
        if kafka_brokers:
            ctx.obj["log"]["kafka_brokers"] = kafka_brokers
        if ingest:
            ctx.obj["log"]["ingest"] = ingest
        if mqtt_tls:
            ctx.obj["log"]["mqtt_tls"] = True
        if monitoring:
            from streamtrain.stack.monitoring import LOCAL_PORTS

            # HiveMQ's own counters (dropped messages) beside the programs', unless a port is set already.
            if "STREAMTRAIN_BROKER_METRICS_PORT" not in os.environ:
                ctx.obj["log"].setdefault("broker_metrics_port", LOCAL_PORTS["hivemq"])
        stack = _local_stack(ctx, home, kafka_port, mqtt_port)
        status = stack.up()
        if monitoring:
            from streamtrain.stack.monitoring import (
                PROMETHEUS_PORT,
                RULES,
                LocalPrometheus,
                local_targets,
                prometheus_config,
            )

            prom = LocalPrometheus(stack.home, prometheus_port or PROMETHEUS_PORT)
            prom.start(prometheus_config(local_targets(), [RULES], interval="5s"))
            status["prometheus"] = prom.status()
    except (StackError, BuildError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exitcodes.FAILED)
    click.echo(json.dumps(status, indent=2))


@stack.command("kafka-user")
@click.argument("user")
@click.option(
    "--program",
    type=click.Choice(list(KAFKA_PROGRAMS)),
    required=True,
    help="Grant exactly this program's topics, consumer group and transactional ids.",
)
@click.option("--group", default=None, help="The program's consumer group, if not its default.")
@_stack_options
@click.pass_context
def stack_kafka_user(ctx, user, program, group, home, kafka_port, mqtt_port) -> None:
    """Create a Kafka SCRAM user for one program (stack started with --kafka-auth scram).

    The password is made at random and kept in a 0600 file under <home>/kafka/secrets; prints the
    STREAMTRAIN_KAFKA_* lines to export before starting the program as that user.
    """
    from streamtrain.stack.local import StackError

    try:
        env = _local_stack(ctx, home, kafka_port, mqtt_port).kafka_user(user, program, group)
    except StackError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exitcodes.FAILED)
    click.echo("\n".join(f"export {k}={v}" for k, v in env.items()))


@stack.command("status")
@_stack_options
@click.pass_context
def stack_status(ctx, home, kafka_port, mqtt_port) -> None:
    """Show pids, endpoints and readiness of both brokers (exit 1 unless both are ready), and of
    Prometheus when `stack up --monitoring` started it."""
    from streamtrain.stack.monitoring import running_prometheus

    stack = _local_stack(ctx, home, kafka_port, mqtt_port)
    status = stack.status()
    if (prom := running_prometheus(stack.home)) is not None:
        status["prometheus"] = prom.status()
    click.echo(json.dumps(status, indent=2))
    sys.exit(exitcodes.OK if status["kafka"]["ready"] and status["hivemq"]["ready"] else exitcodes.FAILED)


@stack.command("passwd")
@click.argument("user")
@click.option(
    "--role",
    type=click.Choice(["device", "bridge"]),
    required=True,
    help="device: publishes only to devices/<user>/telemetry; bridge: subscribes to device telemetry.",
)
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path),
    default=None,
    help="Credentials file (default: STREAMTRAIN_MQTT_USERS_FILE or <home>/mqtt-users).",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of prompting.")
@click.pass_context
def stack_passwd(ctx, user, role, path, password_stdin) -> None:
    """Add or change an MQTT identity in the broker's credentials file (stores a PBKDF2 hash only).

    Start the stack with STREAMTRAIN_MQTT_USERS_FILE pointing at the file to enforce it.
    """
    from streamtrain.credentials import set_user

    settings = load(StackSettings, **ctx.obj["log"])
    path = path or settings.mqtt_users_file or settings.home / "mqtt-users"
    password = (
        sys.stdin.readline().rstrip("\n")
        if password_stdin
        else click.prompt("password", hide_input=True, confirmation_prompt=True)
    )
    try:
        set_user(path, user, role, password)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exitcodes.CONFIG)
    click.echo(f"{user} ({role}) written to {path}")


@stack.command("passwd-fleet")
@click.option("--devices", type=int, required=True, help="How many device identities to make.")
@click.option(
    "--prefix",
    default="dev",
    show_default=True,
    help="Device ids are <prefix>-00000, <prefix>-00001, ... (the simulator's own naming).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the device_id:password lines for `simulate --credentials` (mode 0600).",
)
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path),
    default=None,
    help="Broker credentials file (default: STREAMTRAIN_MQTT_USERS_FILE or <home>/mqtt-users).",
)
@click.pass_context
def stack_passwd_fleet(ctx, devices, prefix, out, path) -> None:
    """Make a fleet's MQTT identities in one go: a random password per device, its PBKDF2 hash
    (role device) added to the broker's credentials file, the passwords to --out (0600).

    Existing users of the same names are replaced; a running broker reads the file at start.
    """
    import time

    from streamtrain.credentials import make_fleet

    settings = load(StackSettings, **ctx.obj["log"])
    path = path or settings.mqtt_users_file or settings.home / "mqtt-users"
    started = time.monotonic()
    try:
        ids = list(make_fleet(path, out, devices, prefix))
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exitcodes.CONFIG)
    click.echo(
        f"{len(ids)} devices ({ids[0]} .. {ids[-1]}, role device) written to {path}, "
        f"passwords to {out} (0600) in {time.monotonic() - started:.1f}s"
    )


@stack.command("down")
@_stack_options
@click.pass_context
def stack_down(ctx, home, kafka_port, mqtt_port) -> None:
    """Stop Prometheus (if `stack up --monitoring` started it), HiveMQ and Kafka cleanly (SIGTERM, then
    SIGKILL after a grace period)."""
    from streamtrain.stack.monitoring import running_prometheus

    stack = _local_stack(ctx, home, kafka_port, mqtt_port)
    if (prom := running_prometheus(stack.home)) is not None:
        prom.stop()
    stack.down()
    click.echo("stack stopped")


if __name__ == "__main__":
    cli(prog_name="streamtrain")
