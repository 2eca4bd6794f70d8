"""Distributed tuning: N worker processes on one Optuna study in a database, one MLflow parent run.

``launch`` (``make tune-workers N=4``) = ``init`` + N ``worker`` processes + the
study summary; ``init`` and ``worker`` run on their own for workers started
elsewhere. How it works: :mod:`ops.tune_workers` and docs/tune.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ops.tune_workers import launch
from pixel_cnn.io.dataset import DataError
from pixel_cnn.jobs.tune import tune_init, tune_worker
from pixel_cnn.search.storage import redact
from pixel_cnn.search.tuning import TuneConfig, TuneError, n_finished
from pixel_cnn.tracking.stores import StoreError

from entrypoints._args import add_tune_arguments, tune_config, whole


def _config(args) -> TuneConfig:
    storage = args.storage or os.environ.get("OPTUNA_STORAGE", "")
    if not storage:
        raise TuneError("no Optuna storage: pass --storage or set OPTUNA_STORAGE (`. .services/env` after "
                        "`make server`); distributed workers need a database server, not an sqlite file")
    return tune_config(args, storage=storage)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.tune_workers", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    add_tune_arguments(common, storage_help="SQLAlchemy URL ('' = $OPTUNA_STORAGE, preferred: "
                       "a URL on the command line shows its password to `ps`)")
    p_launch = sub.add_parser("launch", parents=[common], help="init + N workers (--n-workers) + summary")
    p_launch.add_argument("--state-dir", default=".services")
    sub.add_parser("init", parents=[common], help="create the study and its MLflow parent run")
    p_worker = sub.add_parser("worker", parents=[common],
                              help="run trials until the parent run's trials hold --target finished ones")
    p_worker.add_argument("--target", type=whole, required=True)
    p_worker.add_argument("--worker-index", type=whole, default=0)
    p_worker.add_argument("--parent-run-id", default="",
                          help="MLflow parent run of the trials ('' = the study's mlflow_parent_run_id)")
    args = parser.parse_args(argv)
    try:
        config = _config(args)
        if args.command == "init":
            study, parent = tune_init(args.dataset, config)
            print(f"tune-workers: study {config.study_name} ({redact(config.storage)}), "
                  f"MLflow parent run {parent}, {n_finished(study)} finished trials")
        elif args.command == "worker":
            n = tune_worker(args.dataset, config, args.target, args.worker_index, args.parent_run_id or None)
            print(f"tune-worker {args.worker_index}: {n} trials")
        else:
            config.check()
            out = launch(config, args.dataset, Path(args.state_dir))
            s = out["summary"]
            print(f"tune-workers: {config.n_workers} workers (exit codes {out['worker_returncodes']}), study "
                  f"{config.study_name}: {s['counts']['n_trials']} trials, target {out['target']} finished "
                  f"{'reached' if out['reached'] else 'NOT reached'}; parent run {out['parent_run_id']}; "
                  f"{len(out['closed_runs'])} runs of failed trials closed")
            if s["best_value"] is not None:
                print(f"tune-workers: best trial {s['best_trial']}: pooled OOF PR-AUC (average precision) "
                      f"{s['best_value']:.4f} with {s['best_params']}")
            return 0 if out["reached"] else 1
    except (TuneError, DataError, StoreError, ValueError) as exc:
        print(f"tune-workers: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
