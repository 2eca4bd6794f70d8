"""The work behind each entry point: prep, prep from TPFs, cv, tune (and its distributed
workers) and the quality benchmark. Entry points only parse arguments.

Each job joins the science core (:mod:`pixel_cnn.core`), the files
(:mod:`pixel_cnn.io`) and the MLflow side (:mod:`pixel_cnn.tracking`); it makes
no MLflow call itself. A prepared dataset is always opened by
:func:`pixel_cnn.tracking.runs.open_dataset` (a folder or a ``runs:/`` URI), once per job.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pixel_cnn.core import tabular, tuning
from pixel_cnn.core.cv import CVError, CVResult, cv_description, cv_run_name, oof_interval, plan_splits, run_cv, worst_oof
from pixel_cnn.core.fusion import KOITable, run_fusion_cv
from pixel_cnn.core.models import get_preset, is_fusion
from pixel_cnn.core.quality import bench_quality as run_bench, format_table
from pixel_cnn.core.sheet import mistake_sheet_specs
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


def prep(data_dir: str | None, labels: str, out_dir: str, cli_params: dict | None = None) -> dict:
    """Validate the stacks, join labels, write ``out_dir`` and log a prep run.

    Returns ``{"run_id", "digest", "counts", "skipped"}`` (skipped: list of
    ``(source_file, reason)``). Raises :class:`~pixel_cnn.io.dataset.DataError` when
    the folder, KOI table or labels file is unusable.
    """
    dataset = prepare_dataset(data_dir, labels)  # DataError before any run when the folder is unusable
    root = Path(dataset.source)
    with runs.job_run(runs.EXPERIMENT_PREP, "prep", cli_params) as run_id:
        out = write_dataset(dataset, out_dir, {
            "prep_run_id": run_id, "labels": labels, "source": str(root / "stacks"),
        })
        tracking_prep.log_prep(run_id, dataset, out, root, labels)
    return {
        "run_id": run_id, "digest": dataset.digest, "counts": dataset.counts(),
        "skipped": list(dataset.skipped[["source_file", "reason"]].itertuples(index=False, name=None)),
    }


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
    (:func:`pixel_cnn.core.cv.cv_run_name`, ``cv phase2 seed=42 x5``; under
    ``mlflow run --run-name`` the user's name is kept), and described by its
    headline figures (pooled OOF PR-AUC and ROC-AUC with their 95 % bootstrap
    intervals, threshold: :func:`pixel_cnn.core.cv.cv_description`). With
    ``mistakes`` it logs the vetting sheets of the 4 planets scored lowest and the 4
    false positives scored highest out of fold (repeat 0) under ``figures/mistakes/``
    (:func:`pixel_cnn.core.sheet.mistake_sheet_specs`, drawn in worker processes
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


def tune(dataset: str, config: tuning.TuneConfig, register_best: bool = False,
         cli_params: dict | None = None, run_name: str | None = None) -> dict:
    """Run an Optuna study of cv on a prepared dataset, tracked in MLflow.

    One parent run (this invocation; under ``mlflow run`` the run it created)
    with one nested child run per trial (see
    :class:`pixel_cnn.tracking.tune.TrialLogger`); the parent gets the best
    params/value, trial counts, ``trials.csv`` and Optuna's figures. With
    ``register_best`` the best params are cross-validated again by :func:`cv`
    (a nested child run), registered as ``pixel-cnn`` and given the alias
    ``challenger``. The parent is named ``run_name``, else after what it is
    (:func:`pixel_cnn.core.tuning.tune_run_name`; a ``mlflow run --run-name`` is kept),
    and described by the best trial (:func:`pixel_cnn.core.tuning.tune_description`).

    Parameters
    ----------
    dataset : str
        A prep output folder or ``runs:/<prep_run_id>/dataset``; opened once for the
        whole study and for ``register_best``.
    config : pixel_cnn.core.tuning.TuneConfig

    Returns
    -------
    dict
        ``run_id``, ``study_name``, ``storage`` (password hidden), ``best_value``,
        ``best_params``, ``best_trial``, ``counts``, ``wall_s`` and, with
        ``register_best``, ``registered`` = ``{"run_id", "version", "pr_auc_oof"}``.

    Raises
    ------
    DataError
        ``dataset`` is not a prep output.
    TuneError
        Bad configuration or storage, a study made with another protocol, or
        ``register_best`` with no completed trial.
    CVError, ValueError
        As :func:`cv`.
    """
    start = time.perf_counter()
    config.check()
    data, info = runs.open_dataset(dataset)
    with runs.job_run(runs.EXPERIMENT_TUNE, run_name or tuning.tune_run_name(config), cli_params) as run_id:
        tracking_tune.log_tune_inputs(run_id, tuning.config_dict(config), data, info)
        study, _ = tuning.run_study(config, data, tracking_tune.trial_logger(run_id, config, data))
        summary = tracking_tune.log_study_summary(run_id, study, time.perf_counter() - start)
        out = {"run_id": run_id, "study_name": config.study_name, "storage": tuning.redact(config.storage),
               **summary}
        if register_best:
            if summary["best_params"] is None:
                raise tuning.TuneError(f"study {config.study_name!r} has no completed trial: nothing to register")
            result, info_cv = cv((data, info), config.preset, dict(summary["best_params"]),
                                 n_folds=config.n_folds, seed=config.seed, register=True, alias="challenger",
                                 cli_params={"tuned_from_study": config.study_name,
                                             "tuned_from_trial": summary["best_trial"]})
            out["registered"] = {"run_id": info_cv["run_id"], "version": info_cv["version"],
                                 "pr_auc_oof": result.summary["pr_auc_oof"]}
        runs.describe_run(run_id, tuning.tune_description(summary, out.get("registered")))
    out["wall_s"] = time.perf_counter() - start
    return out


def tune_init(dataset: str, config: tuning.TuneConfig) -> tuple:
    """Open (or resume) a study shared by tune workers and its MLflow parent run.

    Returns ``(study, parent_run_id)`` (:func:`pixel_cnn.tracking.tune.study_parent_run`).

    Raises
    ------
    TuneError
        Bad configuration or storage, or a study made with another protocol.
    DataError, StoreError
        As :func:`pixel_cnn.tracking.runs.open_dataset`.
    """
    config.check()
    stores.check_tracking()
    data, info = runs.open_dataset(dataset)
    study = tuning.open_study(config, data)
    return study, tracking_tune.study_parent_run(study, config, data, info)


def tune_worker(dataset: str, config: tuning.TuneConfig, target: int, worker_index: int = 0) -> int:
    """One tune worker of a shared study: trials until the study holds ``target`` finished ones.

    The MLflow parent run is read from the study (user attribute
    ``mlflow_parent_run_id``, set by :func:`tune_init`); the worker itself is
    :func:`pixel_cnn.core.tuning.optimize`, the same function ``tune`` runs.
    Returns the number of trials started here.

    Raises
    ------
    TuneError
        The study does not exist or names no parent run (run ``tune_init`` first).
    """
    import optuna

    stores.check_tracking()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=config.study_name, storage=tuning.open_storage(config.storage))
    except KeyError:
        raise tuning.TuneError(f"study {config.study_name!r} not found in {tuning.redact(config.storage)}; "
                               "start workers with `make tune-workers` (which creates it)") from None
    parent = study.user_attrs.get(tracking_tune.PARENT_ATTR)
    if not parent:
        raise tuning.TuneError(f"study {config.study_name!r} names no MLflow parent run (user attribute "
                               f"{tracking_tune.PARENT_ATTR!r}); create it with "
                               "`python -m entrypoints.tune_workers init`")
    data, _ = runs.open_dataset(dataset)
    return tuning.optimize(config, data, tuning.study_inputs(config, data),
                           tracking_tune.trial_logger(parent, config, data), worker_index, target=target)


def tune_finish(study, parent_run_id: str, reached: bool, wall_s: float) -> tuple[dict, list[str]]:
    """Close the runs of trials whose worker died, log the study summary, end the parent run.

    Returns ``(summary, closed run ids)``. The parent ends FINISHED when the
    study reached its target, else FAILED.
    """
    closed = tracking_tune.close_failed_trial_runs(study)
    summary = tracking_tune.log_study_summary(parent_run_id, study, wall_s)
    runs.describe_run(parent_run_id, tuning.tune_description(summary))
    stores.end_run(parent_run_id, "FINISHED" if reached else "FAILED")
    return summary, closed


def prep_tpf(tpf_dir: str, ephemeris: str, out_dir: str, labels: str = "seed",
             data_dir: str | None = None, n_jobs: int = 1, download: bool = False,
             cache_dir: str = "", targets: list[int] | None = None,
             cli_params: dict | None = None) -> dict:
    """``prep source=tpf``: stacks from TPFs, then (when labels can be had) the usual dataset.

    Writes ``out_dir/stacks/pixdiff_<id>.npy`` and ``out_dir/prep_report.csv``
    (:func:`pixel_cnn.io.tpf.build_stacks`). Then it chains into
    :func:`~pixel_cnn.io.dataset.prepare_dataset` on ``out_dir`` (a data folder:
    ``stacks/`` + ``koi_cumulative.csv``) and writes the prepared dataset to
    ``out_dir/dataset`` (the folder ``cv -P dataset=...`` takes). The KOI table
    is the ephemeris itself when it has ``kepoi_name``/``koi_disposition``
    (the KOI cumulative table), else ``data_dir``'s; ``seed_labels.csv`` comes
    from ``data_dir``. A TOI (TESS) ephemeris stops after the stacks: TESS
    targets have no labels in the KOI table.

    With ``download``, TPFs of ``targets`` (default: every id of the
    ephemeris) are first fetched from MAST into ``cache_dir`` (default
    ``tpf_dir``), which is then read.

    Returns ``{"run_id", "report", "summary", "dataset_dir", "counts", "digest",
    "skipped", "chain_note"}``; ``dataset_dir`` is None when the chain stopped
    (``chain_note`` says why).

    Raises
    ------
    TPFError
        ``tpf_dir`` missing or without FITS files, ephemeris CSV unusable.
    """
    out = Path(out_dir)
    with runs.job_run(runs.EXPERIMENT_PREP, "prep-tpf", cli_params) as run_id:
        ephemerides, problems, layout = tpf.load_ephemeris(ephemeris)
        fetch_problems = {}
        if download:
            cache = cache_dir or tpf_dir
            if not cache:
                raise tpf.TPFError("download=true needs cache_dir (or tpf_dir) to download into")
            Path(cache).mkdir(parents=True, exist_ok=True)
            wanted = targets or sorted(set(ephemerides) | set(problems))
            fetch_problems = tpf.download_tpfs(wanted, layout, cache)
            tpf_dir = cache
        report = tpf.build_stacks(tpf_dir, ephemeris, out, n_jobs=n_jobs,
                                  known_problems=fetch_problems)
        summary = tpf.stacks_summary(report)
        tracking_prep.log_tpf_prep(run_id, report, summary, out, layout)
        result = {"run_id": run_id, "report": report, "summary": summary, "dataset_dir": None,
                  "counts": None, "digest": None, "skipped": [], "chain_note": ""}
        if layout != "koi":
            result["chain_note"] = "TOI ephemeris: TESS targets have no KOI labels; stacks only"
            return result
        if summary["n_targets_ok"] == 0:
            result["chain_note"] = "no stack was made; see the report"
            return result
        is_koi_table = set(KOI_REQUIRED_COLUMNS) <= set(pd.read_csv(ephemeris, comment="#", nrows=0).columns)
        root = None
        if labels == "seed" or not is_koi_table:  # seed_labels.csv / the KOI table from data_dir
            try:
                root = resolve_data_dir(data_dir)
            except DataError as exc:
                result["chain_note"] = f"dataset not prepared: {exc}"
                return result
        koi_src = Path(ephemeris) if is_koi_table else root / "koi_cumulative.csv"
        shutil.copyfile(koi_src, out / "koi_cumulative.csv")
        if root is not None and (root / "seed_labels.csv").exists():
            shutil.copyfile(root / "seed_labels.csv", out / "seed_labels.csv")
        try:
            dataset = prepare_dataset(out, labels)
        except DataError as exc:
            result["chain_note"] = f"dataset not prepared: {exc}"
            return result
        if not len(dataset.manifest):
            result["chain_note"] = f"dataset not prepared: no stack has a label (labels={labels})"
            result["skipped"] = list(dataset.skipped[["source_file", "reason"]].itertuples(index=False, name=None))
            return result
        dataset_dir = write_dataset(dataset, out / "dataset", {
            "prep_run_id": run_id, "labels": labels, "source": str(out / "stacks"), "prep_source": "tpf"})
        tracking_prep.log_prep(run_id, dataset, dataset_dir, out, labels)
        result.update(dataset_dir=dataset_dir, counts=dataset.counts(), digest=dataset.digest,
                      skipped=list(dataset.skipped[["source_file", "reason"]].itertuples(index=False, name=None)))
    return result


def bench_quality(dataset: str, presets: tuple[str, ...], n_folds: int = 5, seed: int = 42,
                  repeats: int = 5, inner_folds: int = 3, out: str = "bench/results/quality.json",
                  cli_params: dict | None = None) -> tuple[dict, str]:
    """Run :func:`pixel_cnn.core.quality.bench_quality`, write the JSON to ``out``, log one MLflow run.

    Returns ``(bench dict with "run_id", Markdown table)``. Raises as
    :func:`pixel_cnn.core.quality.bench_quality`, and as
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
    labelled KOI of the KOI table (:func:`pixel_cnn.core.tabular.koi_cv`), one MLflow run.

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
        digest = tracking_tabular.log_koi_input(run_id, tabular.training_table(koi), str(root / "koi_cumulative.csv"))
        oof, summary = tabular.koi_cv(koi, n_folds=n_folds, seed=seed, n_boot=n_boot)
        summary["wall_s"] = round(time.perf_counter() - start, 1)
        tracking_tabular.log_tabular_bench(run_id, oof, summary, protocol)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"protocol": protocol, "koi_table_digest": digest, "run_id": run_id,
                                   "summary": summary}, indent=2) + "\n")
        os.replace(tmp, path)
    return {**summary, "run_id": run_id, "koi_table_digest": digest}
