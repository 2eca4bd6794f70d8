# Benchmarks. Asserts nothing about time.
.PHONY: bench bench-quick
bench: $(STAMP)
	$(PY) bench/bench.py

bench-quick: $(STAMP)
	$(PY) bench/bench.py --quick

# Catalogue scale alone (Dask + S3, bench/scale_bench.py; `make bench` runs it too): bench/results/scale.json.
.PHONY: bench-scale
bench-scale: $(STAMP)
	$(PY) bench/scale_bench.py
