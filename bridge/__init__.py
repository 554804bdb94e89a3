"""The MQTT -> Kafka bridge program."""
