"""HiveMQ CE on loopback: its configuration, its command line and the probe that says it is up."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt

from streamtrain.mqtt import hivemq_config_xml
from streamtrain.stack.jars import JAVA_DIR
from streamtrain.stack.processes import StackError, port_open


def write_config(
    base: Path, port: int, host: str = "127.0.0.1", tls: tuple[Path, str] | None = None
) -> tuple[Path, Path, Path]:
    """The conf, data and extensions folders under ``base``, with a config.xml listening on ``host``
    (``streamtrain.mqtt.hivemq_config_xml``, the text the Kubernetes broker runs too); with ``tls`` (a PKCS12
    keystore and its password) in TLS only. The file holds that password: readable by its owner only."""
    conf, data, ext = base / "conf", base / "data", base / "extensions"
    for d in (conf, data, ext):
        d.mkdir(parents=True, exist_ok=True)
    config = conf / "config.xml"
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text(hivemq_config_xml(port, host, tls=(str(tls[0]), tls[1]) if tls else None))
    return conf, data, ext


def command(
    java: str,
    lib: Path,
    base: Path,
    port: int,
    users: Path | None,
    host: str = "127.0.0.1",
    tls: tuple[Path, str] | None = None,
) -> list[str]:
    """The embedded broker's command line (HiveMQLauncher.java run as a source file)."""
    if users is not None and not Path(users).is_file():
        raise StackError(f"MQTT users file {users} does not exist; create it with `streamtrain stack passwd`")
    conf, data, ext = write_config(base, port, host, tls)
    return [
        java,
        "-Xms128m",
        "-Xmx768m",
        "-cp",
        f"{lib}/*",
        str(JAVA_DIR / "HiveMQLauncher.java"),
        str(conf),
        str(data),
        str(ext),
    ] + ([str(Path(users).resolve())] if users else [])


def ready(port: int, host: str = "127.0.0.1", ca_file: Path | None = None) -> bool:
    """Whether a broker answers a CONNECT on ``port`` (any CONNACK, even a refusal, counts); with ``ca_file``
    over TLS, the broker's certificate checked against it."""
    if not port_open(port, host):
        return False
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"streamtrain-probe-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    if ca_file is not None:
        client.tls_set(ca_certs=str(ca_file))
    answered = []
    # Any CONNACK means the broker is up; with authentication on, the probe's is a refusal.
    client.on_connect = lambda c, u, flags, reason, props: answered.append(reason)
    try:
        rc = client.connect(host, port, keepalive=5)
        if rc != 0:
            return False
        deadline = time.monotonic() + 3
        while not answered and time.monotonic() < deadline:
            client.loop(0.1)
        client.disconnect()
        return bool(answered)
    except OSError:
        return False
