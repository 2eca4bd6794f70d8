# Deploy the registered model elsewhere (docs/deploy.md): the wheels of its environment on disk, and a check
# that an environment built from the model's own files answers like `make serve`.
WHEELHOUSE ?= .wheelhouse
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.complete
# mlflow's env manager for deploy-check: uv (fast; needs a Python 3.11 on PATH or lets uv fetch one) or virtualenv (pyenv).
ENV_MANAGER ?= uv
DEPLOY_DIR ?= $(CURDIR)/.deploy-check

.PHONY: wheelhouse deploy-check

# The model's requirements (pixel_cnn/tracking/requirements.py via entrypoints/model_requirements.py, pinned from constraints.txt) as wheels, plus the
# build dependencies mlflow installs first (pip, setuptools, wheel): an environment can then be built offline
# with `--no-index --find-links $(WHEELHOUSE)` (uv: UV_OFFLINE=1 UV_NO_INDEX=1 UV_FIND_LINKS=$(WHEELHOUSE)).
wheelhouse: $(WHEELHOUSE_STAMP)
$(WHEELHOUSE_STAMP): $(STAMP) constraints.txt pixel_cnn/tracking/requirements.py pixel_cnn/tracking/served.py \
  entrypoints/model_requirements.py
	mkdir -p $(WHEELHOUSE)
	$(PY) -m entrypoints.model_requirements > $(WHEELHOUSE)/requirements.txt
	$(PY) -m pip download --quiet --retries 0 --only-binary=:all: --dest $(WHEELHOUSE) -c constraints.txt \
	  -r $(WHEELHOUSE)/requirements.txt "pip==$$($(PY) -c 'import pip; print(pip.__version__)')" setuptools wheel
	touch $@

# The whole suite includes the offline environment build (tests/test_deploy.py): it needs the wheels on disk.
test: $(WHEELHOUSE_STAMP)

# Build MODEL_URI's environment from its own files with ENV_MANAGER (offline from the wheelhouse), score the
# README's request bodies in it from DEPLOY_DIR, and compare with `mlflow models serve` as `make serve` runs it.
deploy-check: $(WHEELHOUSE_STAMP)
	$(PY) -m entrypoints.deploy_check --model-uri $(MODEL_URI) --env-manager $(ENV_MANAGER) \
	  --wheelhouse $(WHEELHOUSE) --workdir $(DEPLOY_DIR)
