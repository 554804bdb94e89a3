# Ingestion: the MQTT load generator (Go, tools/loadgen) that measures HiveMQ's own QoS 1 ceiling.
.PHONY: loadgen

LOADGEN := .streamtrain/bin/loadgen

loadgen: ## Build the Go MQTT load generator into .streamtrain/bin/loadgen (go build cache: seconds when warm)
	cd tools/loadgen && go build -trimpath -o $(CURDIR)/$(LOADGEN) .
