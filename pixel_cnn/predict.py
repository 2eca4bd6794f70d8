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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixel_cnn.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="stack files pixdiff_<kepid>.npy")
    parser.add_argument("--model-uri", default=os.environ.get("PIXEL_CNN_MODEL_URI", DEFAULT_MODEL_URI))
    args = parser.parse_args(argv)

    from pixel_cnn.io.dataset import DataError, load_stack
    from pixel_cnn.tracking.pyfunc import ModelLoadError, load

    try:
        model = load(args.model_uri)
    except ModelLoadError as exc:
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
