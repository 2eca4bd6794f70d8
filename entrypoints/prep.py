"""Entry point `prep`: validate the stacks, join labels, write and log the dataset."""

import argparse
import sys

from pixel_cnn import jobs
from pixel_cnn.stores import StoreError
from pixel_cnn.data import LABEL_SOURCES, DataError

from entrypoints._args import raw_params


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="", help="dataset folder ('' = $PIXEL_CNN_DATA, then ../shared/data/kepler-pixdiff)")
    parser.add_argument("--labels", default="seed", choices=LABEL_SOURCES)
    parser.add_argument("--out-dir", default="data/processed")
    args = parser.parse_args(argv)
    try:
        out = jobs.prep(args.data_dir or None, args.labels, args.out_dir, raw_params(argv))
    except (DataError, StoreError) as exc:
        print(f"prep: {exc}", file=sys.stderr)
        return 2
    counts = out["counts"]
    for name, reason in out["skipped"]:
        print(f"skipped {name}: {reason}")
    print(f"prep: {counts['n_targets']} targets ({counts['n_confirmed']} CONFIRMED, "
          f"{counts['n_false_positive']} FALSE POSITIVE), {counts['n_skipped']} files skipped; "
          f"digest {out['digest']} -> {args.out_dir} (run {out['run_id']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
