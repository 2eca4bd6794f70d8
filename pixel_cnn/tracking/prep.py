"""What a prep run logs: the dataset as an input with its digest, counts, skipped files, TPF report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.tracking.runs import log_dataset_input, now_ms


def log_prep(run_id: str, dataset: Dataset, out_dir: Path, data_dir: Path, labels: str) -> None:
    """Log a prep run: dataset input with digest, counts, the skipped list and the files."""
    client = MlflowClient()
    counts = dataset.counts()
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now_ms(), 0) for k, v in counts.items()],
        tags=[RunTag("dataset_digest", dataset.digest), RunTag("labels", labels)],
    )
    log_dataset_input(run_id, dataset, str(data_dir / "stacks"), f"kepler-pixdiff-{labels}", "prep")
    client.log_artifacts(run_id, str(out_dir), "dataset")


def log_tpf_prep(run_id: str, report: pd.DataFrame, summary: dict[str, int], out_dir: Path,
                 layout: str, engine: dict | None = None) -> None:
    """Log the TPF step of a prep run: counts (targets ok/failed, cadences dropped), the report.

    ``report`` is ``prep_report.csv`` (one row per target, reason for each
    failure); logged as the artifact ``tpf/prep_report.csv``. ``engine``
    (:meth:`pixel_cnn.io.engine.Engine.describe`): the tags ``engine`` (joblib /
    dask), ``dask_scheduler``, ``dask_dashboard`` and the metric ``n_workers``.
    Called from the driver only: workers never log.
    """
    client = MlflowClient()
    tags = [RunTag("prep_source", "tpf"), RunTag("ephemeris_layout", layout)]
    metrics = [Metric(k, float(v), now_ms(), 0) for k, v in summary.items()]
    if engine:
        tags.append(RunTag("engine", engine["engine"]))
        tags += [RunTag(f"dask_{k}", engine[k]) for k in ("scheduler", "dashboard") if engine.get(k)]
        metrics.append(Metric("n_workers", float(engine["n_workers"]), now_ms(), 0))
    client.log_batch(run_id, metrics=metrics, tags=tags)
    client.log_artifact(run_id, str(Path(out_dir) / "prep_report.csv"), "tpf")
