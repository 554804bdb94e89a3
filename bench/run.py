"""`make bench`: how fast each stage is, as a ratio against its own limit measured in the same run.

Starts its own Kafka + HiveMQ on free ports (data in a temporary directory), so figures do not
depend on whatever else runs. Prints one table, writes bench/results/latest.json and a plot.
QUICK=1 (or --quick) runs the small sizes only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, Producer

from streamtrain import logs
from streamtrain.kafka import client_config, ensure_topics, producer_config
from streamtrain.mqtt import no_delay
from streamtrain.settings import CommonSettings, StackSettings, settings_env
from streamtrain.simulator.fleet import Fleet, FleetConfig
from streamtrain.simulator.publish import run_fleet
from streamtrain.stack.local import LocalStack, free_port
from streamtrain.topics import TopicSpec, pipeline_topics

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    stage: str
    size: int
    ours_name: str
    ours: float
    limit_name: str
    limit: float
    unit: str
    note: str = ""
    ratio: float = field(init=False)

    def __post_init__(self) -> None:
        self.ratio = round(self.ours / self.limit, 3) if self.limit else 0.0


class Bench:
    Figure = Figure

    def __init__(self, quick: bool, only: list[str] | None = None, jfr: Path | None = None) -> None:
        self.quick = quick
        self.only = only or []
        self.jfr = jfr
        self.figures: list[Figure] = []
        home = Path(tempfile.mkdtemp(prefix="streamtrain-bench-"))
        self.stack = LocalStack(
            StackSettings(
                home=home,
                jars=REPO / ".streamtrain" / "lib",
                kafka_port=free_port(),
                kafka_controller_port=free_port(),
                mqtt_port=free_port(),
            )
        )

    def add(self, fig: Figure) -> None:
        self.figures.append(fig)
        print(
            f"  {fig.stage:<28} n={fig.size:>8}  {fig.ours_name} {fig.ours:>10.1f} {fig.unit}"
            f"  / {fig.limit_name} {fig.limit:>10.1f}  = {fig.ratio:.3f} {fig.note}",
            flush=True,
        )

    def settings(self) -> CommonSettings:
        tag = uuid.uuid4().hex[:6]
        s = CommonSettings(
            kafka_bootstrap=self.stack.bootstrap,
            mqtt_port=self.stack.settings.mqtt_port,
            **{
                f"topic_{t}": f"bench{tag}.{t}"
                for t in ("raw", "deadletter", "features", "windows", "sequences", "models", "scores")
            },
        )
        specs = [
            TopicSpec(t.name, t.partitions, {**t.config, "message.timestamp.type": "LogAppendTime"})
            for t in pipeline_topics(s, partitions=6)
        ]
        ensure_topics(s.kafka_bootstrap, specs)
        return s

    # ------------------------------------------------------------------ Kafka alone
    def kafka_alone(self, n: int) -> None:
        s = self.settings()
        payload = json.dumps(
            {
                "device_id": "dev-00001",
                "ts": time.time(),
                "seq": 1,
                "temperature": 71.2,
                "current": 1.9,
                "vibration": 0.31,
                "pressure": 3.0,
                "label": 0,
            }
        ).encode()
        p = Producer(producer_config(s.kafka_bootstrap, **{"linger.ms": 5}))
        t0 = time.perf_counter()
        for i in range(n):
            while True:
                try:
                    p.produce(s.topic_raw, payload, key=f"dev-{i % 100:05d}".encode())
                    break
                except BufferError:
                    p.poll(0.01)
            if i % 1000 == 0:
                p.poll(0)
        p.flush(60)
        produce_rate = n / (time.perf_counter() - t0)
        c = Consumer(
            client_config(
                s.kafka_bootstrap,
                **{
                    "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                },
            )
        )
        c.subscribe([s.topic_raw])
        got, t0 = 0, time.perf_counter()
        while got < n:
            for m in c.consume(5000, 1.0):
                if not m.error():
                    got += 1
        consume_rate = n / (time.perf_counter() - t0)
        c.close()
        # The ceiling: Kafka's own Java perf tools, same record, same guarantees, their own topic.
        from bench import kafka_perf

        java_topic = f"{s.topic_raw}.java"
        ensure_topics(s.kafka_bootstrap, [TopicSpec(java_topic, 6, {})])
        java_produce = kafka_perf.produce_rate(self.stack, java_topic, n, payload)
        java_consume = kafka_perf.consume_rate(self.stack, java_topic, n)
        self.add(
            Figure(
                "kafka produce",
                n,
                "confluent-kafka",
                produce_rate,
                "java perf-test",
                java_produce,
                "rec/s",
                "idempotent, acks=all, linger 5 ms",
            )
        )
        self.add(
            Figure(
                "kafka consume",
                n,
                "confluent-kafka",
                consume_rate,
                "java perf-test",
                java_consume,
                "rec/s",
                "group join included",
            )
        )

    # ------------------------------------------------------------------ ingestion
    def _mqtt_subscriber_rate(self, n: int, devices: int) -> float:
        """Limit: plain MQTT publish -> subscribe at QoS 1 on the same broker (TCP_NODELAY, auto-ack)."""
        port = self.stack.settings.mqtt_port
        got = [0]
        done = threading.Event()
        prefix = f"m{uuid.uuid4().hex[:5]}"

        def on_message(client, userdata, msg):
            if not msg.topic.startswith(f"devices/{prefix}-"):
                return
            got[0] += 1
            if got[0] >= n:
                done.set()

        subscribed = threading.Event()

        def on_connect(client, userdata, flags, rc, props):
            no_delay(client.socket())
            client.subscribe("devices/+/telemetry", qos=1)

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        sub.on_message, sub.on_connect = on_message, on_connect
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        if not subscribed.wait(30):
            raise RuntimeError("MQTT subscription not acknowledged")
        fleet = Fleet(FleetConfig(devices=devices, device_prefix=prefix))
        t0 = time.perf_counter()
        asyncio.run(run_fleet(fleet, "127.0.0.1", port, rate=0, count=n // devices, duration=None, connections=4))
        done.wait(120)
        rate = got[0] / (time.perf_counter() - t0)
        sub.disconnect()
        sub.loop_stop()
        return rate

    def _bridge(self, s: CommonSettings, group: str, connections: int) -> subprocess.Popen:
        env = settings_env(s, share_group=group, client_id=group, connections=connections)
        log = open(self.stack.home / f"{group}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamtrain.cli.main", "bridge"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while b'"mqtt_subscribed"' not in (self.stack.home / f"{group}.log").read_bytes():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"bridge did not start: {(self.stack.home / f'{group}.log').read_text()[-2000:]}")
            time.sleep(0.1)
        return proc

    def _drain_raw(self, s: CommonSettings, expected: int, timeout: float = 600) -> tuple[int, list[float]]:
        c = Consumer(
            client_config(
                s.kafka_bootstrap,
                **{
                    "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                },
            )
        )
        c.subscribe([s.topic_raw])
        keys, latencies = set(), []
        deadline = time.monotonic() + timeout
        while len(keys) < expected and time.monotonic() < deadline:
            for m in c.consume(5000, 0.5):
                if m.error():
                    continue
                body = json.loads(m.value())
                keys.add((body["device_id"], body["seq"]))
                # Topic uses LogAppendTime: the broker's clock when the record was appended.
                latencies.append(m.timestamp()[1] / 1000 - body["ts"])
        c.close()
        return len(keys), latencies

    def ingestion(self, n: int, connections: int) -> None:
        devices = 200
        limit = self._mqtt_subscriber_rate(n, devices)
        s = self.settings()
        group = f"bench-{uuid.uuid4().hex[:6]}"
        bridge = self._bridge(s, group, connections)
        try:
            fleet = Fleet(FleetConfig(devices=devices, device_prefix=f"i{uuid.uuid4().hex[:5]}"))
            count = n // devices
            t0 = time.perf_counter()
            asyncio.run(run_fleet(fleet, "127.0.0.1", s.mqtt_port, rate=0, count=count, duration=None, connections=4))
            got, _ = self._drain_raw(s, devices * count)
            rate = got / (time.perf_counter() - t0)
        finally:
            bridge.terminate()
            bridge.wait(60)
        lost = devices * count - got
        self.add(
            Figure(
                f"ingest MQTT->Kafka ({connections} conn)",
                devices * count,
                "bridge",
                rate,
                "mqtt pub->sub",
                limit,
                "msg/s",
                f"QoS 1, lost={lost}",
            )
        )

    def ingest_latency(self, rate_total: float, seconds: float) -> None:
        s = self.settings()
        group = f"bench-{uuid.uuid4().hex[:6]}"
        bridge = self._bridge(s, group, 1)
        devices = 100
        try:
            fleet = Fleet(FleetConfig(devices=devices, device_prefix=f"l{uuid.uuid4().hex[:5]}"))
            count = int(seconds * rate_total / devices)
            asyncio.run(
                run_fleet(
                    fleet,
                    "127.0.0.1",
                    s.mqtt_port,
                    rate=rate_total / devices,
                    count=count,
                    duration=None,
                    connections=2,
                )
            )
            got, lat = self._drain_raw(s, devices * count)
        finally:
            bridge.terminate()
            bridge.wait(60)
        lat_ms = sorted(x * 1000 for x in lat)
        p50, p99 = statistics.median(lat_ms), lat_ms[int(len(lat_ms) * 0.99) - 1]
        # No separate limit exists for latency; the Kafka ceiling's inverse shows the scale.
        self.add(Figure("ingest latency p50", got, "device->Kafka", p50, "", 0, "ms", f"at {rate_total:.0f} msg/s"))
        self.add(Figure("ingest latency p99", got, "device->Kafka", p99, "", 0, "ms", f"at {rate_total:.0f} msg/s"))

    # ------------------------------------------------------------------ simulator scale
    def simulator_scale(self, devices: int, seconds: float) -> None:
        fleet = Fleet(FleetConfig(devices=devices, device_prefix=f"z{uuid.uuid4().hex[:4]}"))
        rep = asyncio.run(
            run_fleet(
                fleet, "127.0.0.1", self.stack.settings.mqtt_port, rate=1.0, count=None, duration=seconds, connections=8
            )
        )
        offered = devices * 1.0
        self.add(
            Figure(
                f"simulator {devices} devices @1Hz",
                rep.published,
                "sustained",
                rep.published / rep.seconds,
                "offered",
                offered,
                "msg/s",
            )
        )

    def run(self) -> None:
        logs.configure("WARNING", "console")
        print(
            f"StreamTrain bench ({'quick' if self.quick else 'full'}) on {platform.node()}: "
            f"{os.cpu_count()} cores, Python {platform.python_version()}",
            flush=True,
        )
        self.stack.up(create_topics=False)
        if self.only:
            from bench import stages

            try:
                for name in self.only:
                    stages.GROUPS[name](self)
            finally:
                self.stack.down()
            self.write()
            return
        try:
            # Full run: every figure at 3 sizes (or offered loads) so the cost curve shows.
            sizes = [5_000] if self.quick else [5_000, 20_000, 60_000]  # ingestion: ~2k msg/s
            for n in [20_000] if self.quick else [100_000, 300_000, 1_000_000]:
                self.kafka_alone(n)
            for n in sizes:
                self.ingestion(n, connections=1)
            if not self.quick:
                for n in sizes:
                    self.ingestion(n, connections=4)
            for rate in [500] if self.quick else [200, 500, 1000]:
                self.ingest_latency(rate, 5 if self.quick else 20)
            for devices in [2000] if self.quick else [2000, 5000, 10_000]:
                self.simulator_scale(devices, 5 if self.quick else 20)
            self.extra_stages()
            self.pipeline_under_load()
        finally:
            self.stack.down()
        self.write()

    def extra_stages(self) -> None:
        """Training, scoring and hot-swap figures (bench/stages.py)."""
        from bench import stages

        stages.run(self)

    def pipeline_under_load(self) -> None:
        """Load generator -> HiveMQ -> ingestion -> preprocess -> score at rising rates (bench/pipeline_load.py)."""
        from bench import pipeline_load

        rates, seconds = ([1000], 15) if self.quick else ([1000, 2500, 5000, 10_000], 120)
        self.load = pipeline_load.run(self, rates, seconds)

    def write(self) -> None:
        out = REPO / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        data = {
            "machine": {"node": platform.node(), "cores": os.cpu_count(), "python": platform.python_version()},
            "quick": self.quick,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "figures": [asdict(f) for f in self.figures],
            "pipeline_load": getattr(self, "load", None),
        }
        name = "latest" if not self.only else "latest-" + "-".join(self.only)  # a partial run keeps the full one
        (out / f"{name}.json").write_text(json.dumps(data, indent=2))
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            figs = [f for f in self.figures if f.limit and f.unit != "ms"]
            fig, ax = plt.subplots(figsize=(9, 0.4 * len(figs) + 1))
            ax.barh([f"{f.stage} n={f.size}" for f in figs], [f.ratio for f in figs])
            ax.axvline(1.0, color="k", lw=0.8)
            ax.set_xlabel("ours / limit")
            fig.savefig(out / f"{name}.png", bbox_inches="tight", dpi=90)
        except Exception as exc:  # noqa: BLE001 - the table and JSON matter more than the plot
            print(f"plot skipped: {exc}")
        print(f"\nwrote {out / name}.json")


def main() -> None:
    import faulthandler

    faulthandler.register(signal.SIGUSR1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop the brokers
    ap.add_argument(
        "--quick", action="store_true", default=os.environ.get("QUICK") == "1", help="small sizes only (also QUICK=1)"
    )
    from bench.stages import GROUPS

    ap.add_argument(
        "--only",
        action="append",
        choices=sorted(GROUPS),
        help="run only this stage group (repeatable); writes results/latest-<group>.json",
    )
    ap.add_argument(
        "--jfr",
        type=Path,
        metavar="FILE",
        help="record the Kafka Streams scorer's JVM with Java Flight Recorder (profile settings) into FILE "
        "(read it with `jfr print --events jdk.ExecutionSample FILE`); e.g. with --only streams-scorer",
    )
    args = ap.parse_args()
    Bench(args.quick, args.only, args.jfr.resolve() if args.jfr else None).run()


if __name__ == "__main__":
    main()
