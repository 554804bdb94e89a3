"""Bridge throughput at QoS 1: N messages published flat out, time until all are in Kafka.

Runs against a running stack (`streamtrain stack up`). Prints msgs/s through the bridge and,
as the limit in the same run, the publish rate of the simulator with no bridge subscribed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid

from streamtrain.simulator.fleet import Fleet, FleetConfig
from streamtrain.simulator.publish import run_fleet


def drop_session(client_id: str) -> None:
    """A persistent session left behind keeps queueing every later message (and costs HiveMQ CPU)."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", 1883, clean_start=True)
    c.loop(1)
    c.disconnect()


def forwarded(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    m = re.search(r"^streamtrain_bridge_forwarded_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main(devices: int = 200, count: int = 250) -> None:
    total = devices * count
    fleet = Fleet(FleetConfig(devices=devices, device_prefix=f"b{uuid.uuid4().hex[:4]}"))
    t0 = time.monotonic()
    asyncio.run(run_fleet(fleet, "127.0.0.1", 1883, rate=0, count=count, duration=None, connections=4))
    publish_only = total / (time.monotonic() - t0)
    group = f"bench-{uuid.uuid4().hex[:6]}"
    bridge = subprocess.Popen(
        [sys.executable, "-m", "streamtrain.cli.main", "bridge", "--metrics-port", "9488", "--client-id", group],
        env={**os.environ, "STREAMTRAIN_SHARE_GROUP": group},
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                forwarded(9488)
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(2)
        fleet = Fleet(FleetConfig(devices=devices, device_prefix=f"b{uuid.uuid4().hex[:4]}"))
        t0 = time.monotonic()
        asyncio.run(run_fleet(fleet, "127.0.0.1", 1883, rate=0, count=count, duration=None, connections=4))
        while forwarded(9488) < total and time.monotonic() - t0 < 300:
            time.sleep(0.05)
        through_bridge = total / (time.monotonic() - t0)
    finally:
        bridge.terminate()
        bridge.wait(30)
        drop_session(group)
    print(
        json.dumps(
            {
                "messages": total,
                "publish_only_msgs_per_s": round(publish_only),
                "through_bridge_msgs_per_s": round(through_bridge),
                "ratio": round(through_bridge / publish_only, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
