"""The tune job: an Optuna study of cv (one process, or workers sharing a study), tracked in MLflow."""

from __future__ import annotations

import time

from pixel_cnn.jobs.cv import cv
from pixel_cnn.search import tuning
from pixel_cnn.tracking import runs, stores
from pixel_cnn.tracking import tune as tracking_tune


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
    (:func:`pixel_cnn.search.tuning.tune_run_name`; a ``mlflow run --run-name`` is kept),
    and described by the best trial (:func:`pixel_cnn.search.tuning.tune_description`).

    Parameters
    ----------
    dataset : str
        A prep output folder or ``runs:/<prep_run_id>/dataset``; opened once for the
        whole study and for ``register_best``.
    config : pixel_cnn.search.tuning.TuneConfig

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
    :func:`pixel_cnn.search.tuning.optimize`, the same function ``tune`` runs.
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
