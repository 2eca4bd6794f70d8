"""The cv job: cross-validate a vetter on a prepared dataset, log it, register its model."""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import roc_auc_score

from pixel_cnn.branches.vetters import CV_DEFAULT, get_vetter
from pixel_cnn.drawing.sheet import mistake_sheet_specs
from pixel_cnn.drawing.workers import BackgroundSheets
from pixel_cnn.evaluation.cv import (
    CVError,
    INNER_FOLDS,
    CVResult,
    cv_description,
    cv_run_name,
    oof_interval,
    plan_splits,
    run_cv,
    worst_oof,
)
from pixel_cnn.io.dataset import Dataset, koi_table_path
from pixel_cnn.io.koi import load_koi_with_dv
from pixel_cnn.tracking import cv as tracking_cv
from pixel_cnn.tracking import runs
from pixel_cnn.tracking import tabular as tracking_tabular


def cv(
    dataset: str | tuple[Dataset, dict],
    preset_name: str,
    overrides: dict,
    n_folds: int = 5,
    seed: int = 42,
    repeats: int = 1,
    inner_folds: int = 3,
    register: bool = False,
    alias: str = "auto",
    cli_params: dict | None = None,
    koi_table: str | None = None,
    run_name: str | None = None,
    mistakes: bool = True,
) -> tuple[CVResult, dict]:
    """Cross-validate a vetter (``preset_name``, :data:`pixel_cnn.branches.vetters.VETTERS`) on a
    prepared dataset, tracked in MLflow.

    One parent run (this invocation) with a nested child run per fold; the vetter
    (:func:`pixel_cnn.evaluation.cv.served_vetter`: repeat 0's pixel networks, each other
    branch's served model, the combiner) logged as ``model`` and, with ``register``, registered
    as ``pixel-cnn`` with the alias the champion policy gives (``alias``:
    :func:`pixel_cnn.tracking.registry.register_cv_version`; ``auto`` moves ``@champion`` only for
    :func:`is_default_cv`, ``make cv`` exactly as it is). ``overrides`` apply to the pixel branch's preset. A vetter
    with a tabular branch trains it on the KOI table ``koi_table`` (default: :func:`koi_table_of`
    the dataset) and logs that table with ``mlflow.log_input``. Returns ``(result, info)`` with
    ``run_id``, ``model_uri``, ``version``, ``registration`` (alias set, champion after, reason) and ``wall_s``. ``dataset`` is a
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
    while the model is logged: :class:`pixel_cnn.drawing.workers.BackgroundSheets`).

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
    spec = get_vetter(preset_name)
    preset = spec.pixel_preset(**overrides)
    data, info = runs.open_dataset(dataset) if isinstance(dataset, str) else dataset
    # Refuse before any run is created: too few targets, or a fold (or inner split) lacking a class.
    plan_splits(data.kepids, data.labels, n_folds, seed, repeats, inner_folds)
    if spec.has_combiner and inner_folds < 2:
        raise CVError(f"inner_folds={inner_folds}: preset {spec.name!r} fits its combiner on inner "
                      "out-of-fold predictions; use inner_folds >= 2")
    koi_path = koi = None
    if spec.needs_koi_table:
        koi_path = koi_table_path(koi_table, info)
        koi = load_koi_with_dv(koi_path)  # + its DV diagnostics (issue 20)
    branches = spec.branches(preset, koi=koi)
    given = {k: v for k, v in overrides.items() if v is not None}
    name = run_name or cv_run_name(spec.name, seed, n_folds, repeats, given, inner_folds)
    with runs.job_run(runs.EXPERIMENT_CV, name, cli_params) as run_id:
        tracking_cv.log_cv_inputs(run_id, data, info, spec.name, preset)
        for branch in branches:
            if branch.training_table is not None:  # the KOI table the tabular branch trains on
                tracking_tabular.log_koi_input(run_id, branch.training_table, str(koi_path))
        # A real stack (the smallest) as input example: saved with every model.
        example = min(data.stack_list(), key=lambda s: s.size)[None].astype(np.float32)
        callbacks = tracking_cv.MlflowCVCallbacks(run_id, preset)
        result = run_cv(data, branches, n_folds=n_folds, seed=seed, repeats=repeats, inner_folds=inner_folds,
                        callbacks=callbacks, attributions=True, vetter=spec.name)
        sheets = None
        if mistakes:  # drawn in worker processes while the summary and the model are logged
            worst = worst_oof(result.oof)
            n_maps = preset.in_channels - preset.n_scalars if preset is not None else 0
            sheets = BackgroundSheets(mistake_sheet_specs(worst, result.folds, data.stacks, n_maps, model=name))
        try:
            tracking_cv.add_recall_at_p99(result.summary, result.oof)
            tracking_cv.log_cv_summary(run_id, result)
            roc = oof_interval(result.oof, seed, roc_auc_score)
            tracking_cv.log_cv_description(run_id, cv_description(result.summary, roc, len(data.labels), repeats)
                                           + tracking_cv.branch_lines(result), roc)
            default = is_default_cv(spec.name, given, n_folds, seed, repeats, inner_folds)
            model_info, registration = tracking_cv.log_vetter_model(
                run_id, result, seed, register, alias, input_example=example, dataset_digest=data.digest,
                is_default_cv=default)
            if sheets is not None:
                tracking_cv.log_mistakes(run_id, sheets.result(), worst)
        finally:
            if sheets is not None:
                sheets.close()
    return result, {"run_id": run_id, "model_uri": model_info.model_uri,
                    "version": registration["version"] if registration else None, "registration": registration,
                    "wall_s": time.perf_counter() - start}


def is_default_cv(preset: str, overrides: dict, n_folds: int, seed: int, repeats: int, inner_folds: int) -> bool:
    """Whether a cv is ``make cv`` exactly as it is (the main job): the default preset
    (:data:`~pixel_cnn.branches.vetters.CV_DEFAULT`), no preset override, 5 folds, seed 42, one repeat,
    the default inner split. Only such a run moves ``@champion`` without the gate."""
    return (preset == CV_DEFAULT and not any(v is not None for v in overrides.values())
            and (n_folds, seed, repeats, inner_folds) == (5, 42, 1, INNER_FOLDS))
