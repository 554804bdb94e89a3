# syntax=docker/dockerfile:1
# The Kafka Streams scorer (scorer/streams): a JVM image whose entrypoint is the scorer, run by the
# operator when a StreamingTraining sets scorer.engine: kafka-streams. Same STREAMTRAIN_* settings,
# same /metrics, /healthz, /readyz on STREAMTRAIN_METRICS_PORT, same non-root uid as images/Dockerfile.
# Build from the repository root:
#   docker build -f images/scorer-streams.Dockerfile -t streamtrain-scorer-streams:dev .
#
# Pinned bases by digest (Maven + JDK 17 to build, JRE 17 to run; images/README.md says how to move them).
ARG MAVEN_IMAGE=maven:3.9.9-eclipse-temurin-17@sha256:f58d59b6273e785ac0a4477f6e9b5ba1d7731c75b906c0f7b34076f1851318cc
ARG JRE_IMAGE=eclipse-temurin:17.0.13_11-jre-jammy@sha256:7b8b90b35214757840f79fc78794bf4b06cb6ac92a8853429de16366e837c302

# ---- build: pinned dependencies from Maven Central, then the scorer jar + target/lib -----------
FROM ${MAVEN_IMAGE} AS build
WORKDIR /src
COPY scorer/streams/pom.xml ./pom.xml
# Dependencies first (a layer that survives source edits).
RUN mvn -q -B --strict-checksums dependency:go-offline
COPY scorer/streams/src ./src
# The unit tests (src/test) ran where the sources were checked (make streams-scorer, .ci/install).
RUN mvn -q -B --strict-checksums -o -Dmaven.test.skip=true package

# ---- runtime: the JRE, the jar and its dependencies, a fixed non-root user ------------------------
FROM ${JRE_IMAGE} AS runtime
ARG UID=10001
RUN groupadd --system --gid ${UID} streamtrain \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /app --shell /usr/sbin/nologin streamtrain
COPY --from=build /src/target/streamtrain-scorer-streams.jar /app/streamtrain-scorer-streams.jar
COPY --from=build /src/target/lib /app/lib
# Read-only root filesystem: ONNX Runtime unpacks its native library and Kafka Streams keeps its
# (empty) state directory under /tmp, an emptyDir in the Pod the operator renders.
ENV HOME=/tmp \
    STREAMTRAIN_LOG_FORMAT=json
WORKDIR /app
USER ${UID}:${UID}
ENTRYPOINT ["java", "-XX:MaxRAMPercentage=75", "-Djava.io.tmpdir=/tmp", "-jar", "/app/streamtrain-scorer-streams.jar"]
