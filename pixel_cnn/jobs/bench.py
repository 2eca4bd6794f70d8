"""The quality benchmarks: presets side by side on the same folds; the KOI-wide tabular benchmark."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pixel_cnn.vetter import tabular
from pixel_cnn.branches import tabular as koi_branch
from pixel_cnn.search import tuning
from pixel_cnn.evaluation.cv import CVError, CVResult, cv_description, cv_run_name, oof_interval, plan_splits, run_cv, worst_oof
from pixel_cnn.evaluation.fusion import KOITable, run_fusion_cv
from pixel_cnn.vetter.networks import get_preset, is_fusion
from pixel_cnn.evaluation.quality import bench_quality as run_bench, format_table
from pixel_cnn.drawing.sheet import mistake_sheet_specs
from pixel_cnn.io import tpf
from pixel_cnn.io.dataset import (KOI_REQUIRED_COLUMNS, Dataset, DataError, load_koi_table, prepare_dataset,
                                  resolve_data_dir, write_dataset)
from pixel_cnn.scoring import BackgroundSheets
from pixel_cnn.tracking import cv as tracking_cv
from pixel_cnn.tracking import prep as tracking_prep
from pixel_cnn.tracking import quality as tracking_quality
from pixel_cnn.tracking import runs
from pixel_cnn.tracking import stores
from pixel_cnn.tracking import tabular as tracking_tabular
from pixel_cnn.tracking import tune as tracking_tune
from pixel_cnn.jobs.cv import koi_table_of



def bench_quality(dataset: str, presets: tuple[str, ...], n_folds: int = 5, seed: int = 42,
                  repeats: int = 5, inner_folds: int = 3, out: str = "bench/results/quality.json",
                  cli_params: dict | None = None) -> tuple[dict, str]:
    """Run :func:`pixel_cnn.evaluation.quality.bench_quality`, write the JSON to ``out``, log one MLflow run.

    Returns ``(bench dict with "run_id", Markdown table)``. Raises as
    :func:`pixel_cnn.evaluation.quality.bench_quality`, and as
    :func:`pixel_cnn.tracking.runs.open_dataset` when ``dataset`` (a folder or a
    ``runs:/`` URI) is not a prep output. The JSON is written atomically
    (temporary file, then rename).
    """
    data, info = runs.open_dataset(dataset)
    koi = None
    if "tabular" in presets or any(p != "tabular" and is_fusion(get_preset(p)) for p in presets):
        koi = load_koi_table(koi_table_of(info))
    with runs.job_run(runs.EXPERIMENT_BENCH, "bench-quality", cli_params) as run_id:
        bench = run_bench(data, presets, n_folds=n_folds, seed=seed, repeats=repeats,
                          inner_folds=inner_folds, progress=lambda m: print(f"bench_quality: {m}", flush=True),
                          koi=koi)
        bench["run_id"] = run_id
        table = format_table(bench)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(bench, indent=2) + "\n")
        os.replace(tmp, path)
        tracking_quality.log_bench(run_id, bench, table)
    return bench, table


def bench_tabular(data_dir: str | None = None, n_folds: int = 5, seed: int = 42, n_boot: int = 1000,
                  out: str = "bench/results/tabular.json", cli_params: dict | None = None) -> dict:
    """The KOI-wide benchmark of the tabular branch: grouped, stratified k-fold cv over every
    labelled KOI of the KOI table (:func:`pixel_cnn.vetter.koi_branch.koi_cv`), one MLflow run.

    Logs the KOI training table (``mlflow.log_input``, digest), the pooled-OOF figures with their
    bootstrap intervals, fold means, ``oof_predictions.csv`` and the PR/ROC figure; writes the
    summary as JSON to ``out`` (atomically). Returns the summary with ``run_id`` and ``wall_s``.

    Raises
    ------
    DataError
        The data folder or its KOI table is unusable.
    """
    start = time.perf_counter()
    root = resolve_data_dir(data_dir)
    koi = load_koi_table(root / "koi_cumulative.csv")
    protocol = {"n_folds": n_folds, "seed": seed, "n_boot": n_boot,
                "split": "StratifiedGroupKFold(shuffle=True, random_state=seed), groups = kepid",
                "model": "HistGradientBoostingClassifier(early_stopping=False, random_state=seed + fold)",
                "labels": "koi_disposition: CONFIRMED 1, FALSE POSITIVE 0, CANDIDATE left out",
                "features": list(tabular.FEATURE_NAMES),
                "intervals": "95% percentile bootstrap over stars (kepid), all KOIs of a drawn star kept",
                "pr_auc": "average precision (sklearn average_precision_score)"}
    with runs.job_run(runs.EXPERIMENT_BENCH, "bench-tabular", cli_params) as run_id:
        digest = tracking_tabular.log_koi_input(run_id, koi_branch.training_table(koi), str(root / "koi_cumulative.csv"))
        oof, summary = koi_branch.koi_cv(koi, n_folds=n_folds, seed=seed, n_boot=n_boot)
        summary["wall_s"] = round(time.perf_counter() - start, 1)
        tracking_tabular.log_tabular_bench(run_id, oof, summary, protocol)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"protocol": protocol, "koi_table_digest": digest, "run_id": run_id,
                                   "summary": summary}, indent=2) + "\n")
        os.replace(tmp, path)
    return {**summary, "run_id": run_id, "koi_table_digest": digest}
