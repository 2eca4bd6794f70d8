"""Helpers shared by the tests and the benchmarks: fresh MLflow stores, `mlflow run`, a real served model.

Importing this module changes nothing (no environment variables set, no
fixtures registered): the benchmarks import it too. ``conftest.py`` holds the
pytest fixtures and the test-session environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ops.serving import free_port, served_model  # noqa: F401 - re-exported for the tests

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def make(*args: str, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    """``make --no-print-directory ARGS`` in the checkout, output captured."""
    return subprocess.run(["make", "--no-print-directory", *args], cwd=PROJECT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def made_up(start: str, stop: str, where: str, root: Path, read_state, stopped: str, *args: str):
    """``make START WHERE ARGS`` (a stack of processes whose state lives in ``root``), yield ``(state, up)``;
    after, always, ``make STOP WHERE`` and ``root`` removed. Then checked: STOP said ``stopped`` (its
    "name (was running), ..." line) and no PID the state recorded is alive.

    ``read_state(root)``: the stack's state dict (with ``pids``), None once gone.
    """
    from ops.services import _alive

    try:
        up = make(start, where, *args)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        yield read_state(root), up
    finally:
        recorded = (read_state(root) or {}).get("pids", {})
        down = make(stop, where)
        shutil.rmtree(root, ignore_errors=True)
    assert down.returncode == 0 and stopped in down.stdout, down.stdout + down.stderr
    assert recorded and not any(_alive(pid) for pid in recorded.values())


#: The shared model's `mlflow run . -e cv` parameters: make cv's default vetter (fusion), short. lr and
#: dropout are the preset's own values, given as text on purpose (tests check they are logged as given).
SHARED_CV = {"epochs": 2, "n_folds": 3, "inner_folds": 2, "lr": "0.0010", "dropout": "0.30"}
#: The model URI every test of the shared model uses. Tests may register more versions in its store
#: (never moving this alias), so no test relies on a version number or on the latest version.
SHARED_URI = "models:/pixel-cnn@champion"


def store_env(root: Path) -> dict[str, str]:
    """Environment for a subprocess that uses a fresh sqlite store under ``root``."""
    env = dict(os.environ)
    env.update({
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    })
    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID: never carry one store's ids into another.
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(key, None)
    return env


def mlflow_run(entry: str, params: dict, env: dict, cwd) -> subprocess.CompletedProcess:
    """``mlflow run PROJECT -e entry --env-manager local -P k=v ...`` in ``cwd``; asserts exit 0."""
    cmd = [str(VENV_BIN / "mlflow"), "run", str(PROJECT), "-e", entry, "--env-manager", "local"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@contextlib.contextmanager
def in_store(root: Path):
    """Point this process at a fresh sqlite store under ``root`` (cwd too, for ./mlruns); restore on exit.

    For module fixtures that run a job in process (``jobs.cv(register=True)``) and keep its store.
    Yields the store's environment (:func:`store_env`).
    """
    import mlflow

    env = store_env(root)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    cwd = os.getcwd()
    os.chdir(root)
    try:
        yield env
    finally:
        os.chdir(cwd)
        mlflow.set_tracking_uri(None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
