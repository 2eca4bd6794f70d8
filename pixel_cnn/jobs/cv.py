"""The cv job: cross-validate a vetter on a prepared dataset, log it, register its model."""

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



def cv(
    dataset: str | tuple[Dataset, dict],
    preset_name: str,
    overrides: dict,
    n_folds: int = 5,
    seed: int = 42,
    repeats: int = 1,
    inner_folds: int = 3,
    register: bool = False,
    alias: str = "champion",
    cli_params: dict | None = None,
    koi_table: str | None = None,
    run_name: str | None = None,
    mistakes: bool = True,
) -> tuple[CVResult, dict]:
    """Cross-validate a preset on a prepared dataset, tracked in MLflow.

    One parent run (this invocation) with a nested child run per fold; the
    repeat-0 fold ensemble logged as ``model`` and, with ``register``, registered
    as ``pixel-cnn`` with ``alias``. A fusion preset (``fusion``) also trains the tabular
    branch on the KOI table ``koi_table`` (default: :func:`koi_table_of` the dataset) and
    logs that table with ``mlflow.log_input``; its model is the fusion model (pixel members,
    tabular branch trained on every labelled KOI, combiner). Returns ``(result, info)`` with
    ``run_id``, ``model_uri``, ``version`` and ``wall_s``. ``dataset`` is a
    prep output folder or an artifact URI such as ``runs:/<prep_run_id>/dataset``
    (:func:`pixel_cnn.tracking.runs.open_dataset`), or a dataset already opened
    (``(Dataset, info)``, as tune's ``register_best`` passes it).

    The parent run is named ``run_name``, else after what it is
    (:func:`pixel_cnn.evaluation.cv.cv_run_name`, ``cv phase2 seed=42 x5``; under
    ``mlflow run --run-name`` the user's name is kept), and described by its
    headline figures (pooled OOF PR-AUC and ROC-AUC with their 95 % bootstrap
    intervals, threshold: :func:`pixel_cnn.evaluation.cv.cv_description`). With
    ``mistakes`` it logs the vetting sheets of the 4 planets scored lowest and the 4
    false positives scored highest out of fold (repeat 0) under ``figures/mistakes/``
    (:func:`pixel_cnn.drawing.sheet.mistake_sheet_specs`, drawn in worker processes
    while the model is logged: :class:`pixel_cnn.scoring.BackgroundSheets`).

    Raises
    ------
    DataError
        ``dataset`` is not a prep output.
    StoreError
        The tracking server or artifact store is unusable, or the dataset URI
        cannot be downloaded (before training).
    CVError
        Too few targets for ``n_folds``, or a fold would lack a class (before training).
    ValueError
        Unknown preset or bad override.
    """
    start = time.perf_counter()
    preset = get_preset(preset_name, **overrides)
    data, info = runs.open_dataset(dataset) if isinstance(dataset, str) else dataset
    # Refuse before any run is created: too few targets, or a fold (or inner split) lacking a class.
    plan_splits(data.kepids, data.labels, n_folds, seed, repeats, inner_folds)
    table = koi_path = None
    if is_fusion(preset):
        if inner_folds < 2:
            raise CVError(f"inner_folds={inner_folds}: preset {preset.name!r} fits its combiner on inner "
                          "out-of-fold predictions; use inner_folds >= 2")
        koi_path = Path(koi_table) if koi_table else koi_table_of(info)
        table = KOITable(load_koi_table(koi_path))
    given = {k: v for k, v in overrides.items() if v is not None}
    name = run_name or cv_run_name(preset.name, seed, n_folds, repeats, given, inner_folds)
    with runs.job_run(runs.EXPERIMENT_CV, name, cli_params) as run_id:
        tracking_cv.log_cv_inputs(run_id, data, info, preset)
        # A real stack (the smallest) as input example: saved with every model.
        example = min(data.stack_list(), key=lambda s: s.size)[None].astype(np.float32)
        callbacks = tracking_cv.MlflowCVCallbacks(run_id, preset)
        served_tabular = None
        if table is None:
            result = run_cv(data, preset, n_folds=n_folds, seed=seed, repeats=repeats, inner_folds=inner_folds,
                            callbacks=callbacks, attributions=True)
        else:
            tracking_tabular.log_koi_input(run_id, table.table, str(koi_path))
            result = run_fusion_cv(data, preset, table, n_folds=n_folds, seed=seed, repeats=repeats,
                                   inner_folds=inner_folds, callbacks=callbacks, attributions=True)
            served_tabular = table.fit_excluding(np.array([], dtype=np.int64), seed)[0]  # every labelled KOI
        sheets = None
        if mistakes:  # drawn in worker processes while the summary and the model are logged
            worst = worst_oof(result.oof)
            sheets = BackgroundSheets(mistake_sheet_specs(worst, result.folds, data.stacks,
                                                          preset.in_channels - preset.n_scalars))
        try:
            tracking_cv.log_cv_summary(run_id, result)
            roc = oof_interval(result.oof, seed, roc_auc_score)
            tracking_cv.log_cv_description(run_id, cv_description(result.summary, roc, len(data.labels), repeats),
                                           roc)
            model_info, version = tracking_cv.log_ensemble(
                run_id, result, register, alias, input_example=example, dataset_digest=data.digest,
                tabular_model=served_tabular)
            if sheets is not None:
                tracking_cv.log_mistakes(run_id, sheets.result(), worst)
        finally:
            if sheets is not None:
                sheets.close()
    return result, {"run_id": run_id, "model_uri": model_info.model_uri, "version": version,
                    "wall_s": time.perf_counter() - start}


def koi_table_of(info: dict) -> Path:
    """The KOI table beside the stacks a prepared dataset was made from (``info["source"]`` is
    the ``stacks/`` folder prep read), else the data folder's (:func:`resolve_data_dir`).

    Raises
    ------
    DataError
        Neither exists.
    """
    source = info.get("source") or ""
    if source:
        candidate = Path(source).parent / "koi_cumulative.csv"
        if candidate.is_file():
            return candidate
    path = resolve_data_dir(None) / "koi_cumulative.csv"
    if not path.is_file():
        raise DataError(f"{path}: no KOI table for the tabular branch")
    return path
