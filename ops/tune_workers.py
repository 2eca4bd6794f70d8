"""Distributed tuning: N independent worker processes share one Optuna study and one MLflow parent run.

``python -m entrypoints.tune_workers launch --n-workers N ...`` (``make tune-workers N=4``)
does, in order:

1. opens (or resumes) the study in the RDB storage (``--storage``, the
   ``OPTUNA_STORAGE`` written by ``make server``: a PostgreSQL database);
2. finds or creates the study's MLflow **parent run** and stores its id in the
   study's user attribute ``mlflow_parent_run_id`` (the same key the trial
   attributes use, :data:`pixel_cnn.tracking.tune.PARENT_ATTR`);
3. starts N ``worker`` processes (own sessions, PIDs written to
   ``--state-dir/tune-workers.json``) and waits for them: the same workers, started by the
   same function (:func:`pixel_cnn.jobs.tune.run_workers`), as ``tune -P n_workers=N``;
4. when a worker died, fails its stale trials once the heartbeat grace has
   passed (if the survivors have not already), marks the MLflow runs of
   failed trials FAILED, logs the study summary on the parent and ends it.

**How a worker finds the parent run**: from the storage, not from its
command line. A worker needs only ``MLFLOW_TRACKING_URI``, the storage URL and
the study name; it loads the study and reads ``mlflow_parent_run_id``. So
workers can be started anywhere (``worker`` sub-command of the entry point, :func:`pixel_cnn.jobs.tune.tune_worker`, a Kubernetes Job, a
Ray task) once one ``launch`` (or ``init``) has created the study. Each trial
is a child run of that parent (``mlflow.parentRunId``), logged by
:class:`pixel_cnn.tracking.tune.TrialLogger`.

**Each trial once**: Optuna's RDB storage hands out every trial number to one
worker (a database transaction). Workers stop when the parent run's trials hold
``target`` finished (COMPLETE or PRUNED) ones, and do not start a trial while those
finished plus those running elsewhere would reach it
(:func:`pixel_cnn.search.tuning.optimize`), so a killed worker's share is taken over by
the others and the target is not overshot (up to N-1 trials when workers look at the
same instant).

**Killed worker**: the storage heartbeat (``PIXEL_CNN_OPTUNA_HEARTBEAT_S``,
default 20 s) stops; after the grace period (``PIXEL_CNN_OPTUNA_GRACE_S``,
default 120 s) a live worker (one starting a trial, or one waiting for the
target) marks the trial FAIL and ``RetryHeartbeatStaleTrialCallback``
(``RetryFailedTrialCallback``) queues a copy with the same parameters, which a live
worker runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from pixel_cnn.jobs.tune import run_trials, tune_finish, tune_init
from pixel_cnn.search import tuning
from pixel_cnn.search.tuning import TuneConfig
from pixel_cnn.tracking import stores

WORKERS_FILE = "tune-workers.json"


def launch(config: TuneConfig, dataset: str, state_dir: Path, log_dir: Path | None = None) -> dict:
    """Init the study, run ``config.n_workers`` worker processes until ``config.n_trials`` more trials finish.

    Returns ``{"parent_run_id", "target", "worker_returncodes",
    "stale_trials_failed", "closed_runs", "summary", "reached"}``. The parent run ends FINISHED when
    its trials reached the target (even if a worker was killed: the others took over), else FAILED.

    Raises
    ------
    TuneError, StorageError, DataError
        As :func:`pixel_cnn.jobs.tune.tune_init`; nothing is started then.
    """
    start = time.perf_counter()
    study, parent = tune_init(dataset, config)
    target = tuning.n_finished(study, parent) + config.n_trials
    try:
        done = run_trials(dataset, config, None, parent, target, log_dir=log_dir or state_dir / "logs",
                          state_file=state_dir / WORKERS_FILE)
    except BaseException:
        stores.end_run(parent, "FAILED")
        raise
    summary, closed = tune_finish(done["study"], parent, done["reached"], time.perf_counter() - start)
    return {"parent_run_id": parent, "target": target, "worker_returncodes": done["worker_returncodes"],
            "stale_trials_failed": done["stale_trials_failed"], "closed_runs": closed, "summary": summary,
            "reached": done["reached"]}
