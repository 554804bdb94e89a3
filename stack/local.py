"""Start, check and stop real Apache Kafka (KRaft) and HiveMQ CE on loopback.

Jars come from Maven Central (resolved once by Maven, copied under ``<home>/lib``);
broker data and logs live under ``<home>`` too, so ``rm -rf .streamtrain`` resets everything.
The pieces live beside this module: ``jars``, ``kafka_node``, ``hivemq``, ``security``, ``processes``.
"""
from __future__ import annotations

from pathlib import Path

from streamtrain import logs
from streamtrain.kafka import client_config, ensure_topics
from streamtrain.settings import CommonSettings, StackSettings
from streamtrain.stack import hivemq, jars, kafka_node, security
from streamtrain.stack.hivemq import hivemq_config_xml
from streamtrain.stack.processes import Service, StackError, free_port, java, port_open, spawn, stop, wait_ready
from streamtrain.stack.security import ADMIN, BROKER_DN, SCRAM, StackSecrets
from streamtrain.topics import pipeline_topics

# Names other modules and tests import from here.
__all__ = ["ADMIN", "BROKER_DN", "SCRAM", "LocalStack", "Service", "StackError", "free_port", "hivemq_config_xml",
           "port_open", "spawn", "stop"]

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
        self.lib_root = (self.settings.jars or self.home / "lib").resolve()
        self.secrets = StackSecrets(self.home / "kafka")
        self.kafka = Service("kafka", self.settings.kafka_port, self.home)
        self.hivemq = Service("hivemq", self.settings.mqtt_port, self.home)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port or self.settings.kafka_port + 1

    @property
    def scram(self) -> bool:
        return self.settings.kafka_auth == "scram"

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
        from confluent_kafka.admin import AdminClient
        return AdminClient(client_config(self.bootstrap, **self.client_security()))

    def kafka_user(self, user: str, program: str, group: str | None = None,
                   topics: CommonSettings | None = None) -> dict[str, str]:
        """Create (or re-key) a SCRAM user holding exactly ``program``'s ACLs on the topics named by
        ``topics`` (default: this stack's settings); returns the user's client env."""
        if not self.scram:
            raise StackError("Kafka users need the stack started with --kafka-auth scram")
        security.create_user(self.admin(), self.secrets, user, program, group, topics or self.settings)
        return self.client_env(user)

    # ---------------------------------------------------------------- processes
    def start_kafka(self) -> None:
        if self.kafka.pid():
            return
        if port_open(self.settings.kafka_port):
            raise StackError(f"port {self.settings.kafka_port} is taken by another process; pick another with --kafka-port")
        lib, conf_dir = self.kafka_lib(), self.home / "kafka"
        port, cport = self.settings.kafka_port, self.controller_port
        props = kafka_node.server_properties(port, cport, conf_dir / "data")
        if self.scram:
            props.update(self.secrets.broker_props(port, cport))
        conf = kafka_node.write_properties(conf_dir / "server.properties", props)
        meta = conf_dir / "data" / "meta.properties"
        formatted_auth = conf_dir / "auth"
        if not meta.exists():
            # With SCRAM the admin must exist before the first start: its credential goes into the metadata log.
            kafka_node.format_storage(java(), lib, conf, kafka_node.new_cluster_id(),
                                      self.secrets.format_args() if self.scram else [])
            formatted_auth.write_text(self.settings.kafka_auth)
        elif self.scram and (formatted_auth.read_text().strip() if formatted_auth.exists() else "none") != "scram":
            raise StackError(f"the Kafka data under {meta.parent} was made without authentication, so it has no "
                             f"admin user; stop the stack and remove {meta.parent} to start it with --kafka-auth scram")
        spawn(self.kafka, kafka_node.command(java(), lib, conf), cwd=self.home)

    def start_hivemq(self) -> None:
        if self.hivemq.pid():
            return
        if port_open(self.settings.mqtt_port):
            raise StackError(f"port {self.settings.mqtt_port} is taken by another process; pick another with --mqtt-port")
        cmd = hivemq.command(java(), self.hivemq_lib(), self.home / "hivemq", self.settings.mqtt_port,
                             self.settings.mqtt_users_file)
        spawn(self.hivemq, cmd, cwd=self.home)

    # ---------------------------------------------------------------- readiness
    def kafka_ready(self) -> bool:
        return kafka_node.ready(self.bootstrap, self.settings.kafka_port, self.client_security())

    def hivemq_ready(self) -> bool:
        return hivemq.ready(self.settings.mqtt_port)

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
        self._wait(self.kafka, self.kafka_ready, self.settings.ready_timeout_s)
        self._wait(self.hivemq, self.hivemq_ready, self.settings.ready_timeout_s)
        if create_topics:
            s = self.settings.model_copy(update={"kafka_bootstrap": self.bootstrap})
            ensure_topics(self.bootstrap, pipeline_topics(s, self.settings.partitions, self.settings.retention_hours),
                          **self.client_security())
        return self.status()

    def status(self) -> dict:
        return {
            "kafka": {"pid": self.kafka.pid(), "bootstrap": self.bootstrap, "ready": self.kafka_ready(),
                      "log": str(self.kafka.log_file),
                      **({"security": "SASL_SSL/" + SCRAM, "admin": self.client_env(ADMIN)} if self.scram else {})},
            "hivemq": {"pid": self.hivemq.pid(), "mqtt": f"127.0.0.1:{self.settings.mqtt_port}",
                       "ready": self.hivemq_ready(), "log": str(self.hivemq.log_file)},
            "home": str(self.home),
        }

    def stop_service(self, svc: Service, timeout: float = 45.0, kill: bool = False) -> None:
        stop(svc, timeout, kill)

    def restart_service(self, svc: Service, kill: bool = False) -> None:
        """Stop one broker (SIGTERM, or SIGKILL with ``kill``) and start it again, waiting until ready."""
        self.stop_service(svc, kill=kill)
        if svc is self.kafka:
            self.start_kafka()
            self._wait(svc, self.kafka_ready, self.settings.ready_timeout_s)
        else:
            self.start_hivemq()
            self._wait(svc, self.hivemq_ready, self.settings.ready_timeout_s)

    def down(self) -> None:
        """Stop HiveMQ first (no new input), then Kafka; both with SIGTERM for a clean shutdown."""
        self.stop_service(self.hivemq)
        self.stop_service(self.kafka)
