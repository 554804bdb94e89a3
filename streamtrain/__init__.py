"""StreamTrain shared core: settings, message schema, topics, Kafka/MQTT plumbing,
model codec and metrics. No entry points live here; programs sit on top of it."""

#: The release version, written here only: pyproject.toml reads it; `make version` checks the chart,
#: the Java scorer's pom, the CRD and the examples against it (`python tools/version.py set X.Y.Z` rewrites them).
__version__ = "0.1.0"
