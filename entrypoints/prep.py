"""Entry point `prep`: validate the stacks (``--source stacks``, the default) or build them from
Target Pixel Files (``--source tpf``, docs/tpf.md), join labels, write and log the dataset.

Exit status: 0 the dataset was written (skipped files, if any, are listed on
stdout and in ``skipped.csv``); 1 ``--strict true`` and at least one file was
skipped (the dataset is still written: the good files go through); 2 nothing
was written: the folder, the KOI table or the labels file is unusable, or an
argument is wrong. The real dataset always has 20 placeholder files, so the
default (``--strict false``) is what ``make cv`` uses. With ``--source tpf``:
2 when no stack could be made; 1 with ``--strict true`` when a target failed
or a stack was skipped by the dataset step.
"""

import argparse
import sys

import pandas as pd

from pixel_cnn.jobs.prep import prep as prep_job, prep_tpf
from pixel_cnn.tracking.stores import StoreError
from pixel_cnn.io.dataset import LABEL_SOURCES, DataError
from pixel_cnn.io.engine import EngineError
from pixel_cnn.io.errors import TPFError

from entrypoints._args import boolean, raw_params, whole


def _ids(text: str) -> list[int]:
    """'' -> [], '757450,892772' -> [757450, 892772]."""
    try:
        return [int(float(t)) for t in text.replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ids") from None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="stacks", choices=("stacks", "tpf"))
    parser.add_argument("--data-dir", default="", help="dataset folder ('' = $PIXEL_CNN_DATA, then ../shared/data/kepler-pixdiff)")
    parser.add_argument("--labels", default="seed", choices=LABEL_SOURCES)
    parser.add_argument("--out-dir", default="data/processed")
    parser.add_argument("--strict", type=boolean, default=False,
                        help="exit 1 when any file is skipped (the dataset is still written)")
    tpf = parser.add_argument_group("source=tpf")
    tpf.add_argument("--tpf-dir", default="", help="folder searched (recursively) for TPF FITS files")
    tpf.add_argument("--ephemeris", default="", help="CSV with KOI (kepid, koi_period, koi_time0bk, koi_duration) or TOI columns")
    tpf.add_argument("--n-jobs", type=whole, default=1, help="worker processes over targets (-1 = all cores)")
    tpf.add_argument("--download", type=boolean, default=False, help="fetch TPFs from MAST first (network)")
    tpf.add_argument("--cache-dir", default="", help="download folder ('' = tpf_dir)")
    tpf.add_argument("--targets", type=_ids, default=[],
                     help="ids to download or to look for (layout mast; '' = every id of the ephemeris)")
    tpf.add_argument("--scheduler", default="", help="Dask scheduler address tcp://HOST:PORT ('' = joblib, --n-jobs)")
    tpf.add_argument("--tpf-layout", default="flat", choices=("flat", "mast"),
                     help="flat: every TPF under tpf_dir; mast: tpf_dir is the root of MAST's bucket layout")
    args = parser.parse_args(argv)
    if args.source == "tpf":
        return _prep_tpf(args, argv)
    try:
        out = prep_job(args.data_dir or None, args.labels, args.out_dir, raw_params(argv))
    except (DataError, StoreError) as exc:
        print(f"prep: {exc}", file=sys.stderr)
        return 2
    counts = out["counts"]
    _print_dataset(out["skipped"], counts, f"{counts['n_skipped']} files skipped; digest {out['digest']} "
                   f"-> {args.out_dir} (run {out['run_id']})")
    if args.strict and counts["n_skipped"]:
        print(f"prep: strict: {counts['n_skipped']} file(s) skipped -> exit 1", file=sys.stderr)
        return 1
    return 0


def _print_dataset(skipped, counts: dict, tail: str, prefix: str = "") -> None:
    """One line per skipped file, then the dataset's class counts and ``tail``."""
    for name, reason in skipped:
        print(f"skipped {name}: {reason}")
    print(f"prep: {prefix}{counts['n_targets']} targets ({counts['n_confirmed']} CONFIRMED, "
          f"{counts['n_false_positive']} FALSE POSITIVE), {tail}")


def _text(value) -> str:
    """A report cell as text ('' for a missing value)."""
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _prep_tpf(args, argv) -> int:
    if not args.ephemeris or not (args.tpf_dir or (args.download and args.cache_dir)):
        print("prep: source=tpf needs ephemeris=CSV and tpf_dir=DIR (or download=true cache_dir=DIR)",
              file=sys.stderr)
        return 2
    try:
        out = prep_tpf(args.tpf_dir, args.ephemeris, args.out_dir, labels=args.labels,
                            data_dir=args.data_dir or None, n_jobs=args.n_jobs, download=args.download,
                            cache_dir=args.cache_dir, targets=args.targets, cli_params=raw_params(argv),
                            scheduler=args.scheduler, tpf_layout=args.tpf_layout)
    except (TPFError, DataError, StoreError, EngineError) as exc:
        print(f"prep: {exc}", file=sys.stderr)
        return 2
    for row in out["report"].to_dict("records"):
        if row["status"] != "ok":
            print(f"failed {row['files'] if pd.isna(row['target_id']) else row['target_id']}: {row['reason']}")
            continue
        for reason in _text(row.get("files_unreadable")).split("; ") if _text(row.get("files_unreadable")) else ():
            print(f"skipped file of {row['target_id']}: {reason}")
        if _text(row.get("epoch_note")):
            print(f"converted epoch of {row['target_id']} ({row['ephemeris']}): {row['epoch_note']}")
    s, engine = out["summary"], out["engine"]
    print(f"prep: engine {engine['engine']} ({engine['n_workers']} workers"
          + (f", scheduler {engine['scheduler']}" if engine["scheduler"] else "") + ")")
    print(f"prep: {s['n_targets_ok']} stacks written to {args.out_dir}/stacks, {s['n_targets_failed']} "
          f"failed (report {args.out_dir}/prep_report.csv); cadences dropped: {s.get('n_dropped_quality', 0)} "
          f"by quality flags, {s.get('n_dropped_nonfinite_time', 0)} non-finite time, "
          f"{s.get('n_dropped_nan_flux', 0)} all-NaN flux (run {out['run_id']})")
    if out["dataset_dir"] is None:
        print(f"prep: {out['chain_note']}")
    else:
        _print_dataset(out["skipped"], out["counts"], f"digest {out['digest']}; cv with "
                       f"-P dataset={out['dataset_dir']}", prefix=f"dataset {out['dataset_dir']}: ")
    if not s["n_targets_ok"]:
        return 2
    if args.strict and (s["n_targets_failed"] or out["skipped"]):
        print("prep: strict: a target failed or a stack was skipped -> exit 1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
