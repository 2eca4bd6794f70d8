# Benchmarks. Asserts nothing about time.
.PHONY: bench bench-quick
bench: $(STAMP)
	$(PY) bench/bench.py

bench-quick: $(STAMP)
	$(PY) bench/bench.py --quick
