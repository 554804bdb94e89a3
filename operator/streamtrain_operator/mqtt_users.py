"""A pipeline's MQTT identities, made by the operator when the managed broker authenticates (the default)
and ``mqtt.usersSecretRef`` names no users Secret of the user's: one Secret ``<name>-mqtt-credentials`` with
the broker's users file (hashes only, ``streamtrain.credentials``), the bridge's user name and random
password and, for a simulated fleet, the ``device_id:password`` lines of its ``fleet.devices`` devices
(the ids the simulator gives them). Each Pod mounts only its key (render.connections).

Created once and never replaced: a fleet grown later needs a new Secret (delete this one: the next
reconcile makes another) or a users Secret of one's own. Hashing costs about 10 ms of CPU per device,
once. The passwords exist only in the Secret manifest built here and the create request: never logged,
never in status, Events or metrics."""

from __future__ import annotations

from streamtrain import credentials
from streamtrain.operator.render import connections, objects

#: The bridge's MQTT user (role bridge); the name is no secret, the Secret carries it beside the password.
BRIDGE_USER = "bridge"


def new_material(spec: dict) -> dict[str, str]:
    """The Secret's keys (render.connections: USERS_KEY, BRIDGE_*_KEY, DEVICES_KEY) for ``spec``."""
    bridge_password = credentials.new_password()
    devices: dict[str, str] = {}
    if spec["fleet"]["simulated"]:
        devices = {d: credentials.new_password() for d in credentials.fleet_ids(spec["fleet"]["devices"])}
    users = credentials.users_lines(
        [(BRIDGE_USER, "bridge", bridge_password), *((d, "device", p) for d, p in devices.items())]
    )
    material = {
        connections.USERS_KEY: "\n".join(users) + "\n",
        connections.BRIDGE_USERNAME_KEY: BRIDGE_USER,
        connections.BRIDGE_PASSWORD_KEY: bridge_password,
    }
    if devices:
        material[connections.DEVICES_KEY] = credentials.device_lines(devices)
    return material


def new_secret(name: str, namespace: str, spec: dict) -> objects.Manifest:
    """The Secret ``<name>-mqtt-credentials`` with new identities (``stringData``). Owner references are the
    caller's (``kopf.adopt``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": objects.meta(name, connections.mqtt_users_generated_name(name), "hivemq", namespace),
        "type": "Opaque",
        "stringData": new_material(spec),
    }
