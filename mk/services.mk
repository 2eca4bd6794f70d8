# Shared tracking stack: PostgreSQL + SeaweedFS (S3) + mlflow server, all on $(HOST).
# `make server` starts it and writes .services/env; `. .services/env` points a shell at it,
# after which every target (prep, cv, serve, ...) uses it: the Makefile keeps an
# MLFLOW_TRACKING_URI already in the environment. See docs/services.md.
SERVICES_DIR ?= .services
PG_PORT ?= 5432
S3_PORT ?= 8333
MLFLOW_PORT ?= 5000
ARTIFACTS ?= proxied
S3_BUCKET ?= pixel-cnn
SERVER_WORKERS ?= 2
WEED_PORTS ?=
# Tracking server authentication: basic (MLflow's basic-auth app, admin + generated password) or
# none (refused unless HOST is loopback). See docs/services.md, "Security".
AUTH ?= basic
SERVICES := $(PY) -m entrypoints.services

.PHONY: server server-stop server-status server-env server-user server-passwd

server: $(STAMP)
	$(SERVICES) start --dir $(SERVICES_DIR) --host $(HOST) --pg-port $(PG_PORT) --s3-port $(S3_PORT) \
	  --mlflow-port $(MLFLOW_PORT) --artifacts $(ARTIFACTS) --bucket $(S3_BUCKET) --workers $(SERVER_WORKERS) \
	  --auth $(AUTH) $(if $(WEED_PORTS),--weed-ports $(WEED_PORTS))

server-stop:
	$(SERVICES) stop --dir $(SERVICES_DIR)

server-status:
	$(SERVICES) status --dir $(SERVICES_DIR)

server-env:
	@$(SERVICES) env --dir $(SERVICES_DIR)

# `make server-user NAME=alice`: a read-only user of the tracking server; prints its password once.
# `make server-passwd NAME=alice` (or NAME=admin): a new generated password, printed once.
server-user server-passwd: $(STAMP)
	@$(SERVICES) $(if $(filter server-user,$@),add-user,passwd) --dir $(SERVICES_DIR) --name "$(NAME)"

# `mlflow run` and `mlflow models serve` retry an unreachable server for minutes (MLflow's
# HTTP retry policy) before failing: check the tracking URI first (no-op for sqlite/file).
prep cv serve tune promote ui bench-quality bench-tabular bench-dr25 prep-tpf prep-tpf-download cv-tpf predict check-model: tracking-check
.PHONY: tracking-check
tracking-check: $(STAMP)
	@$(PY) -m entrypoints.tracking_check

# Distributed tuning: N worker processes on one Optuna study in $(OPTUNA_STORAGE) (the PostgreSQL
# of `make server`; `. .services/env` sets it), all trials under one MLflow parent run.
# E.g. `make tune-workers N=4 TUNE_TRIALS=20 TUNE_WORKERS_ARGS="--n-folds 5 --max-epochs 40"`.
N ?= 4
TUNE_TRIALS ?= 20
TUNE_DATASET ?= data/processed
TUNE_WORKERS_ARGS ?=
# Read from the environment by the launcher and its workers (never on a command line: it holds a password).
OPTUNA_STORAGE ?=
export OPTUNA_STORAGE
.PHONY: tune-workers
# prep only when the default local dataset is used.
tune-workers: $(if $(filter data/processed,$(TUNE_DATASET)),prep) tracking-check
	$(PY) -m entrypoints.tune_workers launch --n-workers $(N) --n-trials $(TUNE_TRIALS) \
	  --dataset $(TUNE_DATASET) --state-dir $(SERVICES_DIR) $(TUNE_WORKERS_ARGS)
