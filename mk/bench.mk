.PHONY: bench
bench: install ## Benchmarks as ratios against limits measured in the same run (QUICK=1 for a short run)
	QUICK=$(QUICK) $(PY) -m bench.run
