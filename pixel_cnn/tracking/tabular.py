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


def log_variants(run_id: str, variants: dict[str, dict], prefix: str = "") -> None:
    """Log each variant's summary as metrics ``<prefix><variant>/<name>`` (issue 20: the input
    groups added in turn, imputed or not; the DR25 protocols)."""
    metrics = [Metric(f"{prefix}{variant}/{k}", float(v), now_ms(), 0)
               for variant, summary in variants.items() for k, v in summary.items()
               if isinstance(v, (int, float)) and v == v]
    client = MlflowClient()
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start:start + 900])


def log_table_input(run_id: str, table: pd.DataFrame, source: str, name: str, targets: str = "label",
                    context: str = "training") -> str:
    """``mlflow.log_input`` of a training table (named ``name``, digest
    :func:`pixel_cnn.branches.tabular.table_digest`, also set as the tag ``<name>_digest``). Returns the digest."""
    digest = koi_branch.table_digest(table)
    with warnings.catch_warnings(), mlflow.start_run(run_id=run_id, nested=bool(mlflow.active_run())):
        warnings.simplefilter("ignore")
        ds = mlflow.data.from_pandas(table, source=source or "unknown", targets=targets, name=name, digest=digest)
        mlflow.log_input(ds, context=context)
    MlflowClient().set_tag(run_id, f"{name}_digest", digest)
    return digest


def variants_table(variants: dict[str, dict], names=("pr_auc", "roc_auc", "recall_at_p99", "recall_at_p95"),
                   first: str = "variant") -> str:
    """Markdown table: one line per variant, all rows and complete rows, value (95 % interval)."""
    def cell(s, k):
        if k not in s:
            return "-"
        lo, hi = s.get(f"{k}_ci_low"), s.get(f"{k}_ci_high")
        return f"{s[k]:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None else f"{s[k]:.3f}"

    head = [first, "rows"] + [n.replace("pr_auc", "PR-AUC (AP)").replace("roc_auc", "ROC-AUC")
                              .replace("recall_at_p99", "recall@P0.99").replace("recall_at_p95", "recall@P0.95")
                              for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, s in variants.items():
        n_all = s.get("n_kois", s.get("n_tces"))
        lines.append("| " + " | ".join([variant, f"all {n_all}"] + [cell(s, k) for k in names]) + " |")
        if "complete_pr_auc" in s:
            lines.append("| " + " | ".join([variant, f"complete {s['n_complete']}"]
                                           + [cell(s, f"complete_{k}") for k in names]) + " |")
    return "\n".join(lines) + "\n"


def log_bench_table(run_id: str, table: str, path: str) -> None:
    """Log a Markdown table (:func:`variants_table`) as the text artifact ``path``."""
    MlflowClient().log_text(run_id, table, path)


def log_dr25_bench(run_id: str, summary: dict, protocol: dict, table: str) -> None:
    """Log the DR25 headline summary as unprefixed metrics, the tag ``benchmark``, ``bench/dr25.json``
    and ``bench/dr25.md``."""
    client = MlflowClient()
    client.log_batch(run_id, metrics=[Metric(k, float(v), now_ms(), 0) for k, v in summary.items()
                                      if isinstance(v, (int, float)) and v == v],
                     tags=[RunTag("benchmark", "tabular-dr25-exominer-folds")])
    client.log_dict(run_id, {"protocol": protocol, "summary": summary}, "bench/dr25.json")
    client.log_text(run_id, table, "bench/dr25.md")
