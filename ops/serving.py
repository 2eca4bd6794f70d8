"""A real ``mlflow models serve`` on a free loopback port, stopped by PID: for the tests and the benchmarks."""

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

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_model(model_uri: str, env: dict, cwd: Path, timeout: float = 180.0, workers: int = 1,
                 mlflow_cli: Path | None = None, log_dir: Path | None = None):
    """Run a real ``mlflow models serve`` (``--workers workers``) on a free loopback port; yields its base URL.

    ``mlflow_cli``: the ``mlflow`` command to run (default this interpreter's, as ``make serve``; a
    model's own environment's ``bin/mlflow`` serves it from that environment). Stopped by PID (its
    whole process group) on exit. Its output goes to ``serve-<port>.log`` in ``log_dir`` (default ``cwd``).
    """
    port = free_port()
    log_path = Path(log_dir or cwd) / f"serve-{port}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(mlflow_cli or VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited {proc.returncode}: {log_path.read_text()[-2000:]}")
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
