"""Start, check and stop real Apache Kafka (KRaft) and HiveMQ CE on loopback.

Jars come from Maven Central (resolved once by Maven, copied under ``<home>/lib``);
broker data and logs live under ``<home>`` too, so ``rm -rf .streamtrain`` resets everything.
The pieces live beside this module: ``jars``, ``kafka_node``, ``hivemq``, ``security``, ``processes``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streamtrain import logs
from streamtrain.kafka import client_config, ensure_topics
from streamtrain.ports import free_port, free_port_range
from streamtrain.settings import CommonSettings, StackSettings
from streamtrain.stack import hivemq, jars, kafka_node, security
from streamtrain.stack import ingest_extension as extension
from streamtrain.stack.hivemq import hivemq_config_xml
from streamtrain.stack.processes import (
    Service,
    StackError,
    java,
    port_open,
    spawn,
    stop,
    stop_all,
    wait_ready,
)
from streamtrain.stack.security import ADMIN, BROKER_DN, SCRAM, StackSecrets
from streamtrain.topics import pipeline_topics

# Names other modules and tests import from here.
__all__ = [
    "ADMIN",
    "BROKER_DN",
    "SCRAM",
    "LocalStack",
    "Service",
    "StackError",
    "free_port",
    "hivemq_config_xml",
    "free_port_range",
    "port_open",
    "spawn",
    "stop",
]

log = logs.get("stack")


class LocalStack:
    """The two brokers of the local pipeline, managed as detached processes with pid files."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings()
        self.home = self.settings.home.resolve()
        recorded = self.home / "kafka" / "auth"
        if "kafka_auth" not in self.settings.model_fields_set and recorded.exists():
            # `status`, `down` and `kafka-user` of a stack started with --kafka-auth scram need no flag.
            self.settings = self.settings.model_copy(update={"kafka_auth": recorded.read_text().strip()})
        brokers = self.home / "kafka" / "brokers"
        if "kafka_brokers" not in self.settings.model_fields_set and brokers.exists():
            self.settings = self.settings.model_copy(update={"kafka_brokers": int(brokers.read_text())})
        tls_mark = self.home / "hivemq" / "tls"
        if "mqtt_tls" not in self.settings.model_fields_set and tls_mark.exists():
            # `status` and `down` of a stack whose broker was started with --mqtt-tls need no flag.
            self.settings = self.settings.model_copy(update={"mqtt_tls": True})
        self.lib_root = (self.settings.jars or self.home / "lib").resolve()
        self.secrets = StackSecrets(self.home / "kafka", self.settings.bind_host)
        #: The broker's TLS certificate (its own, not Kafka's): <home>/hivemq/secrets.
        self.mqtt_secrets = StackSecrets(self.home / "hivemq", self.settings.bind_host)
        #: Node 1 keeps the single node's names (service ``kafka``, data in <home>/kafka/data).
        self.kafka_nodes = [
            Service("kafka" if i == 1 else f"kafka-{i}", self.settings.kafka_port + i - 1, self.home)
            for i in range(1, self.settings.kafka_brokers + 1)
        ]
        self.kafka = self.kafka_nodes[0]
        self.hivemq = Service("hivemq", self.settings.mqtt_port, self.home)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.settings.bind_host}:{n.port}" for n in self.kafka_nodes)

    @property
    def controller_port(self) -> int:
        """The first node's controller port; node i listens on this + i - 1."""
        return self.settings.kafka_controller_port or self.settings.kafka_port + self.settings.kafka_brokers

    def node_dir(self, node: int) -> Path:
        return self.home / "kafka" if node == 1 else self.home / "kafka" / f"node-{node}"

    @property
    def scram(self) -> bool:
        return self.settings.kafka_auth == "scram"

    @property
    def mqtt_ca_file(self) -> Path | None:
        """The CA MQTT clients trust (STREAMTRAIN_MQTT_CA_FILE) when the broker speaks TLS, else None."""
        return self.mqtt_secrets.ca_file if self.settings.mqtt_tls else None

    # ---------------------------------------------------------------- jars
    def kafka_lib(self) -> Path:
        return jars.kafka_lib(self.lib_root, self.settings.kafka_version)

    def hivemq_lib(self) -> Path:
        return jars.hivemq_lib(self.lib_root, self.settings.hivemq_version)

    # ---------------------------------------------------------------- security
    @property
    def secrets_dir(self) -> Path:
        return self.secrets.dir

    @property
    def ca_file(self) -> Path:
        return self.secrets.ca_file

    def password_file(self, user: str) -> Path:
        return self.secrets.password_file(user)

    def _security(self, user: str) -> dict[str, str]:
        """``user``'s KafkaSecurity fields against this stack (empty without authentication)."""
        return self.secrets.security_fields(user) if self.scram else {}

    def client_security(self, user: str = ADMIN) -> dict:
        """librdkafka settings of ``user`` against this stack, made as every program makes its own."""
        return security.client_security(self._security(user))

    def client_env(self, user: str) -> dict[str, str]:
        """STREAMTRAIN_KAFKA_* variables with which a program connects as ``user``."""
        return security.client_env(self._security(user))

    def admin(self):
        return AdminClient(client_config(self.bootstrap, **self.client_security()))

    def kafka_user(
        self, user: str, program: str, group: str | None = None, topics: CommonSettings | None = None
    ) -> dict[str, str]:
        """Create (or re-key) a SCRAM user holding exactly ``program``'s ACLs on the topics named by
        ``topics`` (default: this stack's settings); returns the user's client env."""
        if not self.scram:
            raise StackError("Kafka users need the stack started with --kafka-auth scram")
        security.create_user(self.admin(), self.secrets, user, program, group, topics or self.settings)
        return self.client_env(user)

    def install_ingest(self) -> Path:
        """Install (``ingest`` extension) or remove (bridge) the ingestion extension in HiveMQ's extensions
        folder, with this stack's Kafka and topics; HiveMQ reads the folder when it starts."""
        ext = self.home / "hivemq" / "extensions"
        ext.mkdir(parents=True, exist_ok=True)
        if self.settings.ingest == "extension":
            if self.scram:
                raise StackError("--ingest extension does not speak SASL/SCRAM to Kafka yet; use --ingest bridge")
            extension.install(ext, self.ingest_properties(), self.settings.mapping())
        else:
            extension.uninstall(ext)
        return ext

    def ingest_properties(self) -> dict[str, str]:
        """streamtrain-ingest.properties of the HiveMQ extension: this stack's Kafka and topics."""
        s = self.settings
        return {
            "kafka.bootstrap": self.bootstrap,
            "topic.raw": s.topic_raw,
            "topic.deadletter": s.topic_deadletter,
            "metrics.port": str(s.ingest_metrics_port),
        }

    # ---------------------------------------------------------------- processes
    def start_kafka(self) -> None:
        """Start every Kafka node that is not running (without waiting: a quorum needs most of them up)."""
        for node in range(1, len(self.kafka_nodes) + 1):
            self.start_kafka_node(node)

    def start_kafka_node(self, node: int) -> None:
        svc = self.kafka_nodes[node - 1]
        if svc.pid():
            return
        if port_open(svc.port, self.settings.bind_host):
            raise StackError(f"port {svc.port} is taken by another process; pick another with --kafka-port")
        lib, conf_dir, n = self.kafka_lib(), self.node_dir(node), len(self.kafka_nodes)
        cports = [self.controller_port + i for i in range(n)]
        props = kafka_node.server_properties(
            node, svc.port, cports[node - 1], conf_dir / "data", kafka_node.voters(cports), n, self.settings.bind_host
        )
        if self.scram:
            props.update(self.secrets.broker_props(svc.port, cports[node - 1]))
        conf = kafka_node.write_properties(conf_dir / "server.properties", props)
        meta = conf_dir / "data" / "meta.properties"
        formatted_auth, formatted_brokers = self.home / "kafka" / "auth", self.home / "kafka" / "brokers"
        recorded = int(formatted_brokers.read_text()) if formatted_brokers.exists() else 1
        if (self.home / "kafka" / "data" / "meta.properties").exists() and recorded != n:
            raise StackError(
                f"the Kafka data under {self.home / 'kafka'} was made for {recorded} broker(s); stop "
                f"the stack and remove that folder to start it with {n}"
            )
        if not meta.exists():
            # Every node of a cluster is formatted with the same id, chosen by the first.
            id_file = self.home / "kafka" / "cluster-id"
            if not id_file.exists():
                id_file.write_text(kafka_node.new_cluster_id())
            # With SCRAM the admin must exist before the first start: its credential goes into the metadata log.
            kafka_node.format_storage(
                java(), lib, conf, id_file.read_text().strip(), self.secrets.format_args() if self.scram else []
            )
            formatted_auth.write_text(self.settings.kafka_auth)
            formatted_brokers.write_text(str(n))
        elif self.scram and (formatted_auth.read_text().strip() if formatted_auth.exists() else "none") != "scram":
            raise StackError(
                f"the Kafka data under {meta.parent} was made without authentication, so it has no "
                f"admin user; stop the stack and remove {meta.parent} to start it with --kafka-auth scram"
            )
        # Several nodes share two cores and the programs' memory: each gets a smaller heap.
        spawn(svc, kafka_node.command(java(), lib, conf, "1g" if n == 1 else "512m"), cwd=self.home)

    def start_hivemq(self) -> None:
        if self.hivemq.pid():
            return
        if port_open(self.settings.mqtt_port, self.settings.bind_host):
            raise StackError(
                f"port {self.settings.mqtt_port} is taken by another process; pick another with --mqtt-port"
            )
        tls_mark = self.home / "hivemq" / "tls"
        tls_mark.parent.mkdir(parents=True, exist_ok=True)
        if self.settings.mqtt_tls:
            tls_mark.write_text("tls\n")
        else:
            tls_mark.unlink(missing_ok=True)
        cmd = hivemq.command(
            java(),
            self.hivemq_lib(),
            self.home / "hivemq",
            self.settings.mqtt_port,
            self.settings.mqtt_users_file,
            self.settings.bind_host,
            self.mqtt_secrets.tls() if self.settings.mqtt_tls else None,
        )
        self.install_ingest()
        metrics = {}
        if self.settings.broker_metrics_port:
            metrics = {
                "STREAMTRAIN_BROKER_METRICS_PORT": str(self.settings.broker_metrics_port),
                "STREAMTRAIN_BROKER_METRICS_HOST": self.settings.bind_host,
            }
        spawn(self.hivemq, cmd, env=metrics, cwd=self.home)

    # ---------------------------------------------------------------- readiness
    def kafka_ready(self) -> bool:
        return all(self.kafka_node_ready(i) for i in range(1, len(self.kafka_nodes) + 1))

    def kafka_node_ready(self, node: int) -> bool:
        return kafka_node.ready(
            self.kafka_nodes[node - 1].port, self.client_security(), len(self.kafka_nodes), self.settings.bind_host
        )

    def hivemq_ready(self) -> bool:
        return hivemq.ready(self.settings.mqtt_port, self.settings.bind_host, self.mqtt_ca_file)

    def _wait(self, svc: Service, ready, timeout: float) -> None:
        wait_ready(svc, ready, timeout)

    # ---------------------------------------------------------------- public API
    def up(self, create_topics: bool = True) -> dict:
        """Start whatever is not running, wait until both are ready, create the topics. Idempotent."""
        self.home.mkdir(parents=True, exist_ok=True)
        # Resolve both sets of jars before starting anything, so a resolution failure starts nothing.
        self.kafka_lib()
        self.hivemq_lib()
        self.start_kafka()
        self.start_hivemq()
        for node, svc in enumerate(self.kafka_nodes, start=1):
            self._wait(svc, lambda node=node: self.kafka_node_ready(node), self.settings.ready_timeout_s)
        self._wait(self.hivemq, self.hivemq_ready, self.settings.ready_timeout_s)
        if create_topics:
            s = self.settings.model_copy(update={"kafka_bootstrap": self.bootstrap})
            specs = pipeline_topics(s, self.settings.partitions, self.settings.retention_hours)
            if len(self.kafka_nodes) >= 3:
                # Written on each topic too (not only as the brokers' default), so it shows where it is read.
                specs = [replace(t, config={**t.config, "min.insync.replicas": "2"}) for t in specs]
            ensure_topics(self.bootstrap, specs, **self.client_security())
        return self.status()

    def status(self) -> dict:
        nodes = [
            {"node": i, "pid": svc.pid(), "port": svc.port, "ready": self.kafka_node_ready(i), "log": str(svc.log_file)}
            for i, svc in enumerate(self.kafka_nodes, start=1)
        ]
        return {
            "kafka": {
                "pid": self.kafka.pid(),
                "bootstrap": self.bootstrap,
                "ready": all(n["ready"] for n in nodes),
                "log": str(self.kafka.log_file),
                **({"brokers": nodes} if len(nodes) > 1 else {}),
                **({"security": "SASL_SSL/" + SCRAM, "admin": self.client_env(ADMIN)} if self.scram else {}),
            },
            "hivemq": {
                "pid": self.hivemq.pid(),
                "mqtt": f"{self.settings.bind_host}:{self.settings.mqtt_port}",
                **({"tls": {"STREAMTRAIN_MQTT_CA_FILE": str(self.mqtt_ca_file)}} if self.mqtt_ca_file else {}),
                "ready": self.hivemq_ready(),
                "log": str(self.hivemq.log_file),
                "ingest": "extension"
                if (self.home / "hivemq" / "extensions" / "streamtrain-ingest").exists()
                else "bridge",
            },
            "home": str(self.home),
        }

    def stop_service(self, svc: Service, timeout: float = 45.0, kill: bool = False) -> None:
        stop(svc, timeout, kill)

    def restart_service(self, svc: Service, kill: bool = False) -> None:
        """Stop one broker (SIGTERM, or SIGKILL with ``kill``) and start it again, waiting until ready."""
        self.stop_service(svc, kill=kill)
        if svc in self.kafka_nodes:
            node = self.kafka_nodes.index(svc) + 1
            self.start_kafka_node(node)
            self._wait(svc, lambda: self.kafka_node_ready(node), self.settings.ready_timeout_s)
        else:
            self.start_hivemq()
            self._wait(svc, self.hivemq_ready, self.settings.ready_timeout_s)

    def down(self) -> None:
        """Stop HiveMQ first (no new input), then Kafka; both with SIGTERM for a clean shutdown. The Kafka
        nodes are told all at once: the last ones stopped one by one would wait for a quorum that is gone."""
        self.stop_service(self.hivemq)
        stop_all(self.kafka_nodes)
