"""The local stack: real Apache Kafka (KRaft) and HiveMQ CE on loopback, no Docker."""
