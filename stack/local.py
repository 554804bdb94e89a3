"""Start, check and stop real Apache Kafka (KRaft) and HiveMQ CE on loopback.

Jars come from Maven Central (resolved once by Maven, copied under ``<home>/lib``);
broker data and logs live under ``<home>`` too, so ``rm -rf .streamtrain`` resets everything.
"""
from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from confluent_kafka import KafkaException

from streamtrain import logs
from streamtrain.kafka import KafkaSecurity, client_config, ensure_topics
from streamtrain.settings import CommonSettings, StackSettings
from streamtrain.topics import pipeline_topics

log = logs.get("stack")

JAVA_DIR = Path(str(resources.files("streamtrain.stack") / "java"))
#: The broker's certificate subject; with TLS client auth on the controller listener it is the
#: broker's own principal, a super user like the admin.
BROKER_DN = "CN=streamtrain-broker"
ADMIN = "admin"
SCRAM = "SCRAM-SHA-512"


class StackError(RuntimeError):
    """Raised with a message that says what failed and where its log is."""


@dataclass
class Service:
    name: str
    port: int
    home: Path

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A zombie left by a parent that never reaped it is not running.
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            if state == "Z":
                return None
        except (FileNotFoundError, IndexError):
            return None
        return pid


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hivemq_config_xml(port: int, bind: str) -> str:
    """HiveMQ's config.xml: one TCP listener on bind:port. The same settings run in the Kubernetes image
    (images/hivemq-config.xml, bind 0.0.0.0 and port 1883; a test keeps the two equal).

    File persistence keeps sessions and queued QoS 1 messages across broker restarts.
    The queue must hold a bridge outage's worth of messages for the shared subscription."""
    return f"""<?xml version="1.0"?>
<hivemq>
    <listeners>
        <tcp-listener>
            <port>{port}</port>
            <bind-address>{bind}</bind-address>
        </tcp-listener>
    </listeners>
    <mqtt>
        <queued-messages>
            <max-queue-size>2000000</max-queue-size>
            <strategy>discard</strategy>
        </queued-messages>
        <receive-maximum>
            <server-receive-maximum>1000</server-receive-maximum>
        </receive-maximum>
    </mqtt>
    <persistence>
        <mode>file</mode>
    </persistence>
    <anonymous-usage-statistics>
        <enabled>false</enabled>
    </anonymous-usage-statistics>
</hivemq>
"""


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
        self.kafka = Service("kafka", self.settings.kafka_port, self.home)
        self.hivemq = Service("hivemq", self.settings.mqtt_port, self.home)

    @property
    def bootstrap(self) -> str:
        return f"{self.settings.bind_host}:{self.settings.kafka_port}"

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port or self.settings.kafka_port + 1

    # ---------------------------------------------------------------- jars
    def _resolve(self, pom: str, version_prop: str, version: str, target: Path) -> Path:
        marker = target / ".complete"
        if marker.exists():
            return target
        mvn = shutil.which("mvn")
        if not mvn:
            raise StackError("Maven (mvn) is not on PATH; it is needed once to fetch the broker jars from Maven Central")
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("resolving_jars", pom=pom, version=version, target=str(target))
        cmd = [mvn, "-q", "-B", "-f", str(JAVA_DIR / pom), f"-D{version_prop}={version}",
               "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
               f"-DoutputDirectory={tmp}"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise StackError(f"Maven could not resolve {pom} ({version}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        marker.write_text(version)
        return target

    def kafka_lib(self) -> Path:
        v = self.settings.kafka_version
        return self._resolve("kafka-pom.xml", "kafka.version", v, self.lib_root / f"kafka-{v}")

    def hivemq_lib(self) -> Path:
        v = self.settings.hivemq_version
        return self._resolve("hivemq-pom.xml", "hivemq.version", v, self.lib_root / f"hivemq-{v}")

    # ---------------------------------------------------------------- config
    def _kafka_config(self) -> Path:
        conf_dir = self.home / "kafka"
        conf_dir.mkdir(parents=True, exist_ok=True)
        data = conf_dir / "data"
        port, cport = self.settings.kafka_port, self.controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://{self.settings.bind_host}:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://{self.settings.bind_host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "3",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "message.max.bytes": str(2 * 1024 * 1024 + 1024),
            "log.cleaner.enable": "true",
            "log.retention.check.interval.ms": "60000",
        }
        if self.settings.kafka_auth == "scram":
            props.update(self._scram_props(port, cport))
        path = conf_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        path.chmod(0o600)  # holds the admin's and the key store's passwords
        return path

    # ---------------------------------------------------------------- SASL/SCRAM over TLS
    @property
    def secrets_dir(self) -> Path:
        return self.home / "kafka" / "secrets"

    @property
    def ca_file(self) -> Path:
        return self.secrets_dir / "ca.pem"

    def password_file(self, user: str) -> Path:
        return self.secrets_dir / f"{user}.password"

    def _secret(self, name: str) -> str:
        """A random secret kept in a 0600 file under <home>, made on first use."""
        path = self.password_file(name)
        if not path.exists():
            self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(secrets.token_urlsafe(24) + "\n")
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip()

    def _tls(self) -> tuple[Path, str]:
        """A self-signed broker certificate for 127.0.0.1 and bind_host (keytool ships with Java); its PEM is the CA clients trust."""
        store = self.secrets_dir / "broker.p12"
        password = self._secret("keystore")
        if not (store.exists() and self.ca_file.exists()):
            keytool = shutil.which("keytool") or str(Path(self._java()).resolve().parent / "keytool")
            store.unlink(missing_ok=True)
            san = ",".join(f"ip:{ip}" for ip in dict.fromkeys(("127.0.0.1", self.settings.bind_host))) + ",dns:localhost"
            for cmd in ([keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
                         "-dname", BROKER_DN, "-ext", f"SAN={san}", "-validity", "3650",
                         "-storetype", "PKCS12", "-keystore", str(store), "-storepass", password],
                        [keytool, "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(store),
                         "-storepass", password, "-file", str(self.ca_file)]):
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise StackError(f"making the broker's TLS certificate failed ({cmd[1]}):\n{res.stdout}{res.stderr}")
            store.chmod(0o600)
            log.info("tls_certificate_created", subject=BROKER_DN, ca=str(self.ca_file))
        return store, password

    def _scram_props(self, port: int, cport: int) -> dict:
        store, store_password = self._tls()
        admin = self._secret(ADMIN)
        jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{admin}";'
        return {
            "listeners": f"SASL_SSL://{self.settings.bind_host}:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"SASL_SSL://{self.settings.bind_host}:{port}",
            # The controller listener takes no SCRAM (its credentials live in the metadata it serves):
            # the broker proves itself there with its certificate instead.
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "listener.name.controller.ssl.client.auth": "required",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM,
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(store),
            "ssl.keystore.password": store_password,
            "ssl.key.password": store_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN};User:{BROKER_DN}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _security(self, user: str) -> dict[str, str]:
        """``user``'s KafkaSecurity fields against this stack (empty without authentication)."""
        if self.settings.kafka_auth != "scram":
            return {}
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": SCRAM, "username": user,
                "password_file": str(self.password_file(user)), "ca_file": str(self.ca_file)}

    def client_security(self, user: str = ADMIN) -> dict:
        """librdkafka settings of ``user`` against this stack, made as every program makes its own."""
        fields = self._security(user)
        return KafkaSecurity(**fields).librdkafka() if fields else {}

    def client_env(self, user: str) -> dict[str, str]:
        """STREAMTRAIN_KAFKA_* variables with which a program connects as ``user``."""
        return {f"STREAMTRAIN_KAFKA_{k.upper()}": v for k, v in self._security(user).items()}

    def admin(self):
        from confluent_kafka.admin import AdminClient
        return AdminClient(client_config(self.bootstrap, **self.client_security()))

    def kafka_user(self, user: str, program: str, group: str | None = None,
                   topics: CommonSettings | None = None) -> dict[str, str]:
        """Create (or re-key) a SCRAM user holding exactly ``program``'s ACLs on the topics named by
        ``topics`` (default: this stack's settings); returns the user's client env."""
        from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        from streamtrain.access import acl_bindings
        if self.settings.kafka_auth != "scram":
            raise StackError("Kafka users need the stack started with --kafka-auth scram")
        if user == ADMIN:
            raise StackError(f"{ADMIN!r} is the stack's super user; pick another name")
        admin, password = self.admin(), self._secret(user)
        upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                              password.encode())
        bindings = acl_bindings(program, user, topics or self.settings, group)
        try:
            for fut in admin.alter_user_scram_credentials([upsert]).values():
                fut.result()
            for fut in admin.create_acls(bindings).values():
                fut.result()
        except KafkaException as exc:
            raise StackError(f"creating Kafka user {user!r} failed: {exc.args[0]}") from exc
        log.info("kafka_user_ready", user=user, program=program, acls=len(bindings),
                 password_file=str(self.password_file(user)))
        return self.client_env(user)

    def _hivemq_config(self) -> tuple[Path, Path, Path]:
        base = self.home / "hivemq"
        conf, data, ext = base / "conf", base / "data", base / "extensions"
        for d in (conf, data, ext):
            d.mkdir(parents=True, exist_ok=True)
        (conf / "config.xml").write_text(hivemq_config_xml(self.settings.mqtt_port, self.settings.bind_host))
        return conf, data, ext

    # ---------------------------------------------------------------- processes
    def _spawn(self, svc: Service, cmd: list[str], env: dict | None = None) -> int:
        return spawn(svc, cmd, env, cwd=self.home)

    def _java(self) -> str:
        java = shutil.which("java")
        if not java:
            raise StackError("java is not on PATH; Java 17 runs both brokers")
        return java

    def start_kafka(self) -> None:
        if self.kafka.pid():
            return
        if port_open(self.settings.kafka_port, self.settings.bind_host):
            raise StackError(f"port {self.settings.kafka_port} is taken by another process; pick another with --kafka-port")
        lib = self.kafka_lib()
        conf = self._kafka_config()
        cp = f"{lib}/*"
        java = self._java()
        meta = self.home / "kafka" / "data" / "meta.properties"
        formatted_auth = self.home / "kafka" / "auth"
        if not meta.exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            # "--cluster-id=" form: an id starting with "-" would otherwise be read as an option.
            cmd = [java, "-cp", cp, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(conf)]
            if self.settings.kafka_auth == "scram":
                # The admin must exist before the first start: its SCRAM credential goes into the metadata log.
                cmd += ["--add-scram", f"{SCRAM}=[name={ADMIN},password={self._secret(ADMIN)}]"]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise StackError(f"formatting Kafka storage failed:\n{res.stdout}{res.stderr}")
            formatted_auth.write_text(self.settings.kafka_auth)
        elif self.settings.kafka_auth == "scram" and \
                (formatted_auth.read_text().strip() if formatted_auth.exists() else "none") != "scram":
            raise StackError(f"the Kafka data under {meta.parent} was made without authentication, so it has no "
                             f"admin user; stop the stack and remove {meta.parent} to start it with --kafka-auth scram")
        self._spawn(self.kafka, [java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC",
                                 f"-Dlog4j.configuration=file:{JAVA_DIR / 'kafka-log4j.properties'}",
                                 "-cp", cp, "kafka.Kafka", str(conf)])

    def start_hivemq(self) -> None:
        if self.hivemq.pid():
            return
        if port_open(self.settings.mqtt_port, self.settings.bind_host):
            raise StackError(f"port {self.settings.mqtt_port} is taken by another process; pick another with --mqtt-port")
        lib = self.hivemq_lib()
        conf, data, ext = self._hivemq_config()
        users = self.settings.mqtt_users_file
        if users is not None and not Path(users).is_file():
            raise StackError(f"MQTT users file {users} does not exist; create it with `streamtrain stack passwd`")
        self._spawn(self.hivemq, [self._java(), "-Xms128m", "-Xmx768m",
                                  "-cp", f"{lib}/*", str(JAVA_DIR / "HiveMQLauncher.java"),
                                  str(conf), str(data), str(ext)] + ([str(Path(users).resolve())] if users else []))

    # ---------------------------------------------------------------- readiness
    def kafka_ready(self) -> bool:
        if not port_open(self.settings.kafka_port, self.settings.bind_host):
            return False
        from confluent_kafka.admin import AdminClient
        try:
            md = AdminClient(client_config(self.bootstrap, **self.client_security(), **{"socket.timeout.ms": 2000}))\
                .list_topics(timeout=2)
            return md.controller_id >= 0 or bool(md.brokers)
        except Exception:  # noqa: BLE001 - not ready yet, whatever the cause
            return False

    def hivemq_ready(self) -> bool:
        if not port_open(self.settings.mqtt_port, self.settings.bind_host):
            return False
        import paho.mqtt.client as mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"streamtrain-probe-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        answered = []
        # Any CONNACK means the broker is up; with authentication on, the probe's is a refusal.
        client.on_connect = lambda c, u, flags, reason, props: answered.append(reason)
        try:
            rc = client.connect(self.settings.bind_host, self.settings.mqtt_port, keepalive=5)
            if rc != 0:
                return False
            deadline = time.monotonic() + 3
            while not answered and time.monotonic() < deadline:
                client.loop(0.1)
            client.disconnect()
            return bool(answered)
        except OSError:
            return False

    def _wait(self, svc: Service, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                log.info("service_ready", service=svc.name, port=svc.port)
                return
            if svc.pid() is None:
                tail = svc.log_file.read_text(errors="replace")[-3000:] if svc.log_file.exists() else ""
                raise StackError(f"{svc.name} exited during start-up; last lines of {svc.log_file}:\n{tail}")
            time.sleep(0.5)
        raise StackError(f"{svc.name} not ready on port {svc.port} after {timeout:.0f}s; see {svc.log_file}")

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
                      **({"security": "SASL_SSL/" + SCRAM, "admin": self.client_env(ADMIN)}
                         if self.settings.kafka_auth == "scram" else {})},
            "hivemq": {"pid": self.hivemq.pid(), "mqtt": f"{self.settings.bind_host}:{self.settings.mqtt_port}",
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


def spawn(svc: Service, cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> int:
    """Start ``cmd`` detached (own session) with its output in the service's log and its pid in its pid file."""
    svc.log_file.parent.mkdir(parents=True, exist_ok=True)
    svc.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(svc.log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})}, cwd=cwd or svc.home)
    svc.pid_file.write_text(str(proc.pid))
    log.info("process_started", service=svc.name, pid=proc.pid, port=svc.port, log=str(svc.log_file))
    return proc.pid


def stop(svc: Service, timeout: float = 45.0, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL with ``kill``) to the service's process group; SIGKILL after ``timeout``."""
    pid = svc.pid()
    if pid is None:
        svc.pid_file.unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while svc.pid() is not None and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if svc.pid() is not None:
        log.warning("process_kill", service=svc.name, pid=pid, reason=f"still running {timeout:.0f}s after SIGTERM")
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
        _reap(pid)
    svc.pid_file.unlink(missing_ok=True)
    log.info("process_stopped", service=svc.name, pid=pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
