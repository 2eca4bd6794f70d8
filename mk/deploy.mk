# Deploy the registered model elsewhere (docs/deploy.md): the wheels of its environment on disk, and a check
# that an environment built from the model's own files answers like `make serve`.
WHEELHOUSE ?= .wheelhouse
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.complete
# uv's cache of the wheelhouse (wheels unpacked once): an environment built from it is hard links, seconds.
WHEELHOUSE_UV_CACHE := $(WHEELHOUSE)/uv-cache
# mlflow's env manager for deploy-check: uv (fast; needs a Python 3.11 on PATH or lets uv fetch one) or virtualenv (pyenv).
ENV_MANAGER ?= uv
DEPLOY_DIR ?= $(CURDIR)/.deploy-check
# uv and pip, offline: wheels from the wheelhouse only (also what tests/test_deploy.py builds with).
OFFLINE_UV := UV_OFFLINE=1 UV_NO_INDEX=1 UV_FIND_LINKS=$(abspath $(WHEELHOUSE)) UV_PYTHON_DOWNLOADS=never \
  UV_CACHE_DIR=$(abspath $(WHEELHOUSE_UV_CACHE))

.PHONY: wheelhouse deploy-check

# The model's requirements (pixel_cnn/tracking/requirements.py, pinned from constraints.txt), rewritten only
# when they change, so the wheels below are fetched again only for a new requirement.
$(WHEELHOUSE)/requirements.txt: $(STAMP) constraints.txt pixel_cnn/tracking/requirements.py pixel_cnn/tracking/served.py \
  $(wildcard pixel_cnn/vetter/*.py) entrypoints/model_requirements.py
	mkdir -p $(WHEELHOUSE)
	$(PY) -m entrypoints.model_requirements > $@.tmp
	if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

# Those requirements as wheels, plus what MLflow installs first (pip, setuptools, wheel): an environment
# can then be built with no network (`--no-index --find-links`; uv: $(OFFLINE_UV)). pip keeps wheels already
# in the folder. Then uv's cache is filled once from the wheels, by a throwaway environment built offline.
wheelhouse: $(WHEELHOUSE_STAMP)
$(WHEELHOUSE_STAMP): $(WHEELHOUSE)/requirements.txt
	$(PY) -m pip download --quiet --retries 0 --only-binary=:all: --dest $(WHEELHOUSE) -c constraints.txt \
	  -r $(WHEELHOUSE)/requirements.txt "pip==$$($(PY) -c 'import pip; print(pip.__version__)')" setuptools wheel
	rm -rf $(WHEELHOUSE)/.warm
	$(OFFLINE_UV) $(VENV)/bin/uv venv --quiet --python $(PY) $(WHEELHOUSE)/.warm
	$(OFFLINE_UV) $(VENV)/bin/uv pip install --quiet --python $(WHEELHOUSE)/.warm/bin/python \
	  -r $(WHEELHOUSE)/requirements.txt pip setuptools wheel
	rm -rf $(WHEELHOUSE)/.warm
	touch $@

# The whole suite includes the offline environment build (tests/test_deploy.py): it needs the wheels on disk.
test: $(WHEELHOUSE_STAMP)

# Build MODEL_URI's environment from its own files with ENV_MANAGER (offline from the wheelhouse), score the
# README's request bodies in it from DEPLOY_DIR, and compare with `mlflow models serve` as `make serve` runs it.
deploy-check: $(WHEELHOUSE_STAMP)
	$(PY) -m entrypoints.deploy_check --model-uri $(MODEL_URI) --env-manager $(ENV_MANAGER) \
	  --wheelhouse $(WHEELHOUSE) --workdir $(DEPLOY_DIR)
