"""Check a model URI against the tracking store before anything loads or serves it.

    python -m entrypoints.check_model models:/pixel-cnn@champion

prints ``models:/pixel-cnn@champion -> pixel-cnn version 3 (fusion, pooled OOF PR-AUC ...)`` and exits 0, or
one line naming the unknown model, alias or version on stderr and exits 2.
``make serve`` runs it first, so a typo never ends in an MLflow traceback.
"""

from __future__ import annotations

import sys

from pixel_cnn.tracking.registry import ModelURIError, check_model_uri


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m entrypoints.check_model MODEL_URI", file=sys.stderr)
        return 2
    try:
        print(f"{argv[0]} -> {check_model_uri(argv[0])}")
    except ModelURIError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
