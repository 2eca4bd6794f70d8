"""Score stack files and folders with a registered model from the command line.

    python -m pixel_cnn.predict PATH [PATH ...] [--out results.csv] [--sheets DIR] [--model-uri URI]
                                [--scheduler tcp://HOST:PORT | --n-jobs N]

PATH is a stack file ``pixdiff_<kepid>.npy`` or a folder (every ``*.npy`` below it).
Prints one line per file, ``pixdiff_9967771.npy -> p=0.46 FALSE POSITIVE``; a file
that cannot be scored gets ``NAME: REASON`` on stderr and the others are still
scored. ``--out`` writes the table (one row per file: kepid, file, status, the
model's probabilities, label and threshold, the vetting statistics, the reason of
a skipped file); ``--sheets`` writes one vetting sheet (PNG) per scored stack.
The logic is :mod:`pixel_cnn.scoring`.

The tracking store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the
checkout's ``mlflow.db`` when it exists (so the command works from any directory),
else MLflow's default. Exit status: 0 every file scored, 1 some file or path was
skipped or some vetting sheet could not be written, 2 the model could not be loaded, the ``--koi-table`` given cannot be read,
or nothing was given to score. Files follow the dataset's own rule for missing pixels
(NaN read as 0, as prep does); the served model refuses NaN instead.
With ``--scheduler`` (a Dask cluster, ``make dask``) or ``--n-jobs N`` (joblib processes)
the stacks are scored in chunks on the workers, each loading the model once (the alias
resolved to one version first); the table is the same bytes as in one process.
A star the model was trained on is marked ``in_training_set``: its score is
in-sample (the out-of-fold scores are in the cv run's ``oof_predictions.csv``).

With a fusion model (preset ``fusion``) the star's KOI parameters are looked up in the
KOI table (``--koi-table``, default the data folder's ``koi_cumulative.csv``) by the kepid
of the file name and its first KOI, and each line gives every branch:
``pixdiff_9967771.npy -> p=1.00 CONFIRMED (fused; pixel 0.52, tabular 0.99; KOI K01875.01)``;
``--no-koi`` (or a kepid not in the table) scores the stack alone (``pixel only``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

CHECKOUT_STORE = Path(__file__).resolve().parents[1] / "mlflow.db"


def default_tracking_uri() -> str | None:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<checkout>/mlflow.db`` if that file exists, else None."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{CHECKOUT_STORE}" if CHECKOUT_STORE.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixel_cnn.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="stack files pixdiff_<kepid>.npy and/or folders")
    parser.add_argument("--model-uri", default=os.environ.get("PIXEL_CNN_MODEL_URI"),
                        help="registered model (default: $PIXEL_CNN_MODEL_URI, else models:/pixel-cnn@champion)")
    parser.add_argument("--no-koi", action="store_true", help="fusion model: do not look up KOI parameters")
    parser.add_argument("--koi-table", type=Path, default=None,
                        help="KOI cumulative table (default: the data folder's koi_cumulative.csv)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking store (see above)")
    parser.add_argument("--out", type=Path, default=None, help="write the table of every file as CSV here")
    parser.add_argument("--sheets", type=Path, default=None, help="write a vetting sheet PNG per stack here")
    parser.add_argument("--quiet", action="store_true", help="no per-file lines, no progress bar")
    parser.add_argument("--scheduler", default="",
                        help="Dask scheduler tcp://HOST:PORT: chunks scored on its workers ('' = this process)")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="without --scheduler: joblib worker processes over chunks (1 = this process)")
    args = parser.parse_args(argv)

    uri = args.tracking_uri or default_tracking_uri()
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    from pixel_cnn import scoring
    from pixel_cnn.io.dataset import DataError
    from pixel_cnn.tracking.registry import CHAMPION_URI, ModelLoadError, ModelURIError, check_model_uri, description, load

    model_uri = args.model_uri or CHAMPION_URI
    try:
        model = load(model_uri)
        label = f"{model_uri} = {check_model_uri(model_uri)}" if model_uri.startswith("models:/") else model_uri
    except (ModelLoadError, ModelURIError) as exc:
        print(exc, file=sys.stderr)
        return 2

    def show(row: dict) -> None:
        if row["status"] == "scored":
            if not args.quiet:
                scoring.tqdm.write(line(row), file=sys.stdout)
            if row["reason"]:
                scoring.tqdm.write(f"{row['file']}: {row['reason']}", file=sys.stderr)
        else:
            scoring.tqdm.write(f"{row['file']}: {row['reason']}", file=sys.stderr)

    koi, note = None, "--no-koi"
    if not args.no_koi and description(model).get("parameters"):  # the model reads KOI parameters
        try:
            koi = load_koi(args.koi_table)
        except DataError as exc:
            if args.koi_table is not None:  # asked for by name: refuse rather than score without it
                print(f"--koi-table: {exc}", file=sys.stderr)
                return 2
            note = "no KOI table"
            print(f"KOI table not used: {exc}", file=sys.stderr)
    if args.scheduler or args.n_jobs != 1:
        from pixel_cnn.io.engine import Engine, EngineError
        from pixel_cnn.tracking.registry import pinned_uri, tracking_uri

        try:
            with Engine(args.scheduler, args.n_jobs) as engine:
                print(f"scoring on {engine.name} ({engine.n_workers} workers)", file=sys.stderr)
                report = scoring.score_catalogue(args.paths, pinned_uri(model_uri), engine, koi, note,
                                                 sheets_dir=args.sheets, progress=not args.quiet, on_row=show,
                                                 tracking_uri=tracking_uri(), label=label)
        except (EngineError, ModelLoadError) as exc:
            print(exc, file=sys.stderr)
            return 2
    else:
        report = scoring.score_paths(args.paths, scoring.ModelScorer(model, koi, note, label=label),
                                     sheets_dir=args.sheets, progress=not args.quiet, on_row=show)
    if args.out is not None:
        scoring.write_table(report.table, args.out)
    if len(report.table) == 0:
        print("nothing to score", file=sys.stderr)
        return 2
    if args.out is not None or args.sheets is not None:
        where = [f"table {args.out}"] if args.out is not None else []
        where += [f"{len(report.sheets)} sheets in {args.sheets}"] if args.sheets is not None else []
        print(f"{report.n_scored} scored, {report.n_skipped} skipped; " + ", ".join(where), file=sys.stderr)
    missing_sheets = report.n_scored - len(report.sheets) if args.sheets is not None else 0
    if missing_sheets:
        print(f"{missing_sheets} vetting sheet(s) could not be written to {args.sheets} (each named above)",
              file=sys.stderr)
    return 1 if report.n_skipped or missing_sheets else 0


def load_koi(path: Path | None):
    """The KOI table at ``path``, or the data folder's (:func:`pixel_cnn.io.dataset.resolve_data_dir`), joined
    with the DV diagnostics beside it when they are there (:func:`pixel_cnn.io.koi.load_koi_with_dv`).

    Raises ``DataError`` when it cannot be read.
    """
    from pixel_cnn.io.dataset import koi_table_path
    from pixel_cnn.io.koi import load_koi_with_dv

    return load_koi_with_dv(koi_table_path(path), require_dv=False)


def line(row: dict) -> str:
    """``NAME -> p=0.88 CONFIRMED``, with each branch for a fusion model's answer."""
    text = f"{row['file']} -> p={row['probability']:.2f} {row['label']}"
    branch = row.get("branch")
    if branch == "fused":
        text += (f" (fused; pixel {row['pixel_probability']:.2f}, tabular {row['tabular_probability']:.2f}"
                 + (f"; KOI {row['koi']}" if row.get("koi") else "") + ")")
    elif branch == "pixel":
        text += f" (pixel only: {row.get('koi_note') or 'no KOI parameters'})"
    return text


if __name__ == "__main__":
    sys.exit(main())
