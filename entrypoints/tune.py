"""Entry point `tune`: an Optuna study of cv (pooled out-of-fold PR-AUC), tracked in MLflow."""

import argparse
import sys

from pixel_cnn.evaluation.cv import CVError
from pixel_cnn.io.dataset import DataError
from pixel_cnn.jobs.tune import tune as tune_job
from pixel_cnn.search.tuning import TuneError
from pixel_cnn.tracking.stores import StoreError

from entrypoints._args import add_tune_arguments, boolean, raw_params, tune_config


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    add_tune_arguments(parser, storage_help="SQLAlchemy URL ('' = sqlite:///optuna.db here)")
    parser.add_argument("--register-best", type=boolean, default=False,
                        help="cv the best params again and register them as pixel-cnn@challenger")
    parser.add_argument("--run-name", default="",
                        help="name of the parent run ('' = after what it is; `mlflow run --run-name` is kept)")
    args = parser.parse_args(argv)
    try:
        config = tune_config(args)
        out = tune_job(args.dataset, config, register_best=args.register_best,
                       cli_params=raw_params(argv, drop=("run_name",)), run_name=args.run_name or None)
    except (DataError, CVError, TuneError, ValueError, StoreError) as exc:
        print(f"tune: {exc}", file=sys.stderr)
        return 2
    c = out["counts"]
    print(f"tune {out['study_name']} ({out['storage']}): this run {c['run_trials']} trials "
          f"({c['run_trials_complete']} complete, {c['run_trials_pruned']} pruned) by {config.n_workers} "
          f"worker(s); study {c['n_trials']} trials; {out['wall_s']:.1f} s, parent run {out['run_id']}")
    if out["best_value"] is not None:
        print(f"tune: best trial {out['best_trial']}: pooled OOF PR-AUC (average precision) "
              f"{out['best_value']:.4f} with {out['best_params']}")
    if "registered" in out:
        r = out["registered"]
        print(f"tune: best params re-cross-validated (run {r['run_id']}): OOF PR-AUC "
              f"{r['pr_auc_oof']:.4f}, registered pixel-cnn version {r['version']} @challenger")
    return 0


if __name__ == "__main__":
    sys.exit(main())
