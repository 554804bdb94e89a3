"""How every child reaches Kafka and MQTT: endpoints, identities (KafkaUsers, MQTT users) and their
credentials as read-only Secret files and STREAMTRAIN_KAFKA_* settings, plus the settings every
program shares."""

from __future__ import annotations

from typing import Any

from streamtrain.kafka import KafkaSecurity
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.settings import CommonSettings

KAFKA_USER_MOUNT = "/var/run/streamtrain/kafka-user"  # the password (a Secret key) as a file
KAFKA_CA_MOUNT = "/var/run/streamtrain/kafka-ca"  # the PEM CA of the brokers' certificates
MQTT_USERS_MOUNT = "/var/run/streamtrain/mqtt-users"  # the broker's users file (hashes), HiveMQ only
MQTT_PASSWORD_MOUNT = "/var/run/streamtrain/mqtt-password"  # the bridge's MQTT password
MQTT_DEVICES_MOUNT = "/var/run/streamtrain/mqtt-devices"  # the simulator's device_id:password lines
CREDENTIALS = "credentials"  # spec.mqtt.authentication: the broker checks every client against a users file
NO_AUTHENTICATION = "none"  # spec.mqtt.authentication: anyone who reaches the broker (the stock allow-all extension)
#: Keys of the operator's Secret <name>-mqtt-credentials (streamtrain.operator.mqtt_users makes it): the broker's
#: users file (hashes), the bridge's user name and password, the simulated fleet's device_id:password lines.
USERS_KEY, BRIDGE_USERNAME_KEY, BRIDGE_PASSWORD_KEY, DEVICES_KEY = "users", "username", "password", "devices"
SCRAM = "scram-sha-512"  # spec.kafka.authentication; Strimzi's name of the mechanism
SASL_MECHANISM = "SCRAM-SHA-512"  # the same, as Kafka clients spell it
PLAIN_PORT, TLS_PORT = 9092, 9093
#: MQTT's registered ports: plain, and over TLS (the managed broker's container port and the default of spec.mqtt.port).
MQTT_PLAIN_PORT, MQTT_TLS_PORT = 1883, 8883


def kafka_bootstrap(name: str, spec: dict) -> str:
    k = spec["kafka"]
    if k["mode"] == "external":
        return k["bootstrap"]
    return f"{name}-kafka-bootstrap:{TLS_PORT if kafka_authentication(spec) == SCRAM else PLAIN_PORT}"


def kafka_authentication(spec: dict) -> str:
    """scram-sha-512 or none. Unset means secure for a managed cluster (the operator creates the users)
    and none for an external one (whose credentials only the user can name)."""
    k = spec["kafka"]
    return k.get("authentication") or (SCRAM if k["mode"] == "managed" else "none")


def kafka_users_managed(spec: dict) -> bool:
    """Whether the operator creates a KafkaUser per program (managed cluster with SCRAM)."""
    return spec["kafka"]["mode"] == "managed" and kafka_authentication(spec) == SCRAM


def group_id(name: str, component: str) -> str:
    """Consumer group of a component (also the prefix of its transactional ids)."""
    return f"{name}-{component}"


def ksql_service_id(name: str) -> str:
    return f"{name}_"


def kafka_principals(name: str, spec: dict) -> list[tuple[str, str, str | None]]:
    """(component, access program, group) of every workload that talks to Kafka; the simulator speaks MQTT only."""
    out: list[tuple[str, str, str | None]] = [("bridge", "bridge", None)]
    if spec["preprocessing"]["engine"] == "ksqldb":
        out.append(("ksqldb", "ksqldb", ksql_service_id(name)))
    else:
        out.append(("preprocess", "preprocess", group_id(name, "preprocess")))
    out.append(("train", "train", None))
    out.append(
        (
            "scorer",
            "score-streams" if spec["scorer"]["engine"] == "kafka-streams" else "score",
            group_id(name, "scorer"),
        )
    )
    return out


def kafka_user(name: str, component: str) -> str:
    """Name of a component's KafkaUser: also its SCRAM user name and the name of the Secret Strimzi writes."""
    return f"{name}-{component}-kafka"


def kafka_credentials(name: str, spec: dict, component: str) -> dict | None:
    """Where one component's Kafka credentials live: user name, password and CA as Secret keys ({name, key}),
    and for ksqlDB the JAAS line Strimzi writes next to the password. None without authentication."""
    k = spec["kafka"]
    if kafka_authentication(spec) != SCRAM or component not in {c for c, _, _ in kafka_principals(name, spec)}:
        return None
    if k["mode"] == "managed":
        user = kafka_user(name, component)
        return {
            "username": user,
            "password": {"name": user, "key": "password"},
            "jaas": {"name": user, "key": "sasl.jaas.config"},
            "ca": {"name": f"{name}-cluster-ca-cert", "key": "ca.crt"},
        }
    return {
        "username": k["username"],
        "password": dict(k["passwordSecretRef"]),
        "jaas": None,
        "ca": dict(k["caSecretRef"]) if "caSecretRef" in k else None,
    }


def secret_file_volume(volume: str, ref: dict, filename: str, mount: str) -> tuple[dict, dict]:
    """One key of a Secret as a read-only file ``mount/filename``: the volume and its mount."""
    return (
        {
            "name": volume,
            "secret": {
                "secretName": ref["name"],
                "items": [{"key": ref["key"], "path": filename}],
                "defaultMode": 0o440,
            },
        },
        {"name": volume, "mountPath": mount, "readOnly": True},
    )


def kafka_volumes(creds: dict | None, password_file: bool = True) -> tuple[list[dict], list[dict]]:
    """Read-only Secret volumes (only the one key each) and their mounts for a component's credentials.
    ``password_file=False``: only the CA (ksqlDB takes its password in the JAAS line instead)."""
    if creds is None:
        return [], []
    volumes, mounts = [], []
    for vol, ref, path, mount in (
        ("kafka-user", creds["password"] if password_file else None, "password", KAFKA_USER_MOUNT),
        ("kafka-ca", creds["ca"], "ca.crt", KAFKA_CA_MOUNT),
    ):
        if ref is None:
            continue
        v, m = secret_file_volume(vol, ref, path, mount)
        volumes.append(v)
        mounts.append(m)
    return volumes, mounts


def kafka_security_variable(field: str) -> str:
    """Environment variable of one KafkaSecurity setting: the name comes from the settings class, never a literal."""
    if field not in KafkaSecurity.model_fields:
        raise KeyError(f"{field} is no KafkaSecurity field")
    return f"{KafkaSecurity.model_config['env_prefix']}{field.upper()}"


def _security(field: str, value: Any) -> dict:
    return {"name": kafka_security_variable(field), "value": str(value)}


def kafka_security_env(creds: dict | None) -> list[dict]:
    """STREAMTRAIN_KAFKA_* of a StreamTrain program: SASL_SSL with the mounted password and CA files."""
    if creds is None:
        return []
    out = [
        _security("security_protocol", "SASL_SSL"),
        _security("sasl_mechanism", SASL_MECHANISM),
        _security("username", creds["username"]),
        _security("password_file", f"{KAFKA_USER_MOUNT}/password"),
    ]
    if creds["ca"] is not None:
        out.append(_security("ca_file", f"{KAFKA_CA_MOUNT}/ca.crt"))
    return out


def mqtt_tls(spec: dict) -> bool:
    """Whether the managed broker speaks TLS only (spec.mqtt.tls.enabled; render.mqtt_tls says who sees what)."""
    m = spec["mqtt"]
    return m["mode"] == "managed" and bool((m.get("tls") or {}).get("enabled", False))


def mqtt_container_port(spec: dict) -> int:
    """The managed broker's one listener: 8883 with TLS, 1883 without."""
    return MQTT_TLS_PORT if mqtt_tls(spec) else MQTT_PLAIN_PORT


def mqtt_endpoint(name: str, spec: dict) -> tuple[str, int]:
    """Host and port the clients connect to: spec.mqtt.port, by default the managed broker's container port
    (8883 with TLS, 1883 without) and 1883 for an external broker."""
    m = spec["mqtt"]
    host = m["host"] if m["mode"] == "external" else f"{name}-hivemq"
    return host, m.get("port") or mqtt_container_port(spec)


def mqtt_authentication(spec: dict) -> str:
    """credentials or none. Unset means credentials for a managed broker (with the operator's generated
    users unless usersSecretRef names the user's) and none for an external one (which checks its own)."""
    m = spec["mqtt"]
    return m.get("authentication") or (CREDENTIALS if m["mode"] == "managed" else NO_AUTHENTICATION)


def mqtt_credentials(spec: dict) -> bool:
    """Whether the managed broker authenticates (spec.mqtt.authentication credentials, the default)."""
    return spec["mqtt"]["mode"] == "managed" and mqtt_authentication(spec) == CREDENTIALS


def mqtt_users_generated_name(name: str) -> str:
    return f"{name}-mqtt-credentials"


def mqtt_users_operator_made(spec: dict) -> bool:
    """Whether the operator creates the broker's users (credentials, no usersSecretRef of the user's)."""
    return mqtt_credentials(spec) and "usersSecretRef" not in spec["mqtt"]


def mqtt_users_ref(name: str, spec: dict) -> dict:
    """The broker's users file as a {name, key} Secret reference: the user's, else the operator's."""
    if mqtt_users_operator_made(spec):
        return {"name": mqtt_users_generated_name(name), "key": USERS_KEY}
    return dict(spec["mqtt"]["usersSecretRef"])


def mqtt_bridge_refs(name: str, spec: dict) -> tuple[dict, dict]:
    """The bridge's MQTT user name and password as {name, key} Secret references."""
    if mqtt_users_operator_made(spec):
        secret = mqtt_users_generated_name(name)
        return {"name": secret, "key": BRIDGE_USERNAME_KEY}, {"name": secret, "key": BRIDGE_PASSWORD_KEY}
    m = spec["mqtt"]
    return dict(m["username"]["secretKeyRef"]), dict(m["password"]["secretKeyRef"])


def mqtt_devices_ref(name: str, spec: dict) -> dict:
    """The simulated fleet's device_id:password lines as a {name, key} Secret reference."""
    if mqtt_users_operator_made(spec):
        return {"name": mqtt_users_generated_name(name), "key": DEVICES_KEY}
    return dict(spec["fleet"]["credentialsSecretRef"])


def mqtt_volumes(program: str, name: str, spec: dict) -> tuple[list[dict], list[dict]]:
    """With broker credentials: the bridge's password and the simulator's device passwords, each Pod
    only its own Secret key, as files (never in the environment)."""
    if not mqtt_credentials(spec):
        return [], []
    if program == "bridge":
        v, m = secret_file_volume("mqtt-password", mqtt_bridge_refs(name, spec)[1], "password", MQTT_PASSWORD_MOUNT)
    elif program == "simulate":
        v, m = secret_file_volume("mqtt-devices", mqtt_devices_ref(name, spec), "credentials", MQTT_DEVICES_MOUNT)
    else:
        return [], []
    return [v], [m]


def settings_for(name: str, spec: dict) -> CommonSettings:
    host, port = mqtt_endpoint(name, spec)
    return CommonSettings(kafka_bootstrap=kafka_bootstrap(name, spec), mqtt_host=host, mqtt_port=port)


#: Fields of spec.preprocessing that say how it runs (engine, instances), not what it computes.
RUNTIME_FIELDS = ("engine", "replicas")


def preprocess_spec(spec: dict) -> PreprocessSpec:
    """The preprocessing part as the programs read it; raises SpecError/ValidationError when it cannot run."""
    return PreprocessSpec.model_validate({k: v for k, v in spec["preprocessing"].items() if k not in RUNTIME_FIELDS})
