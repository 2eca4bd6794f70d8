# Quality benchmark of the seed, phase and default presets (same folds, honest protocol).
BENCH_QUALITY_ARGS ?=
.PHONY: bench-quality
bench-quality: args-bench_quality prep
	$(MLFLOW_RUN) -e bench_quality $(BENCH_QUALITY_ARGS)

# Issue 14: the tabular branch over every labelled KOI (grouped by star), its own MLflow run.
BENCH_TABULAR_ARGS ?=
.PHONY: bench-tabular
bench-tabular: $(STAMP)
	$(MLFLOW_RUN) -e bench_tabular --experiment-name pixel-cnn-bench $(BENCH_TABULAR_ARGS)

# Issue 20: the tabular branch beside ExoMiner on its own DR25 folds (PC vs AFP+NTP), its own MLflow run.
BENCH_DR25_ARGS ?=
.PHONY: bench-dr25
bench-dr25: $(STAMP)
	$(MLFLOW_RUN) -e bench_dr25 --experiment-name pixel-cnn-bench $(BENCH_DR25_ARGS)
