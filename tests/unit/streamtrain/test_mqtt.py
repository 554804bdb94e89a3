"""MQTT TLS settings and config without a broker (tests/ingest/test_mqtt_tls_e2e.py runs them for real)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from streamtrain.mqtt import MqttTls, MqttTlsError, hivemq_config_xml, make_client, tls_pending


def test_a_tls_config_has_one_tls_listener_and_no_plain_one():
    root = ET.fromstring(hivemq_config_xml(8883, "0.0.0.0", tls=("/s/broker.p12", "pw")))
    listeners = root.find("listeners")
    assert [e.tag for e in listeners] == ["tls-tcp-listener"]
    tls = listeners.find("tls-tcp-listener")
    assert tls.findtext("port") == "8883" and tls.findtext("tls/keystore/path") == "/s/broker.p12"
    assert tls.findtext("tls/keystore/password") == tls.findtext("tls/keystore/private-key-password") == "pw"
    plain = ET.fromstring(hivemq_config_xml(1883, "0.0.0.0")).find("listeners")
    assert [e.tag for e in plain] == ["tcp-listener"]


def test_clients_take_the_ca_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("STREAMTRAIN_MQTT_CA_FILE", raising=False)
    assert MqttTls.from_env().ca_file is None
    assert make_client()._ssl_context is None  # plain TCP
    monkeypatch.setenv("STREAMTRAIN_MQTT_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(MqttTlsError, match="missing.pem does not exist"):
        make_client()


def test_a_missing_ca_file_is_an_invalid_setting_of_the_programs_that_speak_mqtt(monkeypatch, tmp_path):
    from streamtrain.bridge.app import BridgeSettings
    from streamtrain.simulator.settings import SimulatorSettings

    monkeypatch.setenv("STREAMTRAIN_MQTT_CA_FILE", str(tmp_path / "missing.pem"))
    for cls in (BridgeSettings, SimulatorSettings):
        with pytest.raises(ValueError, match="MQTT CA file"):
            cls()


def test_plain_sockets_hold_nothing_pending():
    assert tls_pending(None) is False
    assert tls_pending(object()) is False
