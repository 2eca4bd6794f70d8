"""The tune job: an Optuna study of cv run by tune workers sharing the study, tracked in MLflow.

One way to tune in parallel: Optuna workers on a shared storage. ``tune`` with
``n_workers=N > 1`` starts the same worker processes as the distributed launcher
(``make tune-workers``, :mod:`ops.tune_workers`), through :func:`run_workers`; each
worker is :func:`tune_worker`, i.e. :func:`pixel_cnn.search.tuning.optimize` with the
trial logger of its parent run. With ``N = 1`` that worker runs in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from pixel_cnn.jobs.cv import cv
from pixel_cnn.search import storage, tuning
from pixel_cnn.tracking import runs, stores
from pixel_cnn.tracking import tune as tracking_tune

#: The project checkout holding ``entrypoints/`` (the worker command runs ``-m entrypoints.tune_workers``).
PROJECT = Path(__file__).resolve().parents[2]


def _dataset_ref(dataset: str) -> str:
    """``dataset`` as a worker started in any directory reads it: a local folder made absolute."""
    return dataset if "://" in dataset or not Path(dataset).exists() else str(Path(dataset).resolve())


def worker_command(dataset: str, config: tuning.TuneConfig, target: int, index: int,
                   parent_run_id: str | None = None) -> list[str]:
    """The command line of tune worker ``index`` (``python -m entrypoints.tune_workers worker ...``).

    The storage URL is not on it (it may hold a password, visible to ``ps``): the worker reads
    it from ``OPTUNA_STORAGE``.
    """
    cmd = [sys.executable, "-m", "entrypoints.tune_workers", "worker", "--dataset", _dataset_ref(dataset),
           "--study-name", config.study_name, "--preset", config.preset,
           "--n-folds", str(config.n_folds), "--seed", str(config.seed), "--pruner", config.pruner,
           "--max-epochs", str(config.max_epochs), "--target", str(target), "--worker-index", str(index)]
    if config.timeout:
        cmd += ["--timeout", str(config.timeout)]
    if parent_run_id:
        cmd += ["--parent-run-id", parent_run_id]
    return cmd


def run_workers(dataset: str, config: tuning.TuneConfig, parent_run_id: str, target: int,
                log_dir: Path | None = None, state_file: Path | None = None) -> list[int]:
    """Start ``config.n_workers`` tune worker processes on the study and wait for them; returns their exit codes.

    Worker ``i`` runs :func:`worker_command` (its own session; environment: this one plus
    ``OPTUNA_STORAGE``, ``MLFLOW_TRACKING_URI`` and ``PYTHONPATH`` to the project) until
    the trials of ``parent_run_id`` hold ``target`` finished ones. Output goes to
    ``log_dir/tune-worker-<i>.log`` (None: this process's stdout/stderr). ``state_file``
    (JSON: study name, parent run, target, worker PIDs) is written once all are started.
    If this process is interrupted, the workers are stopped by PID (SIGTERM to their
    process groups) before the exception propagates.
    """
    env = {**os.environ, "OPTUNA_STORAGE": config.storage, "MLFLOW_TRACKING_URI": stores.tracking_uri(),
           "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT), os.environ.get("PYTHONPATH", "")) if p)}
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for i in range(config.n_workers):
            cmd = worker_command(dataset, config, target, i, parent_run_id)
            if log_dir is None:
                procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
                continue
            with open(log_dir / f"tune-worker-{i}.log", "ab") as log:
                procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        if state_file is not None:
            state_file.parent.mkdir(parents=True, exist_ok=True)
            state_file.write_text(json.dumps({"study_name": config.study_name, "parent_run_id": parent_run_id,
                                              "target": target, "pids": [p.pid for p in procs]}, indent=2))
        return [p.wait() for p in procs]
    except BaseException:
        for p in procs:  # our own workers, by PID (their process groups)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait()
        raise


def run_trials(dataset: str, config: tuning.TuneConfig, data, parent_run_id: str, target: int,
               log_dir: Path | None = None, state_file: Path | None = None) -> dict:
    """Run tune workers until the trials of ``parent_run_id`` hold ``target`` finished ones.

    ``config.n_workers == 1`` and no ``state_file``: the worker runs in this process on
    ``data`` (the opened ``dataset``); else :func:`run_workers`. When a worker exited with
    an error, its trials still RUNNING are failed once the heartbeat grace has passed
    (:func:`pixel_cnn.search.storage.wait_stale_trials`).

    Returns ``{"study", "worker_returncodes", "stale_trials_failed", "reached"}`` (``reached``:
    the parent's trials hold ``target`` finished ones).
    """
    if config.n_workers == 1 and state_file is None:
        tuning.optimize(config, data, tuning.study_inputs(config, data), target,
                        tracking_tune.trial_logger(parent_run_id, config, data), 0, group=parent_run_id)
        codes = [0]
    else:
        codes = run_workers(dataset, config, parent_run_id, target, log_dir, state_file)
    study = tuning.load_study(config)
    stale = []
    if any(code != 0 for code in codes):
        running = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                   if t.user_attrs.get(tuning.GROUP_ATTR) == parent_run_id}
        stale = storage.wait_stale_trials(study, running)
    return {"study": study, "worker_returncodes": codes, "stale_trials_failed": stale,
            "reached": tuning.n_finished(study, parent_run_id) >= target}


def tune(dataset: str, config: tuning.TuneConfig, register_best: bool = False,
         cli_params: dict | None = None, run_name: str | None = None) -> dict:
    """Run an Optuna study of cv on a prepared dataset, tracked in MLflow.

    The study is created, or loaded and checked (:func:`pixel_cnn.search.tuning.open_study`:
    same objective, dataset digest, preset, folds, seed) BEFORE any MLflow run: a mismatched
    study leaves no run behind. Then one parent run (this invocation; under ``mlflow run``
    the run it created) whose ``config.n_trials`` trials are run by ``config.n_workers``
    workers (:func:`run_trials`), one nested child run per trial (see
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
        A prep output folder or ``runs:/<prep_run_id>/dataset``; opened once here (and
        once by each worker process).
    config : pixel_cnn.search.tuning.TuneConfig

    Returns
    -------
    dict
        ``run_id``, ``study_name``, ``storage`` (password hidden), ``best_value`` (pooled
        OOF PR-AUC), ``best_params``, ``best_trial``, ``counts``, ``wall_s`` and, with
        ``register_best``, ``registered`` = ``{"run_id", "version", "pr_auc_oof"}``.

    Raises
    ------
    DataError
        ``dataset`` is not a prep output.
    TuneError
        Bad configuration, a study made with another objective or protocol (no run
        created), a worker failed and the others did not finish its share, or
        ``register_best`` with no completed trial.
    StorageError
        The storage cannot be opened.
    CVError, ValueError
        As :func:`cv`.
    """
    start = time.perf_counter()
    config.check()
    data, info = runs.open_dataset(dataset)
    tuning.open_study(config, data)  # refuses a mismatched study before any MLflow run exists
    with runs.job_run(runs.EXPERIMENT_TUNE, run_name or tuning.tune_run_name(config), cli_params) as run_id:
        tracking_tune.log_tune_inputs(run_id, tuning.config_dict(config), data, info)
        done = run_trials(dataset, config, data, run_id, config.n_trials)
        tracking_tune.close_failed_trial_runs(done["study"])
        if not done["reached"]:
            raise tuning.TuneError(
                f"tune workers exited with codes {done['worker_returncodes']}; this run's trials did not reach "
                f"{config.n_trials} finished ({tuning.n_finished(done['study'], run_id)})")
        summary = tracking_tune.log_study_summary(run_id, done["study"], time.perf_counter() - start)
        out = {"run_id": run_id, "study_name": config.study_name, "storage": storage.redact(config.storage),
               "worker_returncodes": done["worker_returncodes"], **summary}
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
    The study is checked (:func:`pixel_cnn.search.tuning.open_study`) before the parent run
    is made or reused.

    Raises
    ------
    TuneError
        Bad configuration, or a study made with another objective or protocol.
    StorageError, DataError, StoreError
        As :func:`pixel_cnn.search.storage.open_storage`, :func:`pixel_cnn.tracking.runs.open_dataset`.
    """
    config.check()
    stores.check_tracking()
    data, info = runs.open_dataset(dataset)
    study = tuning.open_study(config, data)
    return study, tracking_tune.study_parent_run(study, config, data, info)


def tune_worker(dataset: str, config: tuning.TuneConfig, target: int, worker_index: int = 0,
                parent_run_id: str | None = None) -> int:
    """One tune worker: trials until its parent run's trials hold ``target`` finished ones.

    ``parent_run_id``: the MLflow run the trials are children of (``tune`` passes its run);
    None: the study's user attribute ``mlflow_parent_run_id``, set by :func:`tune_init`
    (workers started anywhere need only the storage, the study name and the tracking URI).
    The worker itself is :func:`pixel_cnn.search.tuning.optimize`. Returns the number of
    trials run here.

    Raises
    ------
    TuneError
        The study does not exist or names no parent run (run ``tune_init`` first).
    """
    stores.check_tracking()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = tuning.load_study(config)
    except tuning.TuneError:
        raise tuning.TuneError(f"study {config.study_name!r} not found in {storage.redact(config.storage)}; "
                               "start workers with `make tune-workers` (which creates it)") from None
    parent = parent_run_id or study.user_attrs.get(tracking_tune.PARENT_ATTR)
    if not parent:
        raise tuning.TuneError(f"study {config.study_name!r} names no MLflow parent run (user attribute "
                               f"{tracking_tune.PARENT_ATTR!r}); create it with "
                               "`python -m entrypoints.tune_workers init`")
    data, _ = runs.open_dataset(dataset)
    return tuning.optimize(config, data, tuning.study_inputs(config, data), target,
                           tracking_tune.trial_logger(parent, config, data), worker_index, group=parent)


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
