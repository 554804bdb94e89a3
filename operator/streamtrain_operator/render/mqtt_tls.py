"""MQTT over TLS to the managed broker (spec.mqtt.tls, on by default): which Secret holds the broker's
keystore, and what of it each Pod sees. HiveMQ gets the PKCS12 keystore as one read-only file (only that
key) and its password as an environment variable from the Secret, which config.xml names as a placeholder
(``${ENV:...}``, substituted by HiveMQ at start): the password is never written in the ConfigMap. Every
MQTT client (simulator, bridge) gets the CA certificate as one read-only file (only that key) and
STREAMTRAIN_MQTT_CA_FILE, and connects to the broker Service's name, which the certificate carries.

The key names are cert-manager's (a Certificate with ``keystores.pkcs12.create: true`` writes
``keystore.p12`` and ``ca.crt``); the password is the ``keystore-password`` key of the same Secret, or the
key named by ``secretRef.passwordSecretRef`` (cert-manager's ``keystores.pkcs12.passwordSecretRef``).

The operator's own Secret (no ``secretRef``) is made by ``streamtrain.operator.mqtt_tls``, not rendered
here: its material is random, and rendering stays a pure function of the spec."""

from __future__ import annotations

from streamtrain.mqtt import MqttTls
from streamtrain.operator.render.connections import mqtt_tls, secret_file_volume

#: Keys of the Secret: the broker's PKCS12 keystore, its password, the CA certificate (PEM) clients trust.
KEYSTORE = "keystore.p12"
PASSWORD = "keystore-password"
CA = "ca.crt"
KEYSTORE_MOUNT = "/var/run/streamtrain/mqtt-keystore"
CA_MOUNT = "/var/run/streamtrain/mqtt-ca"
#: The broker's variable holding the keystore password; config.xml names it, HiveMQ substitutes it.
PASSWORD_ENV = "STREAMTRAIN_MQTT_KEYSTORE_PASSWORD"
PASSWORD_PLACEHOLDER = f"${{ENV:{PASSWORD_ENV}}}"
#: The programs that open MQTT connections.
CLIENTS = ("simulate", "bridge")


enabled = mqtt_tls


def generated_name(name: str) -> str:
    return f"{name}-mqtt-tls"


def secret_name(name: str, spec: dict) -> str | None:
    """The broker's TLS Secret: the one named by ``mqtt.tls.secretRef``, else the operator's
    ``<name>-mqtt-tls``; None without TLS."""
    if not enabled(spec):
        return None
    return (spec["mqtt"]["tls"].get("secretRef") or {}).get("name") or generated_name(name)


def operator_made(spec: dict) -> bool:
    """Whether the operator creates the TLS Secret (TLS on, no Secret of the user's)."""
    return enabled(spec) and not spec["mqtt"]["tls"].get("secretRef")


def password_ref(name: str, spec: dict) -> dict | None:
    """The keystore password as a {name, key} Secret reference."""
    secret = secret_name(name, spec)
    if secret is None:
        return None
    ref = (spec["mqtt"]["tls"].get("secretRef") or {}).get("passwordSecretRef")
    return {"name": ref["name"], "key": ref["key"]} if ref else {"name": secret, "key": PASSWORD}


def broker_config_tls(spec: dict) -> tuple[str, str] | None:
    """``hivemq_config_xml``'s ``tls``: the mounted keystore and the password's placeholder (never its value)."""
    return (f"{KEYSTORE_MOUNT}/{KEYSTORE}", PASSWORD_PLACEHOLDER) if enabled(spec) else None


def broker_env(name: str, spec: dict) -> list[dict]:
    ref = password_ref(name, spec)
    return [] if ref is None else [{"name": PASSWORD_ENV, "valueFrom": {"secretKeyRef": ref}}]


def broker_volumes(name: str, spec: dict) -> tuple[list[dict], list[dict]]:
    """The keystore, as a read-only file, for the broker only."""
    secret = secret_name(name, spec)
    if secret is None:
        return [], []
    v, m = secret_file_volume("mqtt-keystore", {"name": secret, "key": KEYSTORE}, KEYSTORE, KEYSTORE_MOUNT)
    return [v], [m]


def ca_file_variable() -> str:
    """The clients' variable, named by the settings class (``MqttTls.ca_file``), never a literal."""
    return f"{MqttTls.model_config['env_prefix']}CA_FILE"


def client_env(program: str, name: str, spec: dict) -> list[dict]:
    if secret_name(name, spec) is None or program not in CLIENTS:
        return []
    return [{"name": ca_file_variable(), "value": f"{CA_MOUNT}/{CA}"}]


def client_volumes(program: str, name: str, spec: dict) -> tuple[list[dict], list[dict]]:
    """The CA certificate, as a read-only file, for the MQTT clients only."""
    secret = secret_name(name, spec)
    if secret is None or program not in CLIENTS:
        return [], []
    v, m = secret_file_volume("mqtt-ca", {"name": secret, "key": CA}, CA, CA_MOUNT)
    return [v], [m]


def service_hosts(name: str, namespace: str) -> list[str]:
    """Every name of the broker Service a client in the cluster may use: the certificate's SANs."""
    service = f"{name}-hivemq"
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]
