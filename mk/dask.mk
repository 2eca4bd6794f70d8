# A Dask cluster on $(HOST): `make dask` starts a scheduler and DASK_WORKERS workers (separate processes,
# PIDs in $(DASK_DIR)/state.json), `make dask-stop` stops them by PID. Use it with
# `make prep-tpf SCHEDULER=tcp://127.0.0.1:8786 ...` or `make predict SCHEDULER=...` (docs/scaling.md).
DASK_DIR ?= $(SERVICES_DIR)/dask
DASK_WORKERS ?= 2
DASK_PORT ?= 8786
DASK_DASHBOARD_PORT ?= 8787
DASK_MEMORY_LIMIT ?= 4GiB
# Mutual TLS with the stack's own certificates: auto = on exactly when HOST is beyond loopback
# (then always on; `off` is refused there), or on / off.
DASK_TLS ?= auto
DASK := $(PY) -m entrypoints.dask_cluster

.PHONY: dask dask-stop dask-status

dask: $(STAMP)
	$(DASK) start --dir $(DASK_DIR) --host $(HOST) --workers $(DASK_WORKERS) --port $(DASK_PORT) \
	  --dashboard-port $(DASK_DASHBOARD_PORT) --memory-limit $(DASK_MEMORY_LIMIT) --tls $(DASK_TLS)

dask-stop:
	$(DASK) stop --dir $(DASK_DIR)

dask-status:
	$(DASK) status --dir $(DASK_DIR)
