"""One Apache Kafka KRaft node on loopback: its properties, storage formatting, command line and probe."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streamtrain.kafka import client_config
from streamtrain.stack.jars import JAVA_DIR
from streamtrain.stack.processes import StackError, port_open


def server_properties(
    node_id: int, port: int, cport: int, data: Path, voters: str, nodes: int, host: str = "127.0.0.1"
) -> dict[str, str]:
    """A combined broker and controller node with a PLAINTEXT client listener on ``host`` (controllers on
    loopback), one of ``nodes``
    whose controllers are ``voters``. With three or more nodes every topic (the internal ones and
    those created without a replica count) gets three replicas and accepts a write once two have it."""
    replicas = min(nodes, 3)
    min_isr = 2 if nodes >= 3 else 1
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data),
        "num.partitions": "3",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": "5",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "message.max.bytes": str(2 * 1024 * 1024 + 1024),
        "log.cleaner.enable": "true",
        "log.retention.check.interval.ms": "60000",
    }


def voters(controller_ports: list[int]) -> str:
    """controller.quorum.voters of nodes 1..n listening for controllers on ``controller_ports``."""
    return ",".join(f"{i}@127.0.0.1:{p}" for i, p in enumerate(controller_ports, start=1))


def write_properties(path: Path, props: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    path.chmod(0o600)  # may hold the admin's and the key store's passwords
    return path


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def format_storage(java: str, lib: Path, conf: Path, cluster_id: str, extra: Sequence[str] = ()) -> None:
    """Format the node's log dirs (once, before its first start)."""
    # "--cluster-id=" form: an id starting with "-" would otherwise be read as an option.
    cmd = [
        java,
        "-cp",
        f"{lib}/*",
        "kafka.tools.StorageTool",
        "format",
        f"--cluster-id={cluster_id}",
        "-c",
        str(conf),
        *extra,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{res.stdout}{res.stderr}")


def command(java: str, lib: Path, conf: Path, heap: str = "1g") -> list[str]:
    return [
        java,
        "-Xms128m" if heap.endswith("m") else "-Xms256m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        f"-Dlog4j.configuration=file:{JAVA_DIR / 'kafka-log4j.properties'}",
        "-cp",
        f"{lib}/*",
        "kafka.Kafka",
        str(conf),
    ]


def ready(port: int, security: dict, brokers: int = 1, host: str = "127.0.0.1") -> bool:
    """Whether the node on ``port`` answers a metadata request naming a controller or brokers (all
    ``brokers`` of the cluster when there are several: topics with three replicas need all three)."""
    if not port_open(port, host):
        return False
    try:
        md = AdminClient(client_config(f"{host}:{port}", **security, **{"socket.timeout.ms": 2000})).list_topics(
            timeout=2
        )
        if brokers > 1:
            return len(md.brokers) >= brokers
        return md.controller_id >= 0 or bool(md.brokers)
    except Exception:  # noqa: BLE001 - not ready yet, whatever the cause
        return False
