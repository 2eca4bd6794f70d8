"""Shared fixtures: the real dataset, throwaway MLflow stores, real served models.

Tests never touch the project's own ``mlflow.db``/``mlruns``: every store is a
fresh sqlite file under pytest's tmp dir, with artifacts beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

from tests.support import SHARED_CV, SHARED_URI, store_env


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real shared dataset (``$PIXEL_CNN_DATA`` or ``../shared/data/kepler-pixdiff``)."""
    from pixel_cnn.io.dataset import resolve_data_dir

    return resolve_data_dir()


@pytest.fixture(scope="session")
def real_dataset(data_dir):
    """The benchmark dataset prepared from the real files (no MLflow)."""
    from pixel_cnn.io.dataset import prepare_dataset

    return prepare_dataset(data_dir, "seed")


@pytest.fixture(scope="session")
def prepared_dir(real_dataset, tmp_path_factory) -> Path:
    """A prep output folder (``write_dataset``) of the real benchmark dataset."""
    from pixel_cnn.io.dataset import write_dataset

    return write_dataset(real_dataset, tmp_path_factory.mktemp("prep") / "processed")


@pytest.fixture
def tracking_store(tmp_path, monkeypatch) -> Path:
    """A fresh sqlite tracking store for this test; cwd moved to it so ./mlruns lands there too."""
    import mlflow

    root = tmp_path / "store"
    root.mkdir()
    monkeypatch.chdir(root)
    env = store_env(root)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    # an experiment chosen by an earlier test in this process (mlflow.set_experiment) must not carry over
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    for key, value in env.items():
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield root
    mlflow.set_tracking_uri(None)


def _session_root(tmp_path_factory) -> Path:
    """The folder every pytest-xdist worker of this run shares (pytest's base temp's parent under
    xdist, the base temp itself without it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _build_shared_model(root: Path, env: dict) -> dict:
    """`mlflow run . -e prep`, then `-e cv -P register=true`, in the store under ``root``; returns what
    the other workers need to rebuild the record (the two processes' return codes and output)."""
    from tests.support import mlflow_run

    procs = {"prep": mlflow_run("prep", {"out_dir": root / "processed"}, env, root),
             "cv": mlflow_run("cv", {"dataset": root / "processed", "register": "true", **SHARED_CV}, env, root)}
    return {name: {"args": [str(a) for a in p.args], "returncode": p.returncode, "stdout": p.stdout,
                   "stderr": p.stderr} for name, p in procs.items()}


@pytest.fixture(scope="session")
def shared_model(tmp_path_factory) -> dict:
    """ONE trained and registered model for the whole session, made the real way (what `make cv` does).

    `mlflow run . -e prep` then `mlflow run . -e cv -P register=true` with the cv's default vetter
    (fusion) kept short (:data:`SHARED_CV`), in a fresh sqlite store under pytest's tmp dir. Under
    pytest-xdist the first worker that needs it builds it under a file lock and the others read it.
    Keys: ``root`` (store folder, the runs' cwd), ``env`` (its environment, :func:`store_env`),
    ``prep``/``cv`` (the two ``CompletedProcess``), ``dataset`` (prep's output folder), ``prep_run``/
    ``cv_run`` (MLflow ``Run``), ``version`` (the champion's version, str), ``uri`` (:data:`SHARED_URI`).
    """
    import json
    import subprocess

    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    root = _session_root(tmp_path_factory) / "shared-model"
    record = root / "processes.json"
    with FileLock(str(root) + ".lock"):
        root.mkdir(exist_ok=True)
        env = store_env(root)
        if not record.exists():
            record.write_text(json.dumps(_build_shared_model(root, env)))
    procs = {name: subprocess.CompletedProcess(**p) for name, p in json.loads(record.read_text()).items()}
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiments = [e.experiment_id for e in client.search_experiments()]

    def entry_run(entry):
        runs = client.search_runs(experiments, f"tags.`mlflow.project.entryPoint` = '{entry}'")
        assert len(runs) == 1, (entry, len(runs))
        return runs[0]

    return {"root": root, "env": env, **procs, "dataset": root / "processed",
            "prep_run": entry_run("prep"), "cv_run": entry_run("cv"), "uri": SHARED_URI,
            "version": client.get_model_version_by_alias("pixel-cnn", "champion").version}


@pytest.fixture(scope="session")
def shared_pyfunc(shared_model):
    """The shared model loaded in this process (``mlflow.pyfunc.load_model``)."""
    import mlflow

    mlflow.set_tracking_uri(shared_model["env"]["MLFLOW_TRACKING_URI"])
    try:
        return mlflow.pyfunc.load_model(shared_model["uri"])
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def shared_server(shared_model) -> str:
    """ONE real `mlflow models serve` of the shared model for the session (loopback, stopped by PID);
    its base URL. Serves the champion version resolved at start, which no test moves."""
    from tests.support import served_model

    with served_model(shared_model["uri"], shared_model["env"], shared_model["root"]) as url:
        yield url


#: The longest test files (measured: `--durations`, one file per xdist worker with `--dist loadfile`),
#: started first so the workers finish together instead of one running a long file alone at the end.
#: The two services modules come first: each starts its own stack, on a worker of its own. `make test` passes
#: `--no-loadscope-reorder`; without it xdist re-sorts the files by their number of tests and ignores this.
LONGEST_FIRST = ("test_services.py", "test_services_failures.py", "test_store_init.py", "test_tpf.py", "test_scale.py", "test_tune.py",
                 "test_hardening_serving.py", "test_fusion.py", "test_deploy.py")


def pytest_collection_modifyitems(config, items):
    """Order the collected tests: the files of :data:`LONGEST_FIRST` first, in that order, then the rest
    as collected (a stable sort: the order inside a file never changes)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
