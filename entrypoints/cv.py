"""Entry point `cv`: grouped k-fold cross-validation of a preset, tracked in MLflow."""

import argparse
import sys

from pixel_cnn.jobs.cv import cv as cv_job
from pixel_cnn.evaluation.cv import INNER_FOLDS, CVError
from pixel_cnn.branches.vetters import CV_DEFAULT as CV_DEFAULT_PRESET
from pixel_cnn.tracking.stores import StoreError
from pixel_cnn.io.dataset import DataError

from entrypoints._args import add_cv_arguments, boolean, optional_float, optional_int, raw_params, whole


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    add_cv_arguments(parser, default_preset=CV_DEFAULT_PRESET)
    parser.add_argument("--repeats", type=whole, default=1)
    parser.add_argument("--inner-folds", type=whole, default=INNER_FOLDS,
                        help="inner grouped folds that choose each fold's threshold (0: fixed 0.5)")
    parser.add_argument("--register", type=boolean, default=False)
    parser.add_argument("--alias", default="auto",
                        help="auto: @champion only for make cv's default run (or no champion yet), else "
                             "@challenger; champion: through the promotion gate; none: no alias; or a name")
    # Overrides of the preset ('' keeps the preset's value).
    parser.add_argument("--lr", type=optional_float, default=None)
    parser.add_argument("--dropout", type=optional_float, default=None)
    parser.add_argument("--weight-decay", type=optional_float, default=None)
    parser.add_argument("--epochs", type=optional_int, default=None)
    parser.add_argument("--batch-size", type=optional_int, default=None)
    parser.add_argument("--base-channels", type=optional_int, default=None,
                        help="conv widths (b, 2b, 4b); '' keeps the preset's")
    parser.add_argument("--run-name", default="",
                        help="name of the parent run ('' = after what it is; `mlflow run --run-name` is kept)")
    args = parser.parse_args(argv)
    overrides = {"lr": args.lr, "dropout": args.dropout, "weight_decay": args.weight_decay,
                 "epochs": args.epochs, "batch_size": args.batch_size,
                 "base_channels": args.base_channels}
    try:
        result, info = cv_job(args.dataset, args.preset, overrides, n_folds=args.n_folds,
                               seed=args.seed, repeats=args.repeats, inner_folds=args.inner_folds,
                               register=args.register,
                               alias=args.alias, cli_params=raw_params(argv, drop=("run_name",)),
                               run_name=args.run_name or None)
    except (DataError, CVError, ValueError, StoreError) as exc:
        print(f"cv: {exc}", file=sys.stderr)
        return 2
    s = result.summary
    print(f"cv {result.vetter}: PR-AUC (average precision) {s['pr_auc_mean']:.3f} +/- {s['pr_auc_std']:.3f} "
          f"(fold mean +/- std), {s['pr_auc_oof']:.3f} pooled OOF; ROC-AUC {s['roc_auc_mean']:.3f} +/- "
          f"{s['roc_auc_std']:.3f}, {s['roc_auc_oof']:.3f} OOF; PR-AUC 95% bootstrap interval "
          f"{s['pr_auc_oof_ci_low']:.3f}-{s['pr_auc_oof_ci_high']:.3f}; F1 {s['f1_oof']:.3f} and Brier "
          f"{s['brier_oof']:.3f} OOF; threshold {s['threshold']:.3f} (from training folds)")
    if result.combiner is not None:  # several branches: side by side
        print("cv branches (pooled OOF): " + "; ".join(
            f"{b} PR-AUC {s[f'pr_auc_oof_{b}']:.3f} ROC-AUC {s[f'roc_auc_oof_{b}']:.3f}"
            for b in [*(br.name for br in result.branches), "fused"]))
    reg = info.get("registration")
    if reg:
        where = f"registered pixel-cnn version {reg['version']}" + (f" @{reg['alias']}" if reg["alias"] else "")
        champion = f"@champion is version {reg['champion']}" if reg["champion"] else "no @champion"
        note = f"cv: {reg['reason']}" + ("" if "stays version" in reg["reason"] else f"; {champion}")
    else:
        where, note = "not registered (register=false)", ""
    print(f"cv: run {info['run_id']}, model {info['model_uri']}, {where}; {info['wall_s']:.1f} s")
    if note:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
