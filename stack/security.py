"""SASL/SCRAM over TLS for the local Kafka: secrets in 0600 files, a self-signed broker certificate,
the broker properties that turn it on, client settings and per-program users with their ACLs."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from streamtrain import logs
from streamtrain.access import acl_bindings
from streamtrain.kafka import KafkaSecurity
from streamtrain.settings import CommonSettings
from streamtrain.stack.processes import StackError, java

log = logs.get("stack")

#: The broker's certificate subject; with TLS client auth on the controller listener it is the
#: broker's own principal, a super user like the admin.
BROKER_DN = "CN=streamtrain-broker"
ADMIN = "admin"
SCRAM = "SCRAM-SHA-512"


class StackSecrets:
    """The secrets of one stack, kept under ``<kafka dir>/secrets``."""

    def __init__(self, kafka_dir: Path, host: str = "127.0.0.1") -> None:
        self.dir = kafka_dir / "secrets"
        self.host = host  # where the brokers listen for clients: in the certificate too

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    def password_file(self, user: str) -> Path:
        return self.dir / f"{user}.password"

    def secret(self, name: str) -> str:
        """A random secret kept in a 0600 file, made on first use."""
        path = self.password_file(name)
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(secrets.token_urlsafe(24) + "\n")
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip()

    def tls(self) -> tuple[Path, str]:
        """A self-signed broker certificate for 127.0.0.1 and the client host (keytool ships with Java); its
        PEM is the CA clients trust."""
        store = self.dir / "broker.p12"
        password = self.secret("keystore")
        if not (store.exists() and self.ca_file.exists()):
            keytool = shutil.which("keytool") or str(Path(java()).resolve().parent / "keytool")
            store.unlink(missing_ok=True)
            san = ",".join(f"ip:{ip}" for ip in dict.fromkeys(("127.0.0.1", self.host))) + ",dns:localhost"
            for cmd in (
                [
                    keytool,
                    "-genkeypair",
                    "-alias",
                    "broker",
                    "-keyalg",
                    "RSA",
                    "-keysize",
                    "2048",
                    "-dname",
                    BROKER_DN,
                    "-ext",
                    f"SAN={san}",
                    "-validity",
                    "3650",
                    "-storetype",
                    "PKCS12",
                    "-keystore",
                    str(store),
                    "-storepass",
                    password,
                ],
                [
                    keytool,
                    "-exportcert",
                    "-rfc",
                    "-alias",
                    "broker",
                    "-keystore",
                    str(store),
                    "-storepass",
                    password,
                    "-file",
                    str(self.ca_file),
                ],
            ):
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise StackError(
                        f"making the broker's TLS certificate failed ({cmd[1]}):\n{res.stdout}{res.stderr}"
                    )
            store.chmod(0o600)
            log.info("tls_certificate_created", subject=BROKER_DN, ca=str(self.ca_file))
        return store, password

    def broker_props(self, port: int, cport: int) -> dict:
        """Broker properties for SCRAM clients on ``port`` and certificate-authenticated controllers on ``cport``."""
        store, store_password = self.tls()
        admin = self.secret(ADMIN)
        jaas = (
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{admin}";'
        )
        return {
            "listeners": f"SASL_SSL://{self.host}:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"SASL_SSL://{self.host}:{port}",
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

    def format_args(self) -> list[str]:
        """StorageTool arguments that put the admin's SCRAM credential into the first metadata."""
        return ["--add-scram", f"{SCRAM}=[name={ADMIN},password={self.secret(ADMIN)}]"]

    def security_fields(self, user: str) -> dict[str, str]:
        """``user``'s KafkaSecurity fields against this stack."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": SCRAM,
            "username": user,
            "password_file": str(self.password_file(user)),
            "ca_file": str(self.ca_file),
        }


def client_security(fields: dict[str, Any]) -> dict:
    """librdkafka settings from KafkaSecurity fields, made as every program makes its own."""
    return KafkaSecurity(**fields).librdkafka() if fields else {}


def client_env(fields: dict[str, str]) -> dict[str, str]:
    """STREAMTRAIN_KAFKA_* variables with which a program connects with these fields."""
    return {f"STREAMTRAIN_KAFKA_{k.upper()}": v for k, v in fields.items()}


def create_user(
    admin, stack_secrets: StackSecrets, user: str, program: str, group: str | None, topics: CommonSettings
) -> None:
    """Create (or re-key) a SCRAM user holding exactly ``program``'s ACLs on the topics named by ``topics``."""
    if user == ADMIN:
        raise StackError(f"{ADMIN!r} is the stack's super user; pick another name")
    password = stack_secrets.secret(user)
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
    )
    bindings = acl_bindings(program, user, topics, group)
    try:
        for fut in admin.alter_user_scram_credentials([upsert]).values():
            fut.result()
        for fut in admin.create_acls(bindings).values():
            fut.result()
    except KafkaException as exc:
        raise StackError(f"creating Kafka user {user!r} failed: {exc.args[0]}") from exc
    log.info(
        "kafka_user_ready",
        user=user,
        program=program,
        acls=len(bindings),
        password_file=str(stack_secrets.password_file(user)),
    )
