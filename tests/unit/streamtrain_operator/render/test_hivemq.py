"""The managed broker the operator renders: the config.xml it runs (one text with the local stack and the
launcher image: the maximum packet size from the telemetry limit) mounted where each image reads it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from streamtrain.mqtt import BROKER_MAX_PACKET_BYTES, hivemq_config_xml
from streamtrain.operator import render, validate
from streamtrain.operator.render import hivemq, objects
from streamtrain.telemetry import MAX_PAYLOAD_BYTES
from tests.k8s.conftest import ROOT, load_example

DOCKERFILE = (ROOT / "images/hivemq.Dockerfile").read_text()


def _children(example: str, change=None) -> list[dict]:
    r = load_example(ROOT / f"examples/{example}.yaml")
    if change:
        change(r["spec"])
    return render.render(r["metadata"]["name"], "pipelines", validate.defaulted(r)["spec"])


def _broker(children: list[dict]) -> tuple[dict, dict]:
    """The broker's ConfigMap and Deployment."""
    cm = next(m for m in children if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-hivemq"))
    dep = next(m for m in children if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-hivemq"))
    return cm, dep


def _config_mount(dep: dict) -> dict:
    pod = dep["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    return {**mount, "configMap": volume["configMap"]["name"]}


def test_the_broker_runs_the_packet_limit_of_the_telemetry_limit():
    cm, dep = _broker(_children("minimal", lambda s: s.update(mqtt={"tls": {"enabled": False}})))
    xml = cm["data"]["config.xml"]
    root = ET.fromstring(xml)
    assert int(root.findtext("mqtt/packets/max-packet-size")) == BROKER_MAX_PACKET_BYTES
    assert BROKER_MAX_PACKET_BYTES > MAX_PAYLOAD_BYTES
    # One text: the launcher image's file and the local stack's, listening on the container port.
    assert xml == hivemq_config_xml(1883, "0.0.0.0") == (ROOT / "images/hivemq-config.xml").read_text()
    ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert root.findtext("listeners/tcp-listener/port") == str(ports[0]["containerPort"])
    assert root.findtext("listeners/tcp-listener/bind-address") == "0.0.0.0"
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "hivemq"
    # With TLS (the default) the same text but for its one listener (test_mqtt_tls_render.py).
    tls_cm, _ = _broker(_children("minimal"))
    tls_root = ET.fromstring(tls_cm["data"]["config.xml"])
    assert tls_root.find("listeners/tcp-listener") is None
    for kept in ("mqtt", "persistence", "anonymous-usage-statistics"):
        assert ET.tostring(tls_root.find(kept)) == ET.tostring(root.find(kept)), kept


def test_the_stock_image_reads_only_its_config_file_from_the_config_map():
    cm, dep = _broker(_children("minimal", lambda s: s.setdefault("mqtt", {}).update(authentication="none")))
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].startswith("hivemq/hivemq-ce:")
    mount = _config_mount(dep)
    # The stock image's conf folder also holds its logback.xml: only config.xml is replaced.
    assert mount == {
        "name": "config",
        "mountPath": "/opt/hivemq/conf/config.xml",
        "subPath": "config.xml",
        "readOnly": True,
        "configMap": cm["metadata"]["name"],
    }


def test_the_launcher_reads_the_config_map_as_its_config_folder():
    # The folder the image's entrypoint hands the launcher as its config folder.
    entrypoint_conf = re.search(r'"HiveMQLauncher", \\\s*"([^"]+)"', DOCKERFILE)
    assert entrypoint_conf and entrypoint_conf.group(1) == hivemq.LAUNCHER_CONFIG_DIR
    for example in ("secure", "ingest-extension"):  # authentication credentials; ingest extension
        cm, dep = _broker(_children(example))
        assert "-hivemq:" in dep["spec"]["template"]["spec"]["containers"][0]["image"]
        mount = _config_mount(dep)
        assert mount["mountPath"] == hivemq.LAUNCHER_CONFIG_DIR and mount["readOnly"] and "subPath" not in mount
        assert mount["configMap"] == cm["metadata"]["name"]


def test_a_changed_config_restarts_the_broker(monkeypatch):
    def annotation() -> str:
        cm, dep = _broker(_children("minimal"))
        value = dep["spec"]["template"]["metadata"]["annotations"]["streamtrain.io/config-hash"]
        assert value == objects.digest(cm["data"])
        return value

    before = annotation()
    monkeypatch.setattr(hivemq, "hivemq_config_xml", lambda port, bind, **kw: hivemq_config_xml(port, bind, 4096, **kw))
    assert annotation() != before


def _data_volume(dep: dict) -> dict:
    pod = dep["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == hivemq.WRITES["data"]]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return volume


def _claims(children: list[dict]) -> list[dict]:
    return [m for m in children if m["kind"] == "PersistentVolumeClaim"]


def test_broker_data_is_an_empty_dir_by_default():
    """A claim on a cluster without a provisioner or a free volume would keep the broker from starting."""
    for example in ("minimal", "secure", "ingest-extension"):
        kids = _children(example)
        assert _claims(kids) == []
        assert _data_volume(_broker(kids)[1]) == {"name": "data", "emptyDir": {}}


def test_broker_data_with_a_size_is_a_persistent_volume_claim():
    for example in ("minimal", "secure", "ingest-extension"):
        kids = _children(example, lambda s: s.setdefault("mqtt", {}).update(storage={"size": "1Gi"}))
        (claim,) = _claims(kids)
        _, dep = _broker(kids)
        assert claim["metadata"]["name"] == dep["metadata"]["name"] + "-data"
        assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        assert _data_volume(dep) == {"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
        # One Pod holds the claim: the old broker stops before the new one starts.
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
        }
        # The image's writable folders other than data stay scratch space.
        pod = dep["spec"]["template"]["spec"]
        assert [v["name"] for v in pod["volumes"] if "emptyDir" in v] == ["log", "tmp"]


def test_storage_size_and_class_reach_the_claim():
    kids = _children(
        "minimal", lambda s: s.setdefault("mqtt", {}).update(storage={"size": "5Gi", "storageClass": "fast-ssd"})
    )
    (claim,) = _claims(kids)
    assert (
        claim["spec"]["resources"]["requests"]["storage"] == "5Gi" and claim["spec"]["storageClassName"] == "fast-ssd"
    )


def test_empty_size_keeps_an_empty_dir_and_the_same_rollout():
    kids = _children("minimal", lambda s: s.setdefault("mqtt", {}).update(storage={"size": ""}))
    assert _claims(kids) == []
    _, dep = _broker(kids)
    assert _data_volume(dep) == {"name": "data", "emptyDir": {}}
    # The same strategy either way: moving to a claim never switches the Deployment's strategy type.
    assert dep["spec"]["strategy"] == _broker(_children("minimal"))[1]["spec"]["strategy"]


def test_no_claim_for_an_external_broker():
    assert _claims(_children("external")) == []


def test_the_launcher_serves_the_brokers_own_counters_where_prometheus_scrapes():
    """Authentication on (the launcher image, no extension): HiveMQ's dropped-message counter on the metrics
    port, which the pipeline's metrics Service and the chart's ServiceMonitor scrape; the stock image has none."""
    no_auth = lambda s: s.setdefault("mqtt", {}).update(authentication="none")  # noqa: E731
    for example, change, served in (("secure", None, True), ("minimal", None, True), ("minimal", no_auth, False)):
        _, broker = _broker(_children(example, change))
        c = broker["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if served:
            assert env["STREAMTRAIN_BROKER_METRICS_PORT"] == str(ports["metrics"]) == str(objects.METRICS_PORT)
        else:
            assert "STREAMTRAIN_BROKER_METRICS_PORT" not in env and "metrics" not in ports
