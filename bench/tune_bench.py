"""Benchmark: tuning throughput with and without pruning (not a test).

Runs the same study twice through the whole tune job (Optuna + cv + MLflow
logging), once with the median pruner and once without, each on a fresh
sqlite Optuna storage and a fresh sqlite MLflow store in a temporary folder,
same seed. Prints and writes JSON with::

    tune_trials_per_min_pruned     trials per minute, MedianPruner
    tune_trials_per_min_unpruned   trials per minute, no pruner
    tune_wall_s_pruned / _unpruned wall time of the study (s)
    tune_wall_time_cut             1 - wall_pruned / wall_unpruned
    tune_best_value_pruned / _unpruned   best pooled OOF PR-AUC (average precision)
    tune_n_pruned                  trials the pruner stopped

Usage (from the project root; ``bench/bench.py``, i.e. ``make bench``, calls it too)::

    .venv/bin/python bench/tune_bench.py [--dataset data/processed] [--n-trials 20] [--threads 1]
    .venv/bin/python bench/tune_bench.py --quick     # 8 trials, 3 folds, max 8 epochs

Without ``--dataset`` the benchmark set is prepared from the shared data folder
into the temporary folder first (not timed).

Timings depend on the machine and its load: report them with the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def run_one(dataset: str, pruner: str, args, tmp: Path) -> dict:
    """One study in this (fresh, spawned) process; returns its timing and outcome."""
    import mlflow

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)

    from pixel_cnn.jobs.tune import tune as tune_job
    from pixel_cnn.search.tuning import TuneConfig

    store = tmp / pruner
    store.mkdir()
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    config = TuneConfig(n_folds=args.n_folds, seed=args.seed, n_trials=args.n_trials,
                        storage=f"sqlite:///{store / 'optuna.db'}", study_name=f"bench-{pruner}",
                        pruner=pruner, max_epochs=args.max_epochs, n_workers=args.n_workers)
    cwd = os.getcwd()
    os.chdir(store)  # ./mlruns of the throwaway store lands here
    try:
        start = time.perf_counter()
        out = tune_job(str(Path(cwd, dataset).resolve()), config)
        wall = time.perf_counter() - start
    finally:
        os.chdir(cwd)
        mlflow.set_tracking_uri(None)
    import optuna

    study = optuna.load_study(study_name=config.study_name, storage=config.storage)
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "folds_run": (t.last_step or 0) + 1,
               "epochs": t.params.get("epochs")} for t in study.trials]
    n = out["counts"]["run_trials"]
    return {"wall_s": wall, "trials_per_min": 60.0 * n / wall, "best_value": out["best_value"],
            "n_trials": n, "n_pruned": out["counts"]["run_trials_pruned"], "trials": trials}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="", help="prep output folder ('' = prepare the shared data)")
    parser.add_argument("--quick", action="store_true", help="small study: 8 trials, 3 folds, max 8 epochs")
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--n-workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0 = torch's default); 1 avoids oversubscription on a busy machine")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "tune.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n_trials, args.n_folds, args.max_epochs = 8, 3, 8
    load = os.getloadavg()[0]
    # Each study in its own spawned process: fresh MLflow client state, no shared torch threads.
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp, \
            ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
        if not args.dataset:
            from pixel_cnn.io.dataset import prepare_dataset, write_dataset

            args.dataset = str(write_dataset(prepare_dataset(None, "seed"), Path(tmp) / "processed"))
        unpruned = pool.submit(run_one, args.dataset, "none", args, Path(tmp)).result()
        pruned = pool.submit(run_one, args.dataset, "median", args, Path(tmp)).result()
    result = {
        "tune_trials_per_min_pruned": round(pruned["trials_per_min"], 3),
        "tune_trials_per_min_unpruned": round(unpruned["trials_per_min"], 3),
        "tune_wall_s_pruned": round(pruned["wall_s"], 1),
        "tune_wall_s_unpruned": round(unpruned["wall_s"], 1),
        "tune_wall_time_cut": round(1 - pruned["wall_s"] / unpruned["wall_s"], 3),
        "tune_best_value_pruned": pruned["best_value"],
        "tune_best_value_unpruned": unpruned["best_value"],
        "tune_n_pruned": pruned["n_pruned"],
        "trials_pruned": pruned["trials"],
        "trials_unpruned": unpruned["trials"],
        "config": {"n_trials": args.n_trials, "n_folds": args.n_folds, "max_epochs": args.max_epochs,
                   "n_workers": args.n_workers, "seed": args.seed, "threads": args.threads or "default",
                   "cpu_count": os.cpu_count(), "load_avg_1min_at_start": round(load, 2)},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
