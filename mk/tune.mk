# Tuning: `make tune`, `make promote`, `make bench-tune` (bench/bench.py, i.e. `make bench`,
# runs bench/tune_bench.py too).
# Extra `mlflow run` parameters, e.g. TUNE_ARGS="-P n_trials=3 -P n_folds=2 -P register_best=true".
TUNE_ARGS ?=
BENCH_TUNE_ARGS ?=

.PHONY: tune promote bench-tune

tune: args-tune prep
	$(MLFLOW_RUN) -e tune --experiment-name pixel-cnn-tune $(TUNE_ARGS)

promote: $(STAMP)
	$(PY) -m entrypoints.promote

# Trials per minute with and without pruning (20-trial studies); writes bench/results/tune.json.
bench-tune: $(STAMP)
	$(PY) bench/tune_bench.py $(BENCH_TUNE_ARGS)
