"""The StreamingTraining CRD, generated from Python so the preprocessing part is the exact
schema of ``PreprocessSpec`` (one source of truth) turned into a structural OpenAPI v3 schema.

``python -m streamtrain.operator.crd > charts/streamtrain/crds/streamingtrainings.yaml``
regenerates the committed file; a test fails when they drift apart.
"""

from __future__ import annotations

import sys

import yaml

from streamtrain import __version__
from streamtrain.modelsign import KEY_PATTERN_MAX
from streamtrain.operator import GROUP, KIND, PLURAL, VERSION
from streamtrain.operator.ingest import INGEST_RULES, ingest_schema
from streamtrain.operator.model_settings import MODEL_RULES, model_properties
from streamtrain.operator.openapi import (
    CRON,
    DNS_NAME,
    PARTITION_BOUNDS,
    QUANTITY,
    _int,
    _num,
    _obj,
    _str,
    preprocessing_schema,
    secret_key,
    secret_key_ref,
)

#: A namespace name (DNS-1123 label) and an IPv4 or IPv6 block, as NetworkPolicy peers take them.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
CIDR = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}|[0-9a-fA-F:]+/[0-9]{1,3})$"


def spec_schema() -> dict:
    return _obj(
        "Desired pipeline: fleet -> MQTT -> bridge -> Kafka -> preprocess -> trainer -> scorer",
        {
            "image": _obj(
                "Image of the StreamTrain programs (images/Dockerfile): the trainer and the Python scorer run "
                "<repository>:<tag>; simulate, bridge and preprocess run <repository>-lite:<tag>, the same "
                "Dockerfile built with no extras (no TensorFlow)",
                {
                    "repository": _str("Image repository", "ghcr.io/streamtrain/streamtrain", minLength=1),
                    "tag": _str("Image tag", __version__, minLength=1),
                    "pullPolicy": _str("Image pull policy", "IfNotPresent", enum=["Always", "IfNotPresent", "Never"]),
                    "full": _str(
                        "Full reference of the trainer's and the Python scorer's image (what skaffold writes after a "
                        "build, e.g. with a digest); empty: <repository>:<tag>",
                        "",
                    ),
                    "lite": _str(
                        "Full reference of the image simulate, bridge and preprocess run; empty: "
                        "<repository>-lite:<tag>",
                        "",
                    ),
                },
            ),
            "fleet": _obj(
                "Simulated device fleet; turn it off when real devices publish to MQTT",
                {
                    "simulated": {"type": "boolean", "default": True, "description": "Run the simulator Deployment"},
                    "devices": _int("Number of simulated devices", 100, 1, 100000),
                    "rate": _num("Readings per second per device", 1.0, 0.0, 1000.0),
                    "anomalyRate": _num("Probability per reading that an anomaly episode starts", 0.004, 0.0, 0.5),
                    "seed": _int("Seed that makes the simulated fleet reproducible", 42),
                    "credentialsSecretRef": secret_key(
                        "The simulator's device_id:password lines (`streamtrain stack passwd-fleet --out`), one MQTT identity "
                        "per device, with your own mqtt.usersSecretRef (required then for a simulated fleet); it needs at "
                        "least `devices` lines. Without usersSecretRef the operator's <name>-mqtt-credentials holds them"
                    ),
                },
            ),
            "mqtt": _obj(
                "MQTT broker the devices publish to",
                {
                    "mode": _str(
                        "managed: a HiveMQ CE Deployment owned by this resource; external: an existing broker",
                        "managed",
                        enum=["managed", "external"],
                    ),
                    "host": _str("External broker host (mode=external)", pattern=DNS_NAME),
                    "port": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 65535,
                        "description": "Broker TCP port (of the external broker, or of the managed broker's Service); "
                        "unset: 8883 for a managed broker with tls.enabled, else 1883",
                    },
                    "image": _str("HiveMQ CE image (mode=managed, authentication none)", "hivemq/hivemq-ce:2025.5"),
                    "authentication": {
                        "type": "string",
                        "enum": ["none", "credentials"],
                        "description": "Who may connect to the managed broker; unset: credentials (mode managed). "
                        "credentials: HiveMQ runs StreamTrain's launcher (images/hivemq.Dockerfile) with a users file: "
                        "unknown users and wrong passwords are refused, a device publishes only to "
                        "devices/<its user>/telemetry, only bridge users subscribe. The file is usersSecretRef's (then "
                        "username and password name the bridge's identity and, for a simulated fleet, "
                        "fleet.credentialsSecretRef the devices' passwords) or, without usersSecretRef, the operator's "
                        "Secret <name>-mqtt-credentials, created once (keys users, username, password and, for a "
                        "simulated fleet, devices: fleet.devices device_id:password lines) and never replaced: to grow "
                        "the simulated fleet delete it (the next reconcile makes a new one; restart the broker) or name "
                        "your own. Real devices need your own users Secret. none: anyone who reaches the Service may "
                        "connect and publish as any device (the stock image's allow-all extension)",
                    },
                    "usersSecretRef": secret_key(
                        "Your own users file for the broker: user:role:pbkdf2_sha256$... lines, hashes only "
                        "(`streamtrain stack passwd` / `passwd-fleet`; authentication credentials); unset: the operator's "
                        "<name>-mqtt-credentials (the bridge and the simulated fleet only)"
                    ),
                    "launcherImage": _str(
                        "Image of HiveMQ CE run by StreamTrain's launcher (authentication credentials, ingest extension); "
                        "empty: <image.repository>-hivemq:<image.tag>",
                        "",
                    ),
                    "ingest": _str(
                        "Where telemetry enters Kafka. bridge: the `streamtrain bridge` Deployment (a shared MQTT "
                        "subscription; works with any broker). extension: StreamTrain's HiveMQ extension inside the "
                        "managed broker (the launcher image), each PUBACK held until Kafka has the record, per-device "
                        "order kept; needs mqtt.mode managed and a Kafka without authentication",
                        "bridge",
                        enum=["bridge", "extension"],
                    ),
                    "storage": _obj(
                        "The managed broker's data folder (/opt/hivemq/data: sessions and queued QoS 1 messages "
                        "already acknowledged to devices). With a size: a PersistentVolumeClaim <name>-hivemq-data "
                        "(ReadWriteOnce; the old broker Pod stops before the new one starts, so only one holds it) "
                        "that survives restarts and rescheduling, deleted with the resource. Off by default: the claim "
                        "needs a cluster with a storage provisioner or a free volume, else the broker never starts",
                        {
                            "size": _str(
                                "Requested size of the claim (e.g. 1Gi); empty: an emptyDir (data lost when the Pod goes)",
                                "",
                                pattern=r"^$|" + QUANTITY,
                            ),
                            "storageClass": _str(
                                "StorageClass of the claim; empty: the cluster's default. Fixed once the claim exists",
                                "",
                                pattern=r"^$|" + DNS_NAME,
                            ),
                        },
                    ),
                    "tls": _obj(
                        "MQTT over TLS to the managed broker (mode managed; an external broker's TLS is its own): "
                        "HiveMQ listens with TLS only, on container port 8883, and every MQTT client of the pipeline "
                        "(simulator, bridge) checks its certificate and host name (the Service <name>-hivemq) "
                        "against the CA certificate. Devices outside the cluster need that CA (key ca.crt)",
                        {
                            "enabled": {
                                "type": "boolean",
                                "default": True,
                                "description": "TLS only, no plain listener. Without secretRef the operator creates "
                                "the Secret <name>-mqtt-tls once (a self-signed CA and a server certificate for the "
                                "Service's names <name>-hivemq[.<namespace>[.svc[.cluster.local]]], owned by this "
                                "resource) and never replaces it",
                            },
                            "secretRef": {
                                "type": "object",
                                "description": "Your own Secret instead (same namespace), e.g. a cert-manager "
                                "Certificate's with keystores.pkcs12.create: keystore.p12 (PKCS12 keystore: the "
                                "server's key and certificate chain, for names clients use), ca.crt (PEM CA the "
                                "clients trust) and keystore-password (the keystore's password, without <, & or quotes: HiveMQ "
                                "puts it into its config.xml), unless passwordSecretRef names where the password is",
                                "required": ["name"],
                                "properties": {
                                    "name": {
                                        "type": "string",
                                        "minLength": 1,
                                        "pattern": DNS_NAME,
                                        "description": "Secret name",
                                    },
                                    "passwordSecretRef": secret_key(
                                        "The keystore's password (cert-manager's keystores.pkcs12.passwordSecretRef)"
                                    ),
                                },
                            },
                        },
                        **{
                            "x-kubernetes-validations": [
                                {
                                    "rule": "!has(self.secretRef) || self.enabled",
                                    "message": "mqtt.tls.secretRef needs mqtt.tls.enabled",
                                }
                            ]
                        },
                    ),
                    "username": secret_key_ref(
                        "MQTT user name of the bridge (role bridge in usersSecretRef's file; for an external broker its user)"
                    ),
                    "password": secret_key_ref(
                        "MQTT password of the bridge (with usersSecretRef, or an external broker)"
                    ),
                },
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.mode != 'external' || has(self.host)",
                            "message": "mqtt.host is required when mqtt.mode is external",
                        },
                        {
                            "rule": "!has(self.authentication) || self.authentication != 'credentials' || self.mode == 'managed'",
                            "message": "mqtt.authentication credentials is for mode managed (an external broker checks its own users)",
                        },
                        {
                            "rule": "!has(self.usersSecretRef) || (has(self.username) && has(self.password))",
                            "message": "mqtt.username and mqtt.password (the bridge's identity) are required with "
                            "mqtt.usersSecretRef",
                        },
                        {
                            "rule": "has(self.usersSecretRef) || self.mode == 'external' || (has(self.authentication) "
                            "&& self.authentication == 'none') || (!has(self.username) && !has(self.password))",
                            "message": "mqtt.username and mqtt.password name the bridge in your own mqtt.usersSecretRef: "
                            "the operator's <name>-mqtt-credentials holds the bridge's identity otherwise",
                        },
                        {
                            "rule": "!has(self.usersSecretRef) || (self.mode == 'managed' && (!has(self.authentication) "
                            "|| self.authentication == 'credentials'))",
                            "message": "mqtt.usersSecretRef needs a managed broker with mqtt.authentication credentials",
                        },
                        {
                            "rule": "self.mode == 'managed' || !has(self.tls) || !has(self.tls.secretRef)",
                            "message": "mqtt.tls.secretRef is for mode managed (an external broker serves its own certificate)",
                        },
                    ]
                },
            ),
            "ingest": ingest_schema(),
            "kafka": _obj(
                "Kafka cluster of the pipeline's topics",
                {
                    "mode": _str(
                        "managed: a Strimzi Kafka (KRaft) owned by this resource; external: an existing cluster",
                        "managed",
                        enum=["managed", "external"],
                    ),
                    "bootstrap": _str(
                        "External bootstrap servers host:port[,host:port] (mode=external)",
                        pattern=r"^[^,\s]+:[0-9]+(,[^,\s]+:[0-9]+)*$",
                    ),
                    "version": _str(
                        "Kafka version run by Strimzi (mode=managed; Strimzi 1.2.0 runs 4.2.0-4.3.1)",
                        "4.2.0",
                        pattern=r"^4\.[23]\.[0-9]+$",
                    ),
                    "replicas": _int("Broker+controller nodes of the managed cluster", 1, 1, 9),
                    "storage": _str("Persistent volume size per node (mode=managed)", "10Gi", pattern=QUANTITY),
                    "partitions": _int(
                        "Partitions of the raw, features, windows and scores topics; they bound the "
                        "preprocessor and scorer replicas (for mode external: what those topics have)",
                        6,
                        1,
                        1024,
                    ),
                    "replicationFactor": _int("Replication factor of every topic", 1, 1, 9),
                    "retentionHours": _int("Retention of the stream topics", 72, 1, 24 * 365),
                    "authentication": _str(
                        "How the programs authenticate to Kafka. scram-sha-512: SASL SCRAM-SHA-512 over TLS; for a managed "
                        "cluster the operator creates one KafkaUser per program with exactly its ACLs (the default: "
                        "secure unless `none` is chosen); for an external cluster give username and passwordSecretRef "
                        "(and caSecretRef unless the brokers' CA is publicly trusted). none: plaintext, no users (the "
                        "default for an external cluster)",
                        enum=["scram-sha-512", "none"],
                    ),
                    "username": _str(
                        "SASL user of every program on an external cluster (mode=external, scram-sha-512)", minLength=1
                    ),
                    "passwordSecretRef": secret_key("SASL password of `username` (mode=external, scram-sha-512)"),
                    "caSecretRef": secret_key("PEM CA certificate that signed the external brokers' certificates"),
                },
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.mode != 'external' || has(self.bootstrap)",
                            "message": "kafka.bootstrap is required when kafka.mode is external",
                        },
                        {
                            "rule": "self.replicationFactor <= self.replicas || self.mode == 'external'",
                            "message": "kafka.replicationFactor cannot exceed kafka.replicas",
                        },
                        {
                            "rule": "self.mode != 'external' || !has(self.authentication) || self.authentication != 'scram-sha-512' "
                            "|| (has(self.username) && has(self.passwordSecretRef))",
                            "message": "kafka.username and kafka.passwordSecretRef are required for scram-sha-512 on an external Kafka",
                        },
                        {
                            "rule": "self.mode == 'external' || (!has(self.username) && !has(self.passwordSecretRef) "
                            "&& !has(self.caSecretRef))",
                            "message": "kafka.username, passwordSecretRef and caSecretRef are for mode external; "
                            "the operator creates the managed cluster's users",
                        },
                        {
                            "rule": "(!has(self.username) && !has(self.passwordSecretRef) && !has(self.caSecretRef)) "
                            "|| (has(self.authentication) && self.authentication == 'scram-sha-512')",
                            "message": "kafka.username, passwordSecretRef and caSecretRef need kafka.authentication: scram-sha-512",
                        },
                    ]
                },
            ),
            "preprocessing": preprocessing_schema(),
            "model": _obj(
                "The anomaly model and how its training range is chosen: the settings of `streamtrain train`, "
                "generated from them (same defaults and bounds, camelCase names), each rendered into the trainer "
                "as its STREAMTRAIN_ variable",
                {
                    **model_properties(),
                    "signing": _obj(
                        "Signed model versions: the trainer signs each version with an Ed25519 key, and every scorer "
                        "refuses versions not signed by it",
                        {
                            "enabled": {
                                "type": "boolean",
                                "default": True,
                                "description": "Sign and verify model versions. Without secretRef the operator creates "
                                "the Secret <name>-model-signing once (a fresh key pair, owned by this resource) and "
                                "never replaces it",
                            },
                            "secretRef": {
                                "type": "object",
                                "description": "Your own key Secret instead (same namespace), with the keys "
                                "signing-key.pem (Ed25519 private key, PEM) and verify-keys (comma-separated base64 "
                                "public keys: several while a key is rotated)",
                                "required": ["name"],
                                "properties": {
                                    "name": {
                                        "type": "string",
                                        "minLength": 1,
                                        "pattern": DNS_NAME,
                                        "description": "Secret name",
                                    }
                                },
                            },
                        },
                    ),
                },
            ),
            "training": _obj(
                "When model versions are trained; each run is one Job that publishes one version",
                {
                    "schedule": _str(
                        "Cron schedule of retraining (a CronJob); empty: a single Job per spec change",
                        "",
                        pattern=r"^$|" + CRON,
                    ),
                    "resources": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                        "description": "Container resources of the trainer (requests/limits)",
                    },
                    "workers": _int(
                        "Training workers (MultiWorkerMirroredStrategy as an indexed Job, each reading its own "
                        "partitions of the range): at most kafka.partitions; 1 trains in one Pod",
                        1,
                        1,
                        64,
                    ),
                },
            ),
            "scorer": _obj(
                "Live scoring with hot model swaps",
                {
                    "replicas": _int(
                        "Scorer replicas (one consumer group): at most kafka.partitions, since a scorer "
                        "beyond the partition count gets none",
                        2,
                        1,
                        1024,
                    ),
                    "autoscaling": _obj(
                        "Scale the scorers on their consumer group's lag with a KEDA ScaledObject "
                        "(needs KEDA 2.x in the cluster); scorer.replicas is then unused: the "
                        "HorizontalPodAutoscaler KEDA makes keeps the count within min/maxReplicas",
                        {
                            "enabled": {
                                "type": "boolean",
                                "default": False,
                                "description": "Render the KEDA ScaledObject",
                            },
                            "minReplicas": _int("Fewest scorers", 1, 1, 1024),
                            "maxReplicas": _int(
                                "Most scorers; empty: kafka.partitions (the most that get a partition)", None, 1, 1024
                            ),
                            "lagThreshold": _int(
                                "Target lag per scorer in records: KEDA adds scorers while the group's lag "
                                "divided by the scorers is above it",
                                1000,
                                1,
                            ),
                            "pollingInterval": _int("Seconds between KEDA's lag checks", 15, 1, 3600),
                        },
                    ),
                    "engine": _str(
                        "python (micro-batches, TensorFlow) or kafka-streams (JVM Kafka Streams application, "
                        "ONNX Runtime, exactly once)",
                        "python",
                        enum=["python", "kafka-streams"],
                    ),
                    "startAt": _str(
                        "Where a new scorer group starts reading: committed (its offsets, else the earliest), "
                        "earliest, or latest (only what arrives after it starts); applied on the group's first "
                        "start only, so Pod restarts resume",
                        "committed",
                        enum=["committed", "earliest", "latest"],
                    ),
                    "pinnedVersion": _int(
                        "Serve exactly this model version (streamtrain models pin, run as a Job with the "
                        "trainer's Kafka identity); the scorers switch without a restart. Removing it unpins "
                        "(the scorers return to the newest healthy version). A version not on the models "
                        "topic fails the Job (condition PinApplied)",
                        None,
                        1,
                        KEY_PATTERN_MAX,
                    ),
                    "streamsImage": _str(
                        "Image of the kafka-streams scorer (images/scorer-streams.Dockerfile); "
                        "empty: <image.repository>-scorer-streams:<image.tag>",
                        "",
                    ),
                    "challenger": _obj(
                        "Champion/challenger: new versions score in shadow until promoted",
                        {
                            "enabled": {
                                "type": "boolean",
                                "default": False,
                                "description": "Shadow new versions first",
                            },
                            "promoteAfter": _int(
                                "Auto-promote after this many shadow records (0 = only on request)", 0, 0
                            ),
                            "minAgreement": _num("Agreement with the champion needed to auto-promote", 0.95, 0.0, 1.0),
                        },
                    ),
                },
            ),
            "networkPolicies": _obj(
                "Ingress NetworkPolicies for the pipeline's Pods: every port closed but what a client needs "
                "(egress stays open; the managed Kafka cluster keeps Strimzi's own policies)",
                {
                    "enabled": {
                        "type": "boolean",
                        "default": True,
                        "description": "Render the NetworkPolicies (they need a network plugin that enforces them)",
                    },
                    "devices": _obj(
                        "Who may connect to the managed broker's MQTT listener besides the simulator and the bridge",
                        {
                            "anywhere": {
                                "type": "boolean",
                                "default": True,
                                "description": "Any source, inside or outside the cluster (real devices publish from "
                                "outside); false: only the cidrs, the namespaces and this pipeline's simulator and bridge",
                            },
                            "cidrs": {
                                "type": "array",
                                "items": _str("An IP block the devices publish from", pattern=CIDR),
                                "maxItems": 64,
                                "default": [],
                                "description": "IP blocks of the devices (used when anywhere is false)",
                            },
                            "namespaces": {
                                "type": "array",
                                "items": _str("A namespace", pattern=DNS_LABEL),
                                "maxItems": 64,
                                "default": [],
                                "description": "Namespaces whose Pods may publish (used when anywhere is false)",
                            },
                        },
                    ),
                    "monitoring": _obj(
                        "Who may read the metrics port of every Pod (the operator itself always may)",
                        {
                            "namespaces": {
                                "type": "array",
                                "items": _str("A namespace", pattern=DNS_LABEL),
                                "maxItems": 64,
                                "default": [],
                                "description": "Namespaces of the monitoring Pods; empty: any namespace",
                            },
                            "podLabels": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                                "default": {"app.kubernetes.io/name": "prometheus"},
                                "description": "Labels of the monitoring Pods (the Prometheus Operator's label by default); "
                                "{}: every Pod of those namespaces",
                            },
                        },
                    ),
                },
            ),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self.fleet.simulated == false || self.mqtt.mode == 'managed' || has(self.mqtt.host)",
                    "message": "a simulated fleet needs a broker: mqtt.mode managed or mqtt.host",
                },
                {
                    "rule": "self.fleet.simulated == false || !has(self.mqtt.usersSecretRef) "
                    "|| has(self.fleet.credentialsSecretRef)",
                    "message": "fleet.credentialsSecretRef is required for a simulated fleet with your own mqtt.usersSecretRef",
                },
                {
                    "rule": "!has(self.fleet.credentialsSecretRef) || has(self.mqtt.usersSecretRef)",
                    "message": "fleet.credentialsSecretRef goes with your own mqtt.usersSecretRef (the operator's "
                    "<name>-mqtt-credentials holds the simulated fleet's passwords otherwise)",
                },
                {
                    "rule": "self.mqtt.ingest != 'extension' || self.mqtt.mode == 'managed'",
                    "fieldPath": ".mqtt.ingest",
                    "message": "mqtt.ingest extension runs inside the managed broker: it needs mqtt.mode managed",
                },
                {
                    "rule": "self.mqtt.ingest != 'extension' || (has(self.kafka.authentication) "
                    "? self.kafka.authentication == 'none' : self.kafka.mode == 'external')",
                    "fieldPath": ".mqtt.ingest",
                    "message": "mqtt.ingest extension does not authenticate to Kafka yet: it needs kafka.authentication "
                    "none (a managed Kafka defaults to scram-sha-512)",
                },
                *PARTITION_BOUNDS,
                *MODEL_RULES,
                *INGEST_RULES,
            ]
        },
    )


def status_schema() -> dict:
    return {
        "type": "object",
        "description": "Observed state, written by the operator",
        "properties": {
            "phase": _str("Pending, Progressing, Ready or Failed"),
            "observedGeneration": {"type": "integer", "format": "int64"},
            "modelVersion": _str("Newest model version on the models topic"),
            "anomalyRate": _str("Share of recent scores flagged as anomalies"),
            "servingVersions": _str("Model versions the scorer replicas serve now, comma-separated"),
            "pinnedVersion": _str("Version the scorers are pinned to (streamtrain models pin), if any"),
            "lastTraining": {
                "type": "object",
                "description": "Result of the newest trainer run",
                "properties": {
                    "job": _str("Job name"),
                    "result": _str("Succeeded, Failed or Running"),
                    "finishedAt": _str("RFC 3339 time", format="date-time"),
                },
            },
            "children": {"type": "array", "description": "Children this resource owns", "items": {"type": "string"}},
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": _str("Ready, or <Child>Ready for each child"),
                        "status": _str("True, False or Unknown", enum=["True", "False", "Unknown"]),
                        "reason": _str("CamelCase reason"),
                        "message": _str("Human-readable detail"),
                        "lastTransitionTime": _str("When status last changed", format="date-time"),
                        "observedGeneration": {"type": "integer", "format": "int64"},
                    },
                },
            },
            "createdSecrets": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Secrets this operator created (names only): one of those names held by a Secret "
                "it did not create is a NameConflict, since it may not read Secrets to check their owner",
            },
        },
    }


def crd() -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "streamtrain", "app.kubernetes.io/part-of": "streamtrain"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "streamingtraining",
                "kind": KIND,
                "shortNames": ["st"],
                "categories": ["streamtrain"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Model", "type": "string", "jsonPath": ".status.modelVersion"},
                        {"name": "AnomalyRate", "type": "string", "jsonPath": ".status.anomalyRate"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A streaming training pipeline for an IoT fleet",
                            "required": ["spec"],
                            # Children are named "<name>-<role>[-<hash>]"; Services must stay DNS-1035 labels (63)
                            # with Strimzi's "-kafka-bootstrap", and CronJob names at most 52 characters.
                            "x-kubernetes-validations": [
                                {
                                    "rule": "self.metadata.name.size() <= 40",
                                    "message": "metadata.name must be at most 40 characters (children append suffixes)",
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def main() -> None:
    sys.stdout.write(
        "# Generated by `python -m streamtrain.operator.crd` (operator/streamtrain_operator/crd.py).\n"
        "# Do not edit by hand: a test compares this file with the generator.\n"
    )
    yaml.safe_dump(crd(), sys.stdout, sort_keys=False, width=120)


if __name__ == "__main__":
    main()
