"""Shared fixtures: the real dataset, throwaway MLflow stores, real served models.

Tests never touch the project's own ``mlflow.db``/``mlruns``: every store is a
fresh sqlite file under pytest's tmp dir, with artifacts beside it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


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
    for key, value in env.items():
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield root
    mlflow.set_tracking_uri(None)


def mlflow_run(entry: str, params: dict, env: dict, cwd) -> subprocess.CompletedProcess:
    """``mlflow run PROJECT -e entry --env-manager local -P k=v ...`` in ``cwd``; asserts exit 0."""
    cmd = [str(VENV_BIN / "mlflow"), "run", str(PROJECT), "-e", entry, "--env-manager", "local"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_model(model_uri: str, env: dict, cwd: Path, timeout: float = 180.0):
    """Run a real ``mlflow models serve`` on a free loopback port; yields its base URL.

    Stopped by PID (its whole process group) on exit.
    """
    port = free_port()
    log = open(cwd / f"serve-{port}.log", "w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited {proc.returncode}: {(cwd / log.name).read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow models serve did not answer /ping in time")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
