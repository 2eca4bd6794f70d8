"""Distributed tuning: N independent worker processes share one Optuna study and one MLflow parent run.

``python -m pixel_cnn.tune_workers launch --n-workers N ...`` (``make tune-workers N=4``)
does, in order:

1. opens (or resumes) the study in the RDB storage (``--storage``, the
   ``OPTUNA_STORAGE`` written by ``make server``: a PostgreSQL database);
2. finds or creates the study's MLflow **parent run** and stores its id in the
   study's user attribute ``mlflow_parent_run_id`` (the same key the trial
   attributes use, :data:`pixel_cnn.tracking_tune.PARENT_ATTR`);
3. starts N ``worker`` processes (own sessions, PIDs written to
   ``--state-dir/tune-workers.json``) and waits for them;
4. when a worker died, fails its stale trials once the heartbeat grace has
   passed (if the survivors have not already), marks the MLflow runs of
   failed trials FAILED, logs the study summary on the parent and ends it.

**How a worker finds the parent run**: from the storage, not from its
command line. A worker needs only ``MLFLOW_TRACKING_URI``, the storage URL and
the study name; it loads the study and reads ``mlflow_parent_run_id``. So
workers can be started anywhere (``worker`` sub-command, a Kubernetes Job, a
Ray task) once one ``launch`` (or ``init``) has created the study. Each trial
is a child run of that parent (``mlflow.parentRunId``), logged by
:class:`pixel_cnn.tracking_tune.TrialLogger`.

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

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from pixel_cnn import tuning
from pixel_cnn.tuning import TuneConfig, TuneError

WORKERS_FILE = "tune-workers.json"
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _parent_attr() -> str:
    from pixel_cnn.tracking_tune import PARENT_ATTR

    return PARENT_ATTR


def n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def init_study(config: TuneConfig, dataset_uri: str) -> tuple[optuna.Study, str]:
    """Open the study (checking its protocol) and its MLflow parent run; returns ``(study, parent_run_id)``.

    The parent is reused when the study already names one that exists (and
    set RUNNING again), else created in experiment ``pixel-cnn-tune`` and its
    id stored in the study's user attribute ``mlflow_parent_run_id``. Run this
    once per study (one launcher, or an init Job): two concurrent first
    launches would each create a parent.

    Raises
    ------
    TuneError
        Bad configuration or storage, or a study made with another protocol.
    DataError
        ``dataset_uri`` is not a prep output.
    """
    from pixel_cnn import stores, tracking_tune
    from pixel_cnn.data import read_dataset
    from mlflow.tracking import MlflowClient

    config.check()
    stores.check_tracking()
    dataset, info = read_dataset(stores.local_dataset(dataset_uri))
    study = tuning.open_study(config, dataset)
    client = MlflowClient()
    parent = study.user_attrs.get(_parent_attr())
    if parent:
        try:
            client.update_run(parent, status="RUNNING")
        except Exception:  # noqa: BLE001 - deleted or from another tracking server: make a new one
            parent = None
    if not parent:
        exp = client.get_experiment_by_name(tracking_tune.EXPERIMENT_TUNE)
        exp_id = exp.experiment_id if exp else client.create_experiment(tracking_tune.EXPERIMENT_TUNE)
        run = client.create_run(exp_id, run_name=f"tune-{config.study_name}",
                                tags={"pixel_cnn.distributed": "true"})
        parent = run.info.run_id
        stores.check_artifacts(parent)
        tracking_tune.log_tune_inputs(parent, tuning.config_dict(config), dataset, info)
        study.set_user_attr(_parent_attr(), parent)
    return study, parent


def worker(config: TuneConfig, dataset_uri: str, target: int, worker_index: int) -> int:
    """Run trials of ``config.study_name`` until it holds ``target`` finished trials; returns trials run here.

    The MLflow parent run is read from the study (see module docstring).

    Raises
    ------
    TuneError
        The study does not exist or names no parent run (run ``launch``/``init`` first).
    """
    from pixel_cnn import stores, tracking_tune
    from pixel_cnn.data import read_dataset
    from pixel_cnn.models import get_preset
    from pixel_cnn.representation import build_inputs

    stores.check_tracking()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = tuning.open_storage(config.storage)
    try:
        study = optuna.load_study(study_name=config.study_name, storage=storage,
                                  sampler=tuning.TrialSeededSampler(config.seed),
                                  pruner=tuning.make_pruner(config.pruner))
    except KeyError:
        raise TuneError(f"study {config.study_name!r} not found in {tuning.redact(config.storage)}; "
                        "start workers with `make tune-workers` (which creates it)") from None
    parent = study.user_attrs.get(_parent_attr())
    if not parent:
        raise TuneError(f"study {config.study_name!r} names no MLflow parent run (user attribute "
                        f"{_parent_attr()!r}); create it with `python -m pixel_cnn.tune_workers init`")
    dataset, _ = read_dataset(stores.local_dataset(dataset_uri))
    preset = get_preset(config.preset)
    inputs = build_inputs(dataset.stack_list(), preset.representation, preset.image_size)
    hooks = tracking_tune.TrialLogger(parent, config.study_name, {
        "n_folds": config.n_folds, "seed": config.seed, "dataset_digest": dataset.digest})
    mine_before = len(study.get_trials(deepcopy=False))
    if n_finished(study) < target:
        study.optimize(tuning.Objective(dataset, inputs, config, hooks, worker_index), n_trials=None,
                       timeout=config.timeout, catch=(),
                       callbacks=[hooks, optuna.study.MaxTrialsCallback(target, states=FINISHED_STATES)])
    return len(study.get_trials(deepcopy=False)) - mine_before


def _worker_cmd(config: TuneConfig, dataset_uri: str, target: int, index: int) -> list[str]:
    cmd = [sys.executable, "-m", "pixel_cnn.tune_workers", "worker", "--dataset", dataset_uri,
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


def close_failed_trial_runs(study: optuna.Study) -> list[str]:
    """Mark FAILED the MLflow runs of FAIL trials still RUNNING (their worker died); returns their ids."""
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    from pixel_cnn.tracking_tune import RUN_ID_ATTR

    client, closed = MlflowClient(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_id = t.user_attrs.get(RUN_ID_ATTR)
        if run_id and client.get_run(run_id).info.status == "RUNNING":
            client.log_batch(run_id, tags=[RunTag("state", "FAIL"),
                                           RunTag("error", "worker stopped beating (killed); trial retried")])
            client.set_terminated(run_id, "FAILED")
            closed.append(run_id)
    return closed


def launch(config: TuneConfig, dataset_uri: str, n_workers: int, state_dir: Path,
           log_dir: Path | None = None) -> dict:
    """Init the study, run ``n_workers`` worker processes until ``config.n_trials`` more trials finish.

    Returns ``{"parent_run_id", "target", "worker_returncodes",
    "stale_trials_failed", "closed_runs", "summary", "reached"}``. The parent run ends FINISHED when the study reached its
    target (even if a worker was killed: the others took over), else FAILED.

    Raises
    ------
    TuneError, DataError
        As :func:`init_study`; nothing is started then.
    """
    from pixel_cnn import stores, tracking_tune

    start = time.perf_counter()
    study, parent = init_study(config, dataset_uri)
    target = n_finished(study) + config.n_trials
    state_dir.mkdir(parents=True, exist_ok=True)
    log_dir = log_dir or state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for i in range(n_workers):
            with open(log_dir / f"tune-worker-{i}.log", "ab") as log:
                # The storage URL holds a password: through the environment, not the command line.
                procs.append(subprocess.Popen(_worker_cmd(config, dataset_uri, target, i), stdout=log,
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
    closed = close_failed_trial_runs(study)
    summary = tracking_tune.log_study_summary(parent, study, time.perf_counter() - start)
    reached = n_finished(study) >= target
    stores.end_run(parent, "FINISHED" if reached else "FAILED")
    return {"parent_run_id": parent, "target": target, "worker_returncodes": codes,
            "stale_trials_failed": stale, "closed_runs": closed, "summary": summary, "reached": reached}


def _config(args) -> TuneConfig:
    storage = args.storage or os.environ.get("OPTUNA_STORAGE", "")
    if not storage:
        raise TuneError("no Optuna storage: pass --storage or set OPTUNA_STORAGE (`. .services/env` after "
                        "`make server`); distributed workers need a database server, not an sqlite file")
    return TuneConfig(preset=args.preset, n_folds=args.n_folds, seed=args.seed,
                      n_trials=getattr(args, "n_trials", 1), timeout=args.timeout or None,
                      storage=tuning.resolve_storage(storage), study_name=args.study_name,
                      n_workers=1, pruner=args.pruner, max_epochs=args.max_epochs)


def main(argv=None) -> int:
    from pixel_cnn.data import DataError
    from pixel_cnn.stores import StoreError

    parser = argparse.ArgumentParser(prog="python -m pixel_cnn.tune_workers", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dataset", default="data/processed", help="prep output folder or runs:/<prep run>/dataset")
    common.add_argument("--storage", default="", help="SQLAlchemy URL ('' = $OPTUNA_STORAGE, preferred: "
                        "a URL on the command line shows its password to `ps`)")
    common.add_argument("--study-name", default="pixel-cnn")
    common.add_argument("--preset", default="seed")
    common.add_argument("--n-folds", type=int, default=5)
    common.add_argument("--seed", type=int, default=42)
    common.add_argument("--pruner", default="median", choices=tuning.PRUNERS)
    common.add_argument("--max-epochs", type=int, default=40)
    common.add_argument("--timeout", type=float, default=0, help="seconds per worker; 0 = none")
    p_launch = sub.add_parser("launch", parents=[common], help="init + N workers + summary")
    p_launch.add_argument("--n-workers", type=int, default=4)
    p_launch.add_argument("--n-trials", type=int, default=20, help="finished trials to add to the study")
    p_launch.add_argument("--state-dir", default=".services")
    p_init = sub.add_parser("init", parents=[common], help="create the study and its MLflow parent run")
    p_init.add_argument("--n-trials", type=int, default=1)
    p_worker = sub.add_parser("worker", parents=[common], help="run trials until the study holds --target")
    p_worker.add_argument("--target", type=int, required=True)
    p_worker.add_argument("--worker-index", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        config = _config(args)
        if args.command == "init":
            study, parent = init_study(config, args.dataset)
            print(f"tune-workers: study {config.study_name} ({tuning.redact(config.storage)}), "
                  f"MLflow parent run {parent}, {n_finished(study)} finished trials")
        elif args.command == "worker":
            n = worker(config, args.dataset, args.target, args.worker_index)
            print(f"tune-worker {args.worker_index}: {n} trials")
        else:
            if args.n_workers < 1:
                raise TuneError(f"n_workers={args.n_workers}; need at least 1")
            out = launch(config, args.dataset, args.n_workers, Path(args.state_dir))
            s = out["summary"]
            print(f"tune-workers: {args.n_workers} workers (exit codes {out['worker_returncodes']}), study "
                  f"{config.study_name}: {s['counts']['n_trials']} trials, target {out['target']} finished "
                  f"{'reached' if out['reached'] else 'NOT reached'}; parent run {out['parent_run_id']}; "
                  f"{len(out['closed_runs'])} runs of failed trials closed")
            if s["best_value"] is not None:
                print(f"tune-workers: best trial {s['best_trial']}: mean fold PR-AUC (average precision) "
                      f"{s['best_value']:.4f} with {s['best_params']}")
            return 0 if out["reached"] else 1
    except (TuneError, DataError, StoreError, ValueError) as exc:
        print(f"tune-workers: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
