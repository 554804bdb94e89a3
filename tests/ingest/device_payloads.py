"""Example messages of the devices the presets are for, written from the projects' documentation.

Each is (topic, payload, expected reading fields) for unit tests of the mapping and end-to-end tests
through the bridge. ``ARRIVED`` is the arrival time the unit tests pass.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

ARRIVED = 1_765_015_300.5

# Zigbee2MQTT: zigbee2mqtt/<friendly name>, a flat object of the device's exposes, no time, no seq.
ZIGBEE_TOPIC = "zigbee2mqtt/kitchen-sensor"
ZIGBEE = {
    "temperature": 21.5,
    "humidity": 48,
    "pressure": 1013.2,
    "battery": 97,
    "battery_low": False,
    "voltage": 2995,
    "linkquality": 120,
    "update": {"state": "idle"},  # nested: update_state (string) is left out
    "last_seen": "2026-12-06T10:15:00+01:00",  # excluded by the preset
}
ZIGBEE_CHANNELS = {
    "temperature": 21.5,
    "humidity": 48.0,
    "pressure": 1013.2,
    "battery": 97.0,
    "battery_low": 0.0,
    "voltage": 2995.0,
    "linkquality": 120.0,
}

# Tasmota: tele/<topic>/SENSOR every TelePeriod, nested per sensor, Time in the device's local time.
TASMOTA_TOPIC = "tele/plug-1/SENSOR"
TASMOTA = {
    "Time": "2026-12-06T10:15:00",
    "ENERGY": {
        "TotalStartTime": "2026-01-10T08:00:00",
        "Total": 12.345,
        "Yesterday": 0.8,
        "Today": 0.41,
        "Power": 42,
        "ApparentPower": 50,
        "ReactivePower": 27,
        "Factor": 0.84,
        "Voltage": 231,
        "Current": 0.18,
    },
    "AM2301": {"Temperature": 22.1, "Humidity": 45.3, "DewPoint": 9.7},
    "TempUnit": "C",
}
TASMOTA_TS = datetime(2026, 12, 6, 10, 15, tzinfo=ZoneInfo("UTC")).timestamp()
TASMOTA_CHANNELS = {  # flattened, then lower_snake_case as preprocessing specs name features
    "energy_total": 12.345,
    "energy_yesterday": 0.8,
    "energy_today": 0.41,
    "energy_power": 42.0,
    "energy_apparent_power": 50.0,
    "energy_reactive_power": 27.0,
    "energy_factor": 0.84,
    "energy_voltage": 231.0,
    "energy_current": 0.18,
    "am2301_temperature": 22.1,
    "am2301_humidity": 45.3,
    "am2301_dew_point": 9.7,
}

# Cloud-IoT style firmware: <fleet>/<device>/data, device id and ms timestamp in the payload.
CLOUD_TOPIC = "fleet-a/dev-7/data"
CLOUD = {
    "deviceId": "dev-7",
    "timestamp": 1_765_015_200_123,
    "firmware": "2.4.1",
    "telemetry": {"temp": 36.6, "rpm": 1200, "motor": {"current": 3.2, "vibration": 0.04}},
}
CLOUD_CHANNELS = {"temp": 36.6, "rpm": 1200.0, "motor_current": 3.2, "motor_vibration": 0.04}

# Today's shape.
# ESPHome's MQTT component: <topic prefix>/sensor/<object id>/state, one value per topic, published as text
# (https://esphome.io/components/mqtt: the state topic of a sensor carries its value alone).
ESPHOME_TOPIC = "kitchen/sensor/temperature/state"
ESPHOME = "21.5"
ESPHOME_DEVICE = [  # one node's sensors, each on its own topic: (topic, payload)
    ("kitchen/sensor/temperature/state", "21.5"),
    ("kitchen/sensor/humidity/state", "48.2"),
    ("kitchen/sensor/wifi_signal/state", "-61"),
]

STREAMTRAIN_TOPIC = "devices/dev-8/telemetry"
STREAMTRAIN = {"device_id": "dev-8", "ts": 1_765_015_200.25, "seq": 17, "temperature": 71.3, "current": 1.92}


def encode(obj: dict) -> bytes:
    return json.dumps(obj).encode()
