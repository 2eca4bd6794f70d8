"""MLflow logging of ``prep source=tpf`` (kept beside :mod:`pixel_cnn.tracking`, MLflow calls only)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from pixel_cnn.tracking import _now


def log_tpf_prep(run_id: str, report: pd.DataFrame, summary: dict[str, int], out_dir: Path,
                 layout: str) -> None:
    """Log the TPF step of a prep run: counts (targets ok/failed, cadences dropped), the report.

    ``report`` is ``prep_report.csv`` (one row per target, reason for each
    failure); logged as the artifact ``tpf/prep_report.csv``.
    """
    client = MlflowClient()
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), _now(), 0) for k, v in summary.items()],
        tags=[RunTag("prep_source", "tpf"), RunTag("ephemeris_layout", layout)],
    )
    client.log_artifact(run_id, str(Path(out_dir) / "prep_report.csv"), "tpf")
