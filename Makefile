# Pixel-CNN: `make cv` (set up .venv, prepare the data, cross-validate, register) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# One tracking store whatever MLflow's default: keep a URI already set in the environment.
MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export MLFLOW_TRACKING_URI
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export PYTHONUNBUFFERED := 1
# Small networks: one BLAS/OpenMP thread is faster, and two jobs sharing the 2 cores do not
# oversubscribe them (with the default thread count a cv slowed ~60x next to another job).
export OMP_NUM_THREADS ?= 1
# `mlflow run --env-manager local` runs `python` from PATH: make it the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

HOST ?= 127.0.0.1
UI_PORT ?= 5000
SERVE_PORT ?= 5001
# Uvicorn workers of `make serve`: one model and one torch thread each (OMP_NUM_THREADS=1 above).
SERVE_WORKERS ?= 2
MODEL_URI ?= models:/pixel-cnn@champion
# Extra `mlflow run` parameters, e.g. CV_ARGS="-P preset=seed -P repeats=5".
PREP_ARGS ?=
CV_ARGS ?=
# Arguments of `make predict`, e.g. PREDICT_ARGS="../shared/data/kepler-pixdiff/stacks --out results.csv --sheets sheets/".
PREDICT_ARGS ?= ../shared/data/kepler-pixdiff/stacks --out results.csv
MLFLOW_RUN := $(VENV)/bin/mlflow run . --env-manager local

.PHONY: help venv prep cv test test-fast ui serve predict clean

help:
	@echo "make cv      set up .venv, prepare the dataset, 5-fold cv of the fusion vetter, register pixel-cnn@champion"
	@echo "make test    run the whole test suite (what CI runs)"
	@echo "make ui      mlflow ui on http://$(HOST):$(UI_PORT)"
	@echo "make serve   serve $(MODEL_URI) on http://$(HOST):$(SERVE_PORT)/invocations"
	@echo "make predict score stacks into a table (+ vetting sheets): PREDICT_ARGS=\"DIR --out results.csv --sheets sheets/\""
	@echo "make tune, promote, bench, bench-quality, bench-tabular, bench-dr25, prep-tpf, server, server-stop, tune-workers N=4,"
	@echo "     test-fast, load, check-model: see README.md and docs/"

venv: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# `-P` keys of the *_ARGS variables are checked against MLproject before anything runs (a typo would
# otherwise fail only after prep, as a FAILED run): $(call check_args,ENTRY_POINT,VARIABLE).
check_args = @$(PY) -m entrypoints.project_args $(1) $(2) $($(2))
.PHONY: args-cv args-tune args-bench_quality
args-cv args-tune args-bench_quality: args-%: $(STAMP)
	$(call check_args,$*,$(shell echo $* | tr a-z A-Z)_ARGS)

prep: $(STAMP)
	$(call check_args,prep,PREP_ARGS)
	$(MLFLOW_RUN) -e prep --experiment-name pixel-cnn-prep $(PREP_ARGS)

cv: args-cv prep
	$(MLFLOW_RUN) -e cv --experiment-name pixel-cnn-cv -P register=true $(CV_ARGS)

# The suite runs on TEST_WORKERS pytest-xdist processes, one test file per worker at a time (module
# fixtures such as a service stack stay in one process); the session's shared model is built once.
# --no-loadscope-reorder: keep tests/conftest.py's LONGEST_FIRST file order (xdist otherwise re-sorts
# the files by their number of tests, which started the longest files last).
# 3 workers on 2 cores: the suite waits on servers and subprocesses much of the time (a clean-clone run
# on 2 workers used 1.2 cores on average), so a third worker fills the idle core.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not network"

ui: $(STAMP)
	@$(PY) -m entrypoints.ui_link http://$(HOST):$(UI_PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host $(HOST) --port $(UI_PORT)

serve: $(STAMP)
	@$(PY) -m entrypoints.check_model $(MODEL_URI)
	$(VENV)/bin/mlflow models serve -m $(MODEL_URI) --env-manager local --host $(HOST) --port $(SERVE_PORT) \
	  --workers $(SERVE_WORKERS)

# Exit 1 of predict = some files skipped (each named in the table and on stderr; the data folder's 20
# placeholders always are): not a failure of the target. Exit 2 (no model, nothing to score) is.
predict: $(STAMP)
	$(PY) -m pixel_cnn.predict --model-uri $(MODEL_URI) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(PREDICT_ARGS); \
	  rc=$$?; test $$rc -le 1

clean:
	rm -rf data/processed

# Targets of each capability (tune, bench, services, ...) live in mk/*.mk.
-include mk/*.mk
