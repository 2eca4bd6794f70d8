"""Score stack files with a registered model from the command line.

    python -m pixel_cnn.predict pixdiff_9967771.npy [more.npy ...] [--model-uri URI]

prints one line per file, ``pixdiff_9967771.npy -> p=0.46 FALSE POSITIVE``. A
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


def load_model(model_uri: str):
    """Load a pyfunc model; raises SystemExit(2) with a one-line message naming the URI."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        tracking = mlflow.get_tracking_uri()
        raise SystemExit(f"cannot load model {model_uri!r} (tracking store {tracking}): {first}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixel_cnn.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="stack files pixdiff_<kepid>.npy")
    parser.add_argument("--model-uri", default=os.environ.get("PIXEL_CNN_MODEL_URI", DEFAULT_MODEL_URI))
    args = parser.parse_args(argv)

    from pixel_cnn.data import DataError, load_stack

    try:
        model = load_model(args.model_uri)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    ensemble = model.unwrap_python_model().ensemble
    failed = 0
    for path in args.files:
        try:
            out = ensemble.predict_stacks([load_stack(path)]).iloc[0]
        except (DataError, ValueError, OSError) as exc:
            failed += 1
            msg = str(exc)
            print(msg if msg.startswith(path.name) else f"{path.name}: {msg}", file=sys.stderr)
            continue
        print(f"{path.name} -> p={out['probability']:.2f} {out['label']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
