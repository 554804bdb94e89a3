# Ingestion: the MQTT load generator (Go, tools/loadgen) that measures HiveMQ's own QoS 1 ceiling.
.PHONY: loadgen

LOADGEN := .streamtrain/bin/loadgen

loadgen: ## Build the Go MQTT load generator into .streamtrain/bin/loadgen (go build cache: seconds when warm)
	cd tools/loadgen && go build -trimpath -o $(CURDIR)/$(LOADGEN) .

.PHONY: ingest-extension ingest-presets bench-ingest test-ingest-units

ingest-presets: ## Regenerate the extension's ingest-presets.json from streamtrain.ingest_mapping.PRESETS (tests/unit/streamtrain/test_ingest_mapping.py checks it)
	$(PY) -m streamtrain.ingest_mapping > bridge/hivemq-extension/src/main/resources/ingest-presets.json

ingest-extension: ## Build and unit-test the HiveMQ ingestion extension (bridge/hivemq-extension, Maven; shared vectors)
	mvn -q -B -f bridge/hivemq-extension/pom.xml package

bench-ingest: install loadgen ## Ingestion as a ratio of HiveMQ's own QoS 1 rate (Go load generator, 4/16 connections): extension and Python bridge, each at steady state (COUNT=100000; PROFILE=1: JFR profile of the extension)
	COUNT=$(COUNT) $(PY) -m bench.ingest_ceiling

test-ingest-units: ## Unit tests of the Go load generator and of the extension's validator on the shared vectors (Maven Surefire)
	cd tools/loadgen && go test ./...
	mvn -q -B -f bridge/hivemq-extension/pom.xml package

.PHONY: sparkplug-proto

sparkplug-proto: ## Regenerate streamtrain/sparkplug/sparkplug_b_pb2.py(i) from its .proto (protoc of the pinned grpcio-tools; a test checks they agree)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. streamtrain/sparkplug/sparkplug_b.proto
