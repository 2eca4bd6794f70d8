# A Dask cluster on $(HOST): `make dask` starts a scheduler and DASK_WORKERS workers (separate processes,
# PIDs in $(DASK_DIR)/state.json), `make dask-stop` stops them by PID. Use it with
# `make prep-tpf SCHEDULER=tcp://127.0.0.1:8786 ...` or `make predict SCHEDULER=...` (docs/scaling.md).
DASK_DIR ?= $(SERVICES_DIR)/dask
DASK_WORKERS ?= 2
DASK_PORT ?= 8786
DASK_DASHBOARD_PORT ?= 8787
DASK_MEMORY_LIMIT ?= 4GiB
# Extra arguments for `dask scheduler` and `dask worker` (e.g. TLS files for a non-loopback HOST).
DASK_SECURITY_ARGS ?=
DASK := $(PY) -m entrypoints.dask_cluster

.PHONY: dask dask-stop dask-status

dask: $(STAMP)
	$(DASK) start --dir $(DASK_DIR) --host $(HOST) --workers $(DASK_WORKERS) --port $(DASK_PORT) \
	  --dashboard-port $(DASK_DASHBOARD_PORT) --memory-limit $(DASK_MEMORY_LIMIT) \
	  $(if $(DASK_SECURITY_ARGS),--security-args "$(DASK_SECURITY_ARGS)")

dask-stop:
	$(DASK) stop --dir $(DASK_DIR)

dask-status:
	$(DASK) status --dir $(DASK_DIR)
