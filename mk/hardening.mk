# Hardening: check a model URI, drive the served model with load.
LOAD_REQUESTS ?= 2000
LOAD_CONCURRENCY ?= 8
LOAD_OUT ?= bench/load_c$(LOAD_CONCURRENCY).json

.PHONY: check-model load

check-model: $(STAMP)   ## one line: the version MODEL_URI resolves to, or what is unknown
	$(PY) -m entrypoints.check_model $(MODEL_URI)

load: $(STAMP)          ## LOAD_REQUESTS requests at LOAD_CONCURRENCY to a running `make serve`
	$(PY) -m entrypoints.loadtest http://$(HOST):$(SERVE_PORT) --requests $(LOAD_REQUESTS) \
		--concurrency $(LOAD_CONCURRENCY) --out $(LOAD_OUT)
