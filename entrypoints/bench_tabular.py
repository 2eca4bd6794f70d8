"""Entry point `bench_tabular`: the tabular branch's grouped, stratified k-fold cv over every
labelled KOI of the KOI table (about 7,600), with bootstrap intervals; one MLflow run.

Prints average precision (PR-AUC), ROC-AUC and recall at precision 0.99 and 0.95, each with
its 95 % bootstrap interval over stars, and writes them as JSON (``--out``).
"""

import argparse
import sys

from pixel_cnn.jobs.bench import bench_tabular
from pixel_cnn.io.dataset import DataError
from pixel_cnn.tracking.stores import StoreError

from entrypoints._args import raw_params, whole


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="", help="data folder ('' = $PIXEL_CNN_DATA or the shared one)")
    parser.add_argument("--n-folds", type=whole, default=5)
    parser.add_argument("--seed", type=whole, default=42)
    parser.add_argument("--n-boot", type=whole, default=1000, help="bootstrap resamples of the intervals")
    parser.add_argument("--out", default="bench/results/tabular.json", help="JSON output file")
    args = parser.parse_args(argv)
    try:
        s = bench_tabular(args.data_dir or None, n_folds=args.n_folds, seed=args.seed, n_boot=args.n_boot,
                               out=args.out, cli_params=raw_params(argv))
    except (DataError, StoreError, ValueError) as exc:
        print(f"bench_tabular: {exc}", file=sys.stderr)
        return 2
    print(f"bench_tabular: {s['n_kois']} labelled KOIs of {s['n_stars']} stars ({s['n_confirmed']} CONFIRMED), "
          f"grouped {args.n_folds}-fold cv; pooled OOF, 95% bootstrap interval over stars:")
    for name, label in (("pr_auc", "PR-AUC (average precision)"), ("roc_auc", "ROC-AUC"),
                        ("recall_at_p99", "recall at precision 0.99"), ("recall_at_p95", "recall at precision 0.95")):
        print(f"  {label}: {s[name]:.3f} ({s[name + '_ci_low']:.3f} - {s[name + '_ci_high']:.3f}); "
              f"fold mean {s[name + '_fold_mean']:.3f} +/- {s[name + '_fold_std']:.3f}")
    print(f"bench_tabular: run {s['run_id']}, KOI table digest {s['koi_table_digest']}, {s['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
