"""Helpers shared by the tests and the benchmarks: fresh MLflow stores, `mlflow run`, a real served model.

Importing this module changes nothing (no environment variables set, no
fixtures registered): the benchmarks import it too. ``conftest.py`` holds the
pytest fixtures and the test-session environment.
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

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_model(model_uri: str, env: dict, cwd: Path, timeout: float = 180.0, workers: int = 1):
    """Run a real ``mlflow models serve`` (``--workers workers``) on a free loopback port; yields its base URL.

    Stopped by PID (its whole process group) on exit.
    """
    port = free_port()
    log = open(cwd / f"serve-{port}.log", "w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
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
