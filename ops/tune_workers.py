"""Distributed tuning: N independent worker processes share one Optuna study and one MLflow parent run.

``python -m entrypoints.tune_workers launch --n-workers N ...`` (``make tune-workers N=4``)
does, in order:

1. opens (or resumes) the study in the RDB storage (``--storage``, the
   ``OPTUNA_STORAGE`` written by ``make server``: a PostgreSQL database);
2. finds or creates the study's MLflow **parent run** and stores its id in the
   study's user attribute ``mlflow_parent_run_id`` (the same key the trial
   attributes use, :data:`pixel_cnn.tracking.tune.PARENT_ATTR`);
3. starts N ``worker`` processes (own sessions, PIDs written to
   ``--state-dir/tune-workers.json``) and waits for them;
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
worker (a database transaction). Workers stop when the study holds
``target`` finished (COMPLETE or PRUNED) trials (``MaxTrialsCallback``), so a
killed worker's share is taken over by the others; up to N-1 trials may
overshoot (trials already running when the target is reached).

**Killed worker**: the storage heartbeat (``PIXEL_CNN_OPTUNA_HEARTBEAT_S``,
default 20 s) stops; after the grace period (``PIXEL_CNN_OPTUNA_GRACE_S``,
default 120 s) the next worker to start a trial marks the trial FAIL and
``RetryHeartbeatStaleTrialCallback`` (``RetryFailedTrialCallback``) queues a
copy with the same parameters, which a live worker runs.
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

from pixel_cnn.jobs.tune import tune_finish, tune_init
from pixel_cnn.search import tuning
from pixel_cnn.search.tuning import TuneConfig
from pixel_cnn.tracking import stores

WORKERS_FILE = "tune-workers.json"
PROJECT = Path(__file__).resolve().parents[1]


def _worker_cmd(config: TuneConfig, dataset: str, target: int, index: int) -> list[str]:
    cmd = [sys.executable, "-m", "entrypoints.tune_workers", "worker", "--dataset", dataset,
           "--study-name", config.study_name, "--preset", config.preset,
           "--n-folds", str(config.n_folds), "--seed", str(config.seed), "--pruner", config.pruner,
           "--max-epochs", str(config.max_epochs), "--target", str(target), "--worker-index", str(index)]
    if config.timeout:
        cmd += ["--timeout", str(config.timeout)]
    return cmd


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """After a worker died: wait out the heartbeat grace, then fail its stale RUNNING trials.

    The surviving workers do this themselves when they start another trial
    after the grace period; when they all finished first, the launcher does
    it here with ``optuna.storages.fail_stale_trials``, which also runs the
    retry callback: the trial's copy waits (WAITING) for the next launch.
    Waits at most grace + interval seconds; trials of live workers elsewhere
    keep beating and are left alone. Returns the numbers of the trials failed.
    """
    running = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    if not running:
        return []
    interval, grace = tuning.heartbeat_settings()
    deadline = time.monotonic() + grace + interval
    failed: list[int] = []
    while True:
        optuna.storages.fail_stale_trials(study)
        states = {t.number: t.state for t in study.get_trials(deepcopy=False) if t.number in running}
        failed = sorted(n for n, st in states.items() if st == optuna.trial.TrialState.FAIL)
        if all(st != optuna.trial.TrialState.RUNNING for st in states.values()) or time.monotonic() > deadline:
            return failed
        time.sleep(1.0)


def launch(config: TuneConfig, dataset: str, n_workers: int, state_dir: Path,
           log_dir: Path | None = None) -> dict:
    """Init the study, run ``n_workers`` worker processes until ``config.n_trials`` more trials finish.

    Returns ``{"parent_run_id", "target", "worker_returncodes",
    "stale_trials_failed", "closed_runs", "summary", "reached"}``. The parent run ends FINISHED when the study reached its
    target (even if a worker was killed: the others took over), else FAILED.

    Raises
    ------
    TuneError, DataError
        As :func:`pixel_cnn.jobs.tune.tune_init`; nothing is started then.
    """
    start = time.perf_counter()
    study, parent = tune_init(dataset, config)
    target = tuning.n_finished(study) + config.n_trials
    state_dir.mkdir(parents=True, exist_ok=True)
    log_dir = log_dir or state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for i in range(n_workers):
            with open(log_dir / f"tune-worker-{i}.log", "ab") as log:
                # The storage URL holds a password: through the environment, not the command line.
                procs.append(subprocess.Popen(_worker_cmd(config, dataset, target, i), stdout=log, cwd=PROJECT,
                                              stderr=subprocess.STDOUT, start_new_session=True,
                                              env={**os.environ, "OPTUNA_STORAGE": config.storage}))
        (state_dir / WORKERS_FILE).write_text(json.dumps({
            "study_name": config.study_name, "parent_run_id": parent, "target": target,
            "pids": [p.pid for p in procs]}, indent=2))
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:  # stop our own workers by PID (their process groups)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait()
        stores.end_run(parent, "FAILED")
        raise
    study = optuna.load_study(study_name=config.study_name, storage=tuning.open_storage(config.storage))
    stale = fail_stale_trials(study) if any(code != 0 for code in codes) else []
    reached = tuning.n_finished(study) >= target
    summary, closed = tune_finish(study, parent, reached, time.perf_counter() - start)
    return {"parent_run_id": parent, "target": target, "worker_returncodes": codes,
            "stale_trials_failed": stale, "closed_runs": closed, "summary": summary, "reached": reached}
