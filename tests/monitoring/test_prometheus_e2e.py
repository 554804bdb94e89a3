"""A real Prometheus (Debian's 2.42 package) scrapes a running pipeline on the session's real Kafka and
HiveMQ: bridge, preprocessor and scorer as subprocesses, with bad payloads at every stage, a refused
model and a backlog. Its series get the labels the chart's ServiceMonitor gives them on Kubernetes
(`namespace`, `app_kubernetes_io_instance`, ...) by relabelling, and every expression of the Grafana
dashboard is evaluated as Grafana does (a range query) and compared with what the test sent."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Producer

from streamtrain.kafka import ensure_topics, producer_config, read_topic
from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.simulator.fleet import Fleet, FleetConfig
from streamtrain.stack.local import free_port
from streamtrain.stack.monitoring import DASHBOARD, RULES, LocalPrometheus, Target, prometheus_config
from streamtrain.topics import TopicSpec
from tests.ingest.test_bridge_e2e import bad_payloads, bridge_factory, scrape, simulate  # noqa: F401
from tests.programs import Program, settings_env
from tests.unit.stack.test_monitoring import alerts
from tests.waiting import eventually

NAMESPACE = "streamtrain-test"
# Raw readings written at once while the preprocessor runs: seconds of work for it, several scrape intervals (1 s)
# long, so the lag panel's samples can see the wait the backlog's last records had (50,000 drained in 1.5 s
# once the preprocessor worked on batches: a 1 s scrape then saw 0.5 s of it, and the test failed in CI).
BACKLOG = 150_000
MQTT_DEVICES, MQTT_READINGS = 20, 30
BAD_MQTT, BAD_RAW, BAD_FEATURES = 45, 30, 25
WINDOW_S = 300  # the dashboard's rate(...[5m])


def wait_for(what: str, check, timeout: float = 120.0, every: float = 0.5):
    return eventually(check, what, timeout=timeout, every=every)


def readings(prefix: str, devices: int, steps: int, seed: int) -> list[dict]:
    fleet = Fleet(FleetConfig(devices=devices, seed=seed, device_prefix=prefix))
    out = []
    for _ in range(steps):
        out += [msg for _, msg in fleet.messages(np.full(devices, time.time()))]
    return out


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(producer_config(bootstrap))
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(30) == 0


def raw_arrivals(bootstrap: str, topic: str) -> dict[tuple[str, int], float]:
    """(device_id, seq) -> when the reading reached the raw topic (its Kafka timestamp, s)."""
    out = {}
    for m in read_topic(bootstrap, topic, timeout=60):
        try:
            r = json.loads(m.value())
            out[(r["device_id"], r["seq"])] = m.timestamp()[1] / 1000
        except (ValueError, KeyError, TypeError):
            continue  # the bad records sent on purpose
    return out


def train_v1(pipeline, tag: str) -> None:
    """v1 from the preprocessor's own features of other readings, on a topic of its own: the scorer's
    features topic stays empty until the burst, so Prometheus sees its counters at 0 first."""
    from streamtrain.trainer.train import TrainSettings, train_once

    topic = f"t{tag}.train-features"
    ensure_topics(pipeline.kafka_bootstrap, [TopicSpec(topic, 3)])
    engine = Engine(PreprocessSpec.default())
    feats = [f for r in readings(f"tr{tag}", 20, 100, seed=3) if (f := engine.process(r).features)]
    produce(pipeline.kafka_bootstrap, topic, [(f["device_id"].encode(), json.dumps(f).encode()) for f in feats])
    train_once(
        TrainSettings(
            kafka_bootstrap=pipeline.kafka_bootstrap,
            topic_features=topic,
            topic_models=pipeline.topic_models,
            train_records=len(feats),
            epochs=2,
            min_records=100,
        )
    )


def publish_mqtt(port: int, payloads: list[tuple[str, bytes, str]]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for info in [client.publish(topic, payload, qos=1) for topic, payload, _ in payloads]:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def ours(result: list[dict], instance: str) -> list[dict]:
    return [
        s
        for s in result
        if s["metric"].get("namespace") == NAMESPACE and s["metric"].get("app_kubernetes_io_instance") == instance
    ]


def values(series: dict) -> list[float]:
    return [float(v) for _, v in series["values"] if not math.isnan(float(v))]


class DrainClock:
    """When the preprocessor's features counter passed ``target`` (polled at 10 Hz from its own /metrics):
    an independent measure of how long the backlog took."""

    def __init__(self, port: int, target: float) -> None:
        self.port, self.target, self._stop = port, target, threading.Event()
        self.reached: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.reached is None:
            if scrape(self.port).get("streamtrain_preprocess_features_out_total", 0) >= self.target:
                self.reached = time.time()
            time.sleep(0.1)

    def start(self) -> "DrainClock":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def within(value: float, expected: float, factor: float = 3.0) -> bool:
    return expected / factor <= value <= expected * factor


@pytest.mark.e2e
def test_every_dashboard_expression_has_data_of_the_right_magnitude(pipeline, bridge_factory, tmp_path):  # noqa: F811
    tag = uuid.uuid4().hex[:6]
    instance = f"pipe-{tag}"
    ports = {"bridge": free_port(), "preprocess": free_port(), "scorer": free_port()}
    prom = LocalPrometheus(tmp_path / "prom", free_port())
    prom.start(
        prometheus_config(
            [Target(c, p) for c, p in ports.items()], [RULES], namespace=NAMESPACE, instance=instance, interval="1s"
        )
    )
    programs: list[Program] = []
    try:
        t0 = time.time()
        bridge_factory(metrics_port=ports["bridge"])
        for name, args, extra in (("preprocess", ["preprocess"], {}), ("scorer", ["score"], {"batch_size": 200})):
            env = settings_env(
                pipeline, metrics_port=ports[name], group_id=f"{name}-{tag}", instance_id=f"{name}-{tag}", **extra
            )
            programs.append(Program(args, env, tmp_path / f"{name}.log").start())
        preprocess, scorer = programs

        def up() -> bool:
            got = {s["metric"]["app_kubernetes_io_component"] for s in ours(prom.query("up == 1"), instance)}
            return got == set(ports)

        wait_for("all three programs scraped", up, timeout=90)
        assert ours(prom.query("streamtrain_scorer_model_version == 0"), instance)  # waiting for a model

        train_v1(pipeline, tag)
        scorer.wait_log('"new_version": 1', timeout=120)
        wait_for(
            "the scorer's v1 counter seen at 0",
            lambda: ours(prom.query('streamtrain_scorer_records_scored_total{model_version="1"} == 0'), instance),
            timeout=30,
        )

        # A refused model: a well-formed envelope around something that is not a model.
        good = read_versions(pipeline.kafka_bootstrap, pipeline.topic_models)[-1]
        producer = Producer(producer_config(pipeline.kafka_bootstrap))
        publish_model(producer, pipeline.topic_models, b"not a keras model" * 50, {**good.metadata, "version": 2})
        assert producer.flush(10) == 0
        scorer.wait_log('"model_refused"', timeout=60)

        # The burst: a backlog of raw readings, bad records at each stage, good and bad MQTT traffic.
        raw = [
            (r["device_id"].encode(), json.dumps(r).encode()) for r in readings(f"bk{tag}", 40, BACKLOG // 40, seed=5)
        ]
        drain = DrainClock(ports["preprocess"], BACKLOG).start()
        burst = time.time()
        produce(
            pipeline.kafka_bootstrap, pipeline.topic_raw, raw + [(b"x", b"{not json %d" % i) for i in range(BAD_RAW)]
        )
        produced = time.time()
        produce(
            pipeline.kafka_bootstrap,
            pipeline.topic_features,
            [(b"x", b"not json")] * 13
            + [
                (b"x", json.dumps({"device_id": "x", "ts": time.time(), "seq": i}).encode())
                for i in range(BAD_FEATURES - 13)
            ],
        )
        publish_mqtt(pipeline.mqtt_port, bad_payloads(f"bad{tag}", BAD_MQTT))
        simulate(pipeline, MQTT_DEVICES, MQTT_READINGS, f"mq{tag}")
        good_total = BACKLOG + MQTT_DEVICES * MQTT_READINGS

        def scored() -> bool:
            m = scrape(ports["scorer"])
            done = sum(v for k, v in m.items() if k.startswith("streamtrain_scorer_records_scored_total"))
            dead = sum(v for k, v in m.items() if k.startswith("streamtrain_scorer_deadlettered_total"))
            return done >= good_total and dead >= BAD_FEATURES

        wait_for("every record scored or dead-lettered", scored, timeout=180)
        drain.stop()
        drained_s = drain.reached - produced  # the backlog's last records waited about this long
        time.sleep(3)  # a few more scrapes of the final values
        end = time.time()
        scores = [
            json.loads(m.value()) for m in read_topic(pipeline.kafka_bootstrap, pipeline.topic_scores, timeout=60)
        ]
        assert len(scores) == good_total

        # Every dashboard expression, as Grafana runs it: a range query over the run.
        dash = json.loads(DASHBOARD.read_text())
        results = {}
        for panel in dash["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$namespace", NAMESPACE)  # as Grafana substitutes one value
                series = ours(prom.api("query_range", query=expr, start=t0, end=end, step="1s")["result"], instance)
                assert series, f"{panel['title']}: no data for {expr}"
                results[panel["title"]] = series
        # The namespace variable lists our namespace.
        assert NAMESPACE in prom.api("label/namespace/values", **{"match[]": "streamtrain_scorer_records_scored_total"})

        def last(title: str, **labels) -> float:
            [s] = [s for s in results[title] if labels.items() <= s["metric"].items()]
            return values(s)[-1]

        measured = {}
        expect = {
            ("Bridge: MQTT messages forwarded to Kafka /s", ()): MQTT_DEVICES * MQTT_READINGS / WINDOW_S,
            ("Dead-lettered /s by program", (("program", "bridge"),)): BAD_MQTT / WINDOW_S,
            ("Dead-lettered /s by program", (("program", "preprocess"),)): BAD_RAW / WINDOW_S,
            ("Dead-lettered /s by program", (("program", "scorer"),)): BAD_FEATURES / WINDOW_S,
            ("Preprocess: features out /s", ()): good_total / WINDOW_S,
            ("Scorer: records scored /s", ()): good_total / WINDOW_S,
        }
        for (title, labels), want in expect.items():
            got = measured[f"{title} {dict(labels) or ''}"] = last(title, **dict(labels))
            assert within(got, want), f"{title} {dict(labels)}: {got:.4f}/s, sent {want:.4f}/s"

        assert last("Scorer: model version (champion)") == 1.0  # v2 was refused
        measured["anomaly rate"] = rate = last("Scorer: anomaly rate")
        assert 0.0 <= rate <= 1.0
        # The panel's histogram is the processing lag: the reading's arrival in the raw topic to its
        # score (not the reading's own ts, which the backlog's generation already made seconds old).
        arrived = raw_arrivals(pipeline.kafka_bootstrap, pipeline.topic_raw)
        truth = float(np.percentile([s["scored_at"] - arrived[(s["device_id"], s["seq"])] for s in scores], 95))
        measured["score latency p95"], measured["true p95 (scored_at - raw arrival)"] = (
            last("Device -> score latency p95"),
            truth,
        )
        # Buckets .01 .05 .1 .25 .5 1 2.5 5 10 30 60: interpolation within one bucket is off by < 3x.
        assert within(measured["score latency p95"], max(truth, 0.01)), measured
        measured["bridge delivery p95"] = last("Bridge: Kafka delivery p95")
        assert 0.0005 <= measured["bridge delivery p95"] <= 5.0

        lag = {s["metric"]["group"]: max(values(s)) for s in results["Consumer lag: records not yet processed"]}
        waited = {
            s["metric"]["group"]: max(values(s))
            for s in results["Consumer lag: oldest unprocessed record waiting (processing time)"]
        }
        measured["max lag records"], measured["max lag seconds"] = lag, waited
        pre = f"preprocess-{tag}"
        assert {pre, f"scorer-{tag}"} <= set(lag) and {pre, f"scorer-{tag}"} <= set(waited)
        assert BACKLOG / 10 <= lag[pre] <= BACKLOG + BAD_RAW + good_total, lag  # the backlog was seen
        measured["backlog written in (s)"], measured["its last records waited (s)"] = produced - burst, drained_s
        assert within(waited[pre], drained_s), (waited, drained_s)
        for s in results["Consumer lag: records not yet processed"]:
            assert values(s)[-1] == 0, f"{s['metric']['group']} caught up, yet lag {values(s)[-1]}"

        # The rules load and evaluate on the real Prometheus; the refused model raised its alert.
        groups = prom.api("rules")["groups"]
        loaded = {r["name"]: r["health"] for g in groups for r in g["rules"]}
        assert loaded == dict.fromkeys(alerts(), "ok"), groups  # every alert of the rules file, each healthy
        firing = {
            a["labels"]["alertname"]
            for a in prom.api("alerts")["alerts"]
            if a["state"] == "firing" and a["labels"].get("app_kubernetes_io_instance") == instance
        }
        assert "StreamTrainModelRefused" in firing, firing
        print("measured:", json.dumps(measured, indent=1, default=str))
    finally:
        for prog in programs:
            prog.stop()
        prom.stop()
    for prog in programs:
        assert prog.proc.returncode == 0, prog.log()[-3000:]
