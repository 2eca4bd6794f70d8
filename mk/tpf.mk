# prep from raw Target Pixel Files (docs/tpf.md).
#   make prep-tpf TPF_DIR=tpfs EPHEMERIS=koi.csv [TPF_OUT=data/tpf] [TPF_LABELS=koi] [N_JOBS=2]
#   make prep-tpf-download EPHEMERIS=koi.csv TARGETS=757450,892772 [TPF_CACHE=data/tpf-cache]   (network)
#   make cv-tpf      cv on the dataset prep-tpf made (TPF_OUT/dataset)
TPF_DIR ?=
EPHEMERIS ?=
TPF_OUT ?= data/tpf
TPF_LABELS ?= koi
TPF_CACHE ?= data/tpf-cache
TARGETS ?=
N_JOBS ?= 2
# A Dask scheduler (`make dask` prints it): SCHEDULER=tcp://127.0.0.1:8786 runs the targets there ("" = joblib).
SCHEDULER ?=
# flat: every TPF under TPF_DIR (a folder or s3://bucket/prefix); mast: TPF_DIR is MAST's bucket root.
TPF_LAYOUT ?= flat

.PHONY: prep-tpf prep-tpf-download cv-tpf test-tpf

prep-tpf: $(STAMP)
	@test -n "$(TPF_DIR)" -a -n "$(EPHEMERIS)" || { echo "set TPF_DIR=... and EPHEMERIS=..."; exit 2; }
	$(MLFLOW_RUN) -e prep -P source=tpf -P tpf_dir=$(TPF_DIR) -P ephemeris=$(EPHEMERIS) \
	  -P out_dir=$(TPF_OUT) -P labels=$(TPF_LABELS) -P n_jobs=$(N_JOBS) -P scheduler=$(SCHEDULER) \
	  -P tpf_layout=$(TPF_LAYOUT) $(if $(TARGETS),-P targets=$(TARGETS)) $(PREP_ARGS)

prep-tpf-download: $(STAMP)
	@test -n "$(EPHEMERIS)" || { echo "set EPHEMERIS=... (and TARGETS=id,id,...)"; exit 2; }
	$(MLFLOW_RUN) -e prep -P source=tpf -P download=true -P cache_dir=$(TPF_CACHE) \
	  -P ephemeris=$(EPHEMERIS) -P targets=$(TARGETS) -P out_dir=$(TPF_OUT) \
	  -P labels=$(TPF_LABELS) -P n_jobs=$(N_JOBS) $(PREP_ARGS)

cv-tpf: $(STAMP)
	$(MLFLOW_RUN) -e cv -P dataset=$(TPF_OUT)/dataset $(CV_ARGS)

test-tpf: $(STAMP)
	$(PY) -m pytest tests/test_tpf.py tests/test_phasefold.py
