"""Score stack files with a registered model from the command line.

    python -m pixel_cnn.predict pixdiff_9967771.npy [more.npy ...] [--model-uri URI]

prints one line per file, ``pixdiff_9967771.npy -> p=0.46 FALSE POSITIVE``. With a fusion
model (preset ``fusion``) the star's KOI parameters are looked up in the KOI table
(``--koi-table``, default the data folder's ``koi_cumulative.csv``) by the kepid of the file
name and its first KOI, and the line gives each branch:
``pixdiff_9967771.npy -> p=1.00 CONFIRMED (fused; pixel 0.52, tabular 0.99; KOI K01875.01)``;
``--no-koi`` (or a kepid not in the table) scores the stack alone (``pixel only``). A
file that cannot be scored gets a line ``NAME: error: REASON`` on stderr; the
others are still scored. Exit status: 0 all scored, 1 some file failed, 2 the
model could not be loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_MODEL_URI = "models:/pixel-cnn@champion"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixel_cnn.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="stack files pixdiff_<kepid>.npy")
    parser.add_argument("--model-uri", default=os.environ.get("PIXEL_CNN_MODEL_URI", DEFAULT_MODEL_URI))
    parser.add_argument("--no-koi", action="store_true", help="fusion model: do not look up KOI parameters")
    parser.add_argument("--koi-table", type=Path, default=None,
                        help="KOI cumulative table (default: the data folder's koi_cumulative.csv)")
    args = parser.parse_args(argv)

    from pixel_cnn.io.dataset import DataError, load_stack
    from pixel_cnn.tracking.pyfunc import ModelLoadError, load

    try:
        model = load(args.model_uri)
    except ModelLoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    python_model = model.unwrap_python_model()
    ensemble = python_model.ensemble
    fusion = getattr(python_model, "fusion", None)
    koi = None
    if fusion is not None and not args.no_koi:
        try:
            koi = load_koi(args.koi_table)
        except DataError as exc:
            print(f"KOI table not used: {exc}", file=sys.stderr)
    failed = 0
    for path in args.files:
        try:
            if fusion is not None:
                print(f"{path.name} -> {score_with_koi(fusion, load_stack(path), path, koi)}")
                continue
            out = ensemble.predict_stacks([load_stack(path)]).iloc[0]
        except (DataError, ValueError, OSError) as exc:
            failed += 1
            msg = str(exc)
            print(msg if msg.startswith(path.name) else f"{path.name}: {msg}", file=sys.stderr)
            continue
        print(f"{path.name} -> p={out['probability']:.2f} {out['label']}")
    return 1 if failed else 0


def load_koi(path: Path | None):
    """The KOI table at ``path``, or the data folder's (:func:`pixel_cnn.io.dataset.resolve_data_dir`).

    Raises ``DataError`` when it cannot be read.
    """
    from pixel_cnn.io.dataset import load_koi_table, resolve_data_dir

    return load_koi_table(path if path is not None else resolve_data_dir(None) / "koi_cumulative.csv")


def score_with_koi(fusion, stack, path: Path, koi) -> str:
    """Score one stack with a fusion model (:class:`pixel_cnn.core.combiner.FusionPredictor`).

    The KOI parameters are those of the first KOI (:func:`pixel_cnn.core.tabular.star_koi`) of
    the star whose kepid is in the file name ``pixdiff_<kepid>.npy``; with no table (``koi``
    None), an unparsable name or a kepid not in the table, the stack is scored alone. Returns
    the text after ``NAME -> ``: the answer's probability and label, then each branch.
    """
    import pandas as pd

    from pixel_cnn.core import tabular
    from pixel_cnn.io.dataset import DataError, parse_kepid

    params, koi_name, why = {}, "", "--no-koi" if koi is None else ""
    if koi is not None:
        try:
            first = tabular.star_koi(koi, [parse_kepid(path.name)])
        except DataError:
            first, why = pd.DataFrame(), "no kepid in the file name"
        if len(first):
            row = first.iloc[0]
            params = {k: float(row[k]) for k in tabular.ALLOWED_INPUTS if k in row and pd.notna(row[k])}
            koi_name = str(row["kepoi_name"])
        elif not why:
            why = "kepid not in the KOI table"
    out = fusion.predict([stack], params).iloc[0]
    if out["branch"] == "pixel":
        return f"p={out['probability']:.2f} {out['label']} (pixel only: {why or 'no KOI parameters'})"
    return (f"p={out['probability']:.2f} {out['label']} (fused; pixel {out['pixel_probability']:.2f}, "
            f"tabular {out['tabular_probability']:.2f}; KOI {koi_name})")


if __name__ == "__main__":
    sys.exit(main())
