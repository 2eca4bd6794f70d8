# Quality benchmark of the seed, phase and default presets (same folds, honest protocol).
BENCH_QUALITY_ARGS ?=
.PHONY: bench-quality
bench-quality: prep
	$(MLFLOW_RUN) -e bench_quality $(BENCH_QUALITY_ARGS)
