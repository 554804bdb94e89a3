"""StreamTrain shared core: settings, message schema, topics, Kafka/MQTT plumbing,
model codec and metrics. No entry points live here; programs sit on top of it."""

__version__ = "0.1.0"
