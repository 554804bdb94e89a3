"""The bridge's redelivery fingerprints when the raw topic cannot be read: a warning, and ingestion goes on."""

from __future__ import annotations

from structlog.testing import capture_logs

from streamtrain.bridge.app import Bridge, BridgeSettings
from streamtrain.stack.local import free_port


def test_unreadable_raw_topic_is_a_warning_not_a_stop():
    s = BridgeSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}", ingest_mapping="cloud", client_id="t")
    bridge = Bridge(s)
    with capture_logs() as logs:
        assert bridge.load_fingerprints() == 0
    # The bridge's own events (librdkafka's connection failures are kafka_client lines of their own).
    own = [e for e in logs if e["event"] != "kafka_client"]
    assert [e["event"] for e in own] == ["redelivery_fingerprints_unavailable"]
    assert "Read on the raw topic" in own[0]["fix"]


def test_default_mapping_reads_nothing():
    s = BridgeSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}", client_id="t")
    assert Bridge(s).load_fingerprints() == 0
