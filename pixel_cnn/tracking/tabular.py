"""What the tabular branch logs: the KOI training table as a dataset input, the KOI-wide benchmark."""

from __future__ import annotations

import warnings

import mlflow
import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from pixel_cnn.branches import tabular as koi_branch
from pixel_cnn.evaluation.metrics import pr_roc_figure
from pixel_cnn.tracking.runs import log_df, log_figure, now_ms


def log_koi_input(run_id: str, table: pd.DataFrame, source: str, context: str = "training") -> str:
    """``mlflow.log_input`` of the KOI training table (:func:`pixel_cnn.vetter.koi_branch.training_table`).

    The dataset is named ``koi-cumulative``, its digest is
    :func:`pixel_cnn.vetter.koi_branch.table_digest` (also set as the tag ``koi_table_digest``).
    Returns the digest.
    """
    digest = koi_branch.table_digest(table)
    with warnings.catch_warnings(), mlflow.start_run(run_id=run_id, nested=bool(mlflow.active_run())):
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column.*")
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
        ds = mlflow.data.from_pandas(table, source=source or "unknown", targets="label",
                                     name="koi-cumulative", digest=digest)
        mlflow.log_input(ds, context=context)
    MlflowClient().set_tag(run_id, "koi_table_digest", digest)
    return digest


def log_tabular_bench(run_id: str, oof: pd.DataFrame, summary: dict, protocol: dict) -> None:
    """Log the KOI-wide cv: every summary figure as a metric, ``oof_predictions.csv``,
    ``figures/pr_roc.png`` (pooled OOF and per fold) and ``bench/tabular.json``."""
    client = MlflowClient()
    ts = now_ms()
    client.log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in summary.items()],
                     tags=[RunTag("benchmark", "tabular-koi-wide")])
    log_df(run_id, oof, "oof_predictions.csv")
    curves = [("pooled OOF", oof["label"].to_numpy(), oof["probability"].to_numpy())]
    curves += [(f"fold {k}", g["label"].to_numpy(), g["probability"].to_numpy()) for k, g in oof.groupby("fold")]
    log_figure(run_id, pr_roc_figure(curves, "tabular branch: every labelled KOI, grouped by star"),
               "figures/pr_roc.png")
    client.log_dict(run_id, {"protocol": protocol, "summary": summary}, "bench/tabular.json")
