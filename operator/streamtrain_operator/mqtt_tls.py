"""A pipeline's MQTT TLS Secret, made by the operator when ``mqtt.tls`` is on and names no Secret of the
user's: a self-signed CA and a server certificate it signs for the broker Service's names, the server's
key and chain as a PKCS12 keystore with a random password, and the CA certificate the clients trust.
Created once and never replaced (clients and devices trust that CA).

The keys and the password exist only in the Secret manifest built here and the create request: never
logged, never in status, Events or metrics."""

from __future__ import annotations

import base64
import datetime
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamtrain.operator.render import mqtt_tls, objects

#: Validity of the CA and the server certificate: the Secret is never replaced, so they outlive the pipeline.
VALIDITY = datetime.timedelta(days=3650)


def _name(common: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StreamTrain"), x509.NameAttribute(NameOID.COMMON_NAME, common)]
    )


def _certificate(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, signer: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks of the cluster's nodes may differ
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def new_material(name: str, namespace: str) -> dict[str, bytes]:
    """The three keys of the Secret (render.mqtt_tls: KEYSTORE, PASSWORD, CA) for pipeline ``name``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{name}.{namespace} MQTT CA")
    ca = (
        _certificate(ca_name, ca_name, ca_key.public_key(), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    hosts = mqtt_tls.service_hosts(name, namespace)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        _certificate(_name(hosts[0]), ca_name, server_key.public_key(), ca_key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )  # digitalSignature (ECDHE)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    password = secrets.token_urlsafe(32)
    keystore = pkcs12.serialize_key_and_certificates(
        b"hivemq", server_key, server, [ca], serialization.BestAvailableEncryption(password.encode())
    )
    return {
        mqtt_tls.KEYSTORE: keystore,
        mqtt_tls.PASSWORD: password.encode(),
        mqtt_tls.CA: ca.public_bytes(serialization.Encoding.PEM),
    }


def new_secret(name: str, namespace: str) -> objects.Manifest:
    """The Secret ``<name>-mqtt-tls`` with new material (base64 ``data``: the keystore is binary). Owner
    references are the caller's (``kopf.adopt``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": objects.meta(name, mqtt_tls.generated_name(name), "hivemq", namespace),
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in new_material(name, namespace).items()},
    }
