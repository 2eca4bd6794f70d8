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
from pixel_cnn.jobs.tune import tune_init, tune_worker
from pixel_cnn.search import tuning
from pixel_cnn.vetter.networks import DEFAULT_PRESET
from pixel_cnn.search.tuning import TuneConfig, TuneError
from pixel_cnn.io.dataset import DataError
from pixel_cnn.tracking.stores import StoreError


def _config(args) -> TuneConfig:
    storage = args.storage or os.environ.get("OPTUNA_STORAGE", "")
    if not storage:
        raise TuneError("no Optuna storage: pass --storage or set OPTUNA_STORAGE (`. .services/env` after "
                        "`make server`); distributed workers need a database server, not an sqlite file")
    return TuneConfig(preset=args.preset, n_folds=args.n_folds, seed=args.seed,
                      n_trials=getattr(args, "n_trials", 1), timeout=args.timeout or None,
                      storage=storage, study_name=args.study_name,
                      n_workers=1, pruner=args.pruner, max_epochs=args.max_epochs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.tune_workers", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dataset", default="data/processed", help="prep output folder or runs:/<prep run>/dataset")
    common.add_argument("--storage", default="", help="SQLAlchemy URL ('' = $OPTUNA_STORAGE, preferred: "
                        "a URL on the command line shows its password to `ps`)")
    common.add_argument("--study-name", default="pixel-cnn")
    common.add_argument("--preset", default=DEFAULT_PRESET)
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
            study, parent = tune_init(args.dataset, config)
            print(f"tune-workers: study {config.study_name} ({tuning.redact(config.storage)}), "
                  f"MLflow parent run {parent}, {tuning.n_finished(study)} finished trials")
        elif args.command == "worker":
            n = tune_worker(args.dataset, config, args.target, args.worker_index)
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
