.PHONY: bench
bench: install loadgen ## Benchmarks as ratios against limits measured in the same run (QUICK=1 for a short run; ONLY=scorer-vs-plain|scoring|training|... one stage group alone), then ingestion against HiveMQ's own QoS 1 rate (bench-ingest)
	QUICK=$(QUICK) $(PY) -m bench.run $(if $(ONLY),--only $(ONLY))
	$(if $(ONLY),,COUNT=$(if $(QUICK),10000,) $(PY) -m bench.ingest_ceiling)
	$(if $(ONLY),,$(MAKE) --no-print-directory bench-preprocess)

.PHONY: bench-preprocess
bench-preprocess: install ## The preprocessor's records per CPU-second, batch step vs record step, no broker (QUICK=1: 10k records)
	$(PY) -m bench.preprocess_cpu $(if $(QUICK),--records 10000,)

.PHONY: bench-quality
bench-quality: install ## Detection quality through the live pipeline: the recorded fleet, then SKAB (SKAB=path of its checkout, default ../shared/data/skab; ONLY=recorded|skab), next to PCA T2+Q, Isolation Forest, a conv AE (~20 min)
	$(PY) -m bench.quality $(if $(SKAB),--skab-data $(SKAB)) $(if $(ONLY),--only $(ONLY))

.PHONY: bench-load
bench-load: install loadgen ## The whole pipeline under load (Go load generator -> HiveMQ -> ingestion -> preprocess -> score) at 1k-10k readings/s (~12 min; QUICK=1: 2 short rates; INGEST=extension: HiveMQ writes to Kafka)
	QUICK=$(QUICK) $(PY) -m bench.pipeline_load --ingest $(or $(INGEST),bridge)

.PHONY: bench-profiles
bench-profiles: install loadgen ## Profiles of the remaining gaps into bench/profiles/: scorer (pyinstrument), training at 200k (py-spy, every thread, native frames), the extension's broker (Java Flight Recorder) (~15 min)
	$(PY) -m bench.profile_scorer
	$(PY) -m bench.profile_training
	PROFILE=1 $(PY) -m bench.ingest_ceiling

.PHONY: bench-soak
bench-soak: install loadgen ## An hour under load: RATE readings/s (5000) for MINUTES (60), a model retrained every RETRAIN minutes (10) and rolled to the scorer; per-minute table, bench/results/soak.json and .png (not in CI)
	$(PY) -m bench.soak --rate $(or $(RATE),5000) --minutes $(or $(MINUTES),60) --retrain $(or $(RETRAIN),10) --ingest $(or $(INGEST),extension)
