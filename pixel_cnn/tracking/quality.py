"""What the quality benchmark run logs: per-preset means and spreads, the JSON and the table."""

from __future__ import annotations

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from pixel_cnn.tracking.runs import now_ms


def log_bench(run_id: str, bench: dict, table: str) -> None:
    """Log a quality benchmark: ``<preset>.<metric>_mean/_std`` metrics, ``bench/quality.json``
    and ``bench/quality.md`` (the table)."""
    client = MlflowClient()
    ts = now_ms()
    metrics = []
    for name, entry in bench["presets"].items():
        for metric in ("pr_auc", "roc_auc", "f1", "brier"):
            metrics += [Metric(f"{name}.{metric}_mean", entry[metric]["mean"], ts, 0),
                        Metric(f"{name}.{metric}_std", entry[metric]["std"], ts, 0)]
        metrics += [Metric(f"{name}.pr_auc_ci_low", entry["pr_auc_ci95"][0], ts, 0),
                    Metric(f"{name}.pr_auc_ci_high", entry["pr_auc_ci95"][1], ts, 0)]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag("fold_digest", bench["fold_digest"]),
                                                   RunTag("dataset_digest", bench["dataset_digest"])])
    client.log_dict(run_id, bench, "bench/quality.json")
    client.log_text(run_id, table + "\n", "bench/quality.md")
