# syntax=docker/dockerfile:1
# HiveMQ CE (embedded edition) run by StreamTrain's own launcher (stack/java/HiveMQLauncher.java),
# the same broker as the local stack: given a users file (`streamtrain stack passwd` /
# `stack passwd-fleet`) it authenticates every client and lets a device publish only to
# devices/<its user>/telemetry and only bridge users subscribe. The operator runs it for
# spec.mqtt.authentication: credentials and appends the mounted users file to the arguments.
# Build from the repository root:
#   docker build -f images/hivemq.Dockerfile -t ghcr.io/streamtrain/streamtrain-hivemq:dev .
#
# Pinned bases by digest (Maven + JDK 17 to resolve the jars, JRE 17 to run; images/README.md says how
# to move them). HIVEMQ_VERSION is hivemq-pom.xml's hivemq.version (the local stack's default).
ARG MAVEN_IMAGE=maven:3.9.9-eclipse-temurin-17@sha256:f58d59b6273e785ac0a4477f6e9b5ba1d7731c75b906c0f7b34076f1851318cc
ARG JRE_IMAGE=eclipse-temurin:17.0.13_11-jre-jammy@sha256:7b8b90b35214757840f79fc78794bf4b06cb6ac92a8853429de16366e837c302

# ---- build: the HiveMQ CE jars from Maven Central, as stack/jars.py resolves them --------------
FROM ${MAVEN_IMAGE} AS build
ARG HIVEMQ_VERSION=2025.5
WORKDIR /src
COPY stack/java/hivemq-pom.xml ./hivemq-pom.xml
RUN mvn -q -B --strict-checksums -f hivemq-pom.xml -Dhivemq.version=${HIVEMQ_VERSION} \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies -DoutputDirectory=/opt/hivemq/lib
# The launcher compiled here: a JRE image has no jdk.compiler module, which running it as a
# single-file source program (as the local stack does) would need.
COPY stack/java/HiveMQLauncher.java ./HiveMQLauncher.java
RUN javac --release 17 -cp '/opt/hivemq/lib/*' -d /opt/streamtrain/classes HiveMQLauncher.java
# StreamTrain's ingestion extension (spec.mqtt.ingest: extension), with its shared test vectors; it
# stays idle unless STREAMTRAIN_INGEST_KAFKA_BOOTSTRAP is set (the operator sets it for that mode).
COPY bridge/hivemq-extension /src/extension
COPY tests/ingest/vectors /src/vectors
RUN mvn -q -B --strict-checksums -f /src/extension/pom.xml -Dvectors.dir=/src/vectors package \
 && mkdir -p /opt/hivemq/extensions/streamtrain-ingest \
 && cp /src/extension/target/streamtrain-ingest.jar /src/extension/hivemq-extension.xml /opt/hivemq/extensions/streamtrain-ingest/

# ---- runtime: the JRE, the jars, the compiled launcher and config.xml, a fixed non-root user -----
FROM ${JRE_IMAGE} AS runtime
ARG UID=10001
RUN groupadd --system --gid ${UID} streamtrain \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /opt/hivemq --shell /usr/sbin/nologin streamtrain \
 && mkdir -p /opt/hivemq/data /opt/hivemq/log \
 && chown ${UID}:${UID} /opt/hivemq/data /opt/hivemq/log \
 && chmod 1777 /opt/hivemq/data /opt/hivemq/log
COPY --from=build /opt/hivemq/lib /opt/hivemq/lib
COPY --from=build /opt/streamtrain/classes /opt/streamtrain/classes
COPY --from=build /opt/hivemq/extensions /opt/hivemq/extensions
# The local stack's config.xml (stack/hivemq.py hivemq_config_xml) with the listener on 0.0.0.0:1883.
COPY images/hivemq-config.xml /opt/streamtrain/conf/config.xml
# Read-only root filesystem: HiveMQ writes only its data folder (file persistence), its log folder
# and the JVM's temporary files (Netty unpacks its native transport there), emptyDirs in the Pod the
# operator renders. Data and log folders are mode 1777 like /tmp: a tmpfs mounted there without
# options (podman's --tmpfs is root-owned and takes the folder's mode) is writable by any uid. The extensions folder is read-only and holds only the ingestion
# extension (idle unless configured): the launcher embeds its authentication extension itself.
ENV HOME=/tmp \
    HIVEMQ_HOME=/opt/hivemq \
    HIVEMQ_LOG_FOLDER=/opt/hivemq/log
WORKDIR /opt/hivemq
USER ${UID}:${UID}
EXPOSE 1883
# Arguments: <config-folder> <data-folder> <extensions-folder> [users-file]; the Pod's args add the users file.
ENTRYPOINT ["java", "-XX:MaxRAMPercentage=75", "-Djava.io.tmpdir=/tmp", "-Dhivemq.home=/opt/hivemq", \
            "-cp", "/opt/streamtrain/classes:/opt/hivemq/lib/*", "HiveMQLauncher", \
            "/opt/streamtrain/conf", "/opt/hivemq/data", "/opt/hivemq/extensions"]
