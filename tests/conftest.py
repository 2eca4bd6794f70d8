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

from tests.support import store_env


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
    for key, value in env.items():
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield root
    mlflow.set_tracking_uri(None)
