.PHONY: bench
bench: install ## Benchmarks as ratios against limits measured in the same run (QUICK=1 for a short run)
	QUICK=$(QUICK) $(PY) -m bench.run

.PHONY: bench-quality
bench-quality: install ## Detection quality on the recorded fleet through the live pipeline, next to PCA T2+Q and Isolation Forest (~5 min)
	$(PY) -m bench.quality

.PHONY: bench-load
bench-load: install ## The whole pipeline under load (Go load generator -> HiveMQ -> bridge -> preprocess -> score) at 1k-10k readings/s (~12 min; QUICK=1: 2 short rates)
	QUICK=$(QUICK) $(PY) -m bench.pipeline_load
