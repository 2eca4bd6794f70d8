# Tuning (issue 4): `make tune`, `make promote`, `make bench-tune` (also run by `make bench`).
# Extra `mlflow run` parameters, e.g. TUNE_ARGS="-P n_trials=3 -P n_folds=2 -P register_best=true".
TUNE_ARGS ?=
BENCH_TUNE_ARGS ?=

.PHONY: tune promote bench-tune bench

tune: prep
	$(MLFLOW_RUN) -e tune $(TUNE_ARGS)

promote: $(STAMP)
	$(PY) -m entrypoints.promote

# Trials per minute with and without pruning (20-trial studies); writes bench/results/tune.json.
bench-tune: prep
	$(PY) bench/tune_bench.py --dataset data/processed $(BENCH_TUNE_ARGS)

bench: bench-tune
