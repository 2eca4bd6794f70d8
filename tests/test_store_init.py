"""A fresh embedded tracking store, opened by several jobs at once (tracking/stores.py, init_store).

Regression: with no ``mlflow.db`` yet, three cv jobs started at the same moment on the same
``sqlite:///…/mlflow.db`` failed two of three with ``sqlite3.OperationalError: table
latest_metrics already exists`` (MLflow's schema creation races). The store is now created
once, under a file lock, before any run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pixel_cnn.tracking.stores import init_store, sqlite_path
from tests.support import PROJECT, VENV_BIN, store_env


def test_sqlite_path_of_uris(tmp_path):
    assert sqlite_path(f"sqlite:///{tmp_path}/a/mlflow.db") == f"{tmp_path}/a/mlflow.db"
    assert sqlite_path("sqlite:///relative.db") == str(Path.cwd() / "relative.db")
    for other in ("http://127.0.0.1:5000", "postgresql://u@h/db", "file:///tmp/mlruns", "sqlite:///:memory:", ""):
        assert sqlite_path(other) is None


def test_init_store_creates_once_and_then_is_a_no_op(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    assert init_store(uri) is True
    assert init_store(uri) is False
    names = [e.name for e in MlflowClient(uri).search_experiments()]
    assert names == ["Default"]


def _start(cmds: list[list[str]], env: dict, cwd) -> list[subprocess.CompletedProcess]:
    """Start every command at once (released together), wait for all; returns their results."""
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    out = []
    for cmd, p in zip(cmds, procs):
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr))
    return out


def _finished_cv_runs(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pixel-cnn-cv")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


JOB = """
import sys
from pixel_cnn.tracking.runs import job_run
with job_run("store-init-test", "job") as run_id:
    print(run_id)
"""


def test_three_jobs_at_once_on_a_fresh_store_all_finish(tmp_path):
    """Every job (job_run) creates a fresh store under the lock before its run."""
    env = store_env(tmp_path)
    assert not (tmp_path / "mlflow.db").exists()
    results = _start([[sys.executable, "-c", JOB]] * 3, env, tmp_path)
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("store-init-test").experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(r.stdout.split()[-1] for r in results)
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_three_cv_runs_at_once_on_a_fresh_store_finish_with_the_same_metrics(tmp_path, prepared_dir):
    """What `make cv` does, three times at once (seeds launched in parallel on a new machine):
    `make tracking-check` (creates the store under the lock), then `mlflow run . -e cv`."""
    env = {**store_env(tmp_path), "OMP_NUM_THREADS": "1"}
    assert not (tmp_path / "mlflow.db").exists()
    run = (f"{sys.executable} -m entrypoints.tracking_check && {VENV_BIN / 'mlflow'} run {PROJECT} -e cv "
           f"--env-manager local --experiment-name pixel-cnn-cv -P dataset={prepared_dir} -P preset=seed "
           "-P n_folds=2 -P epochs=1 -P inner_folds=0 -P seed=7")
    results = _start([["bash", "-c", run]] * 3, env, PROJECT)
    for r in results:
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    parents = _finished_cv_runs(env["MLFLOW_TRACKING_URI"])
    assert len(parents) == 3
    scores = {(r.data.metrics["pr_auc_oof"], r.data.metrics["roc_auc_oof"]) for r in parents}
    assert len(scores) == 1  # same seed, same data: the same metrics in every process
