"""Entry point `prep`: validate the stacks, join labels, write and log the dataset.

Exit status: 0 the dataset was written (skipped files, if any, are listed on
stdout and in ``skipped.csv``); 1 ``--strict true`` and at least one file was
skipped (the dataset is still written: the good files go through); 2 nothing
was written: the folder, the KOI table or the labels file is unusable, or an
argument is wrong. The real dataset always has 20 placeholder files, so the
default (``--strict false``) is what ``make cv`` uses.
"""

import argparse
import sys

from pixel_cnn import jobs
from pixel_cnn.data import LABEL_SOURCES, DataError

from entrypoints._args import boolean, raw_params


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="", help="dataset folder ('' = $PIXEL_CNN_DATA, then ../shared/data/kepler-pixdiff)")
    parser.add_argument("--labels", default="seed", choices=LABEL_SOURCES)
    parser.add_argument("--out-dir", default="data/processed")
    parser.add_argument("--strict", type=boolean, default=False,
                        help="exit 1 when any file is skipped (the dataset is still written)")
    args = parser.parse_args(argv)
    try:
        out = jobs.prep(args.data_dir or None, args.labels, args.out_dir, raw_params(argv))
    except DataError as exc:
        print(f"prep: {exc}", file=sys.stderr)
        return 2
    counts = out["counts"]
    for name, reason in out["skipped"]:
        print(f"skipped {name}: {reason}")
    print(f"prep: {counts['n_targets']} targets ({counts['n_confirmed']} CONFIRMED, "
          f"{counts['n_false_positive']} FALSE POSITIVE), {counts['n_skipped']} files skipped; "
          f"digest {out['digest']} -> {args.out_dir} (run {out['run_id']})")
    if args.strict and counts["n_skipped"]:
        print(f"prep: strict: {counts['n_skipped']} file(s) skipped -> exit 1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
