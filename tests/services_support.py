"""The services stack of the tests (PostgreSQL + SeaweedFS + mlflow server), started by `make server`.

Each module that needs a stack starts its own (`running_stack` in a module fixture): the two
services modules then run on two pytest-xdist workers at once, each stack on its own free ports.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ops import services
from tests.support import PROJECT, VENV_BIN, made_up


@contextlib.contextmanager
def running_stack():
    """`make server` on free loopback ports, data in a fresh folder under /tmp; `make server-stop` after.
    Yields the stack's state (:func:`ops.services.read_state`, + ``make_stdout``).

    /tmp, not pytest's tmp dir: PostgreSQL runs unprivileged and must reach its data directory.
    """
    root = Path(tempfile.mkdtemp(prefix="pixel-cnn-stack-"))
    os.chmod(root, 0o755)
    env = pytest.MonkeyPatch()
    try:
        with made_up("server", "server-stop", f"SERVICES_DIR={root}", root, services.read_state,
                     "mlflow (was running), seaweedfs (was running), postgres (was running)",
                     "PG_PORT=0", "S3_PORT=0", "MLFLOW_PORT=0", "WEED_PORTS=free", "S3_BUCKET=pixel-cnn-test",
                     "SERVER_WORKERS=1") as (state, up):
            state["make_stdout"] = up.stdout
            # This process's MlflowClient acts as the stack's owner (MLflow reads the credentials per request).
            env.setenv("MLFLOW_TRACKING_USERNAME", state["tracking_username"])
            env.setenv("MLFLOW_TRACKING_PASSWORD", state["tracking_password"])
            yield state
    finally:
        env.undo()


def client_env(state: dict, cwd: Path, s3: bool = False) -> dict:
    """Environment of a client process: only the tracking URI (proxied artifacts), optionally S3 access."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "AWS_")) and k != "OPTUNA_STORAGE"}
    env.update({
        "MLFLOW_TRACKING_URI": state["tracking_uri"], "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # No credentials from elsewhere on this machine, no instance-metadata probing.
        "AWS_SHARED_CREDENTIALS_FILE": str(cwd / "no-aws-credentials"),
        "AWS_CONFIG_FILE": str(cwd / "no-aws-config"), "AWS_EC2_METADATA_DISABLED": "true",
    })
    if state.get("auth") == "basic":  # the writer: the stack's admin, as `. .services/env` sets it
        env.update({"MLFLOW_TRACKING_USERNAME": state["tracking_username"],
                    "MLFLOW_TRACKING_PASSWORD": state["tracking_password"]})
    if s3:
        env.update({k: v for k, v in services.client_env(state).items() if k.startswith(("AWS_", "MLFLOW_S3"))})
    return env


def bucket_keys(state: dict, prefix: str = "") -> list[str]:
    s3 = services.s3_client(state["s3_endpoint"], state["s3_access_key"], state["s3_secret_key"])
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=state["bucket"], Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def tracking_client(state):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=state["tracking_uri"])


def run_cv_module(env: dict, cwd: Path, dataset: Path, timeout: float = 300, **extra) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "entrypoints.cv", "--dataset", str(dataset), "--n-folds", "2", "--epochs", "2"]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.run(args, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=timeout)
