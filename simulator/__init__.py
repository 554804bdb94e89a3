"""The device simulator: a fleet of virtual devices, or a CSV replay, publishing over MQTT."""
