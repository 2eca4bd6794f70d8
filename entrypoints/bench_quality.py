"""Entry point `bench_quality`: the seed, phase, phase2 presets, the tabular branch alone and the fusion
vetter on the same folds, honest protocol.

Prints the table and writes it as JSON (``--out``); logs one MLflow run with
the table's metrics and the JSON.
"""

import argparse
import sys
from pathlib import Path

from pixel_cnn.jobs.bench import bench_quality
from pixel_cnn.evaluation.cv import INNER_FOLDS, CVError
from pixel_cnn.io.dataset import DataError

from entrypoints._args import add_cv_arguments, raw_params, whole


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    add_cv_arguments(parser, preset=False)
    parser.add_argument("--presets", default="seed,phase,phase2,tabular,fusion",
                        help="comma-separated preset names; tabular = the tabular branch of the fusion cv")
    parser.add_argument("--repeats", type=whole, default=5)
    parser.add_argument("--inner-folds", type=whole, default=INNER_FOLDS)
    parser.add_argument("--out", default="bench/results/quality.json", help="JSON output file")
    args = parser.parse_args(argv)
    presets = tuple(p.strip() for p in args.presets.split(",") if p.strip())
    try:
        bench, table = bench_quality(args.dataset, presets, n_folds=args.n_folds, seed=args.seed,
                                          repeats=args.repeats, inner_folds=args.inner_folds,
                                          out=args.out, cli_params=raw_params(argv))
    except (DataError, CVError, ValueError) as exc:
        print(f"bench_quality: {exc}", file=sys.stderr)
        return 2
    print(table)
    print(f"bench_quality: wrote {Path(args.out)}; MLflow run {bench['run_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
