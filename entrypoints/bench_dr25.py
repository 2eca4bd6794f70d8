"""Entry point `bench_dr25`: the tabular branch beside ExoMiner on its own DR25 folds (issue 20).

ExoMiner's 30,612 DR25 TCEs (PC against AFP + NTP), their ``tce_*`` measurements mapped to the
tabular branch's inputs; trained and tested on ExoMiner's ten folds, then grouped by star, then
without the period features. Prints recall at precision 0.99 beside ExoMiner's 0.936, PR-AUC
(average precision) and ROC-AUC; one MLflow run; JSON to ``--out`` and a Markdown table beside it.
"""

import argparse
import sys

from pixel_cnn.io.dataset import DataError
from pixel_cnn.tracking.stores import StoreError

from entrypoints._args import raw_params, whole


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dr25-dir", default="", help="DR25 folder ('' = kepler-dr25-tce beside the KOI data)")
    parser.add_argument("--seed", type=whole, default=42)
    parser.add_argument("--n-boot", type=whole, default=1000, help="bootstrap resamples of the intervals")
    parser.add_argument("--protocols", default="", help="comma-separated (default: all of branches.dr25.PROTOCOLS)")
    parser.add_argument("--out", default="bench/results/dr25.json", help="JSON output file")
    args = parser.parse_args(argv)
    from pixel_cnn.jobs.bench import bench_dr25

    protocols = tuple(p.strip() for p in args.protocols.split(",") if p.strip()) or None
    try:
        s = bench_dr25(args.dr25_dir or None, seed=args.seed, n_boot=args.n_boot, out=args.out,
                       protocols=protocols, cli_params=raw_params(argv))
    except (DataError, StoreError, ValueError) as exc:
        print(f"bench_dr25: {exc}", file=sys.stderr)
        return 2
    print(s["table"])
    print(f"bench_dr25: run {s['run_id']}, {s['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
