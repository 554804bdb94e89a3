# The Kafka Streams scorer (scorer/streams, Java 17 + Maven).
.PHONY: streams-scorer streams-compare

streams-scorer: ## Run the Kafka Streams scorer's unit tests (TopologyTestDriver) and build its jar (offline from the Maven cache when possible)
	$(PY) -c "from streamtrain.scorer.streams_engine import build; print(build(force=True))"

streams-compare: ## Build the TF-Java vs ONNX Runtime harness (scorer/streams/README.md)
	mvn -q -B -f scorer/streams/pom.xml -P engine-compare package
