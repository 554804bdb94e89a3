# StreamTrain developer targets. `make help` lists them all.
PY ?= .venv/bin/python
STREAMTRAIN ?= .venv/bin/streamtrain

.DEFAULT_GOAL := help

.PHONY: help install docs demo test test-unit test-faults test-stress stack-up monitoring stack-down stack-status

help: ## List every target with its description
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

install: ## Create .venv and install the pinned dependencies (requirements.lock) and the project
	bash .ci/install

docs: install ## Regenerate docs/reference.md (every command, STREAMTRAIN_ variable and CRD field) from the code
	$(PY) -m streamtrain.cli.reference > docs/reference.md

demo: install ## Run the whole pipeline locally on real Kafka + HiveMQ and print the quality table
	$(STREAMTRAIN) --log-format console demo

test: install ## Run the default test suite (real brokers, real TensorFlow)
	$(PY) -m pytest -q -n $(or $(WORKERS),3) --dist loadfile --durations=10

test-unit: install ## Unit tier: every test without a broker, a JVM cluster or a control plane (tests carry e2e/faults/kube/node/images otherwise)
	$(PY) -m pytest -q -m "not e2e and not faults and not kube and not node and not images"

test-faults: install ## Chaos, overload, per-program Kafka ACLs, a 3-broker kill and replicas added/removed: exactly-once scores (~15 min)
	$(PY) -m pytest -q -s -m faults tests

test-stress: install ## The fault tier and the timing e2e tests 5 times in a row under a CPU hog, with each test's pass count (hours; not in CI)
	$(PY) tools/stress.py --runs $(or $(RUNS),5)

stack-up: install ## Start Kafka and HiveMQ on loopback and create the topics
	$(STREAMTRAIN) --log-format console stack up

monitoring: install ## stack-up plus Prometheus with StreamTrain's alerts on http://127.0.0.1:9090 (programs on --metrics-port 9401-9403)
	$(STREAMTRAIN) --log-format console stack up --monitoring

stack-status: ## Show whether both brokers are running and ready
	$(STREAMTRAIN) stack status

stack-down: ## Stop Prometheus (if running) and both brokers cleanly
	$(STREAMTRAIN) --log-format console stack down

-include mk/*.mk
