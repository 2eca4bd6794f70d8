"""Print the served model's pip requirements, one a line (``make wheelhouse`` downloads them).

Exactly what :func:`pixel_cnn.tracking.served.pip_requirements` gives ``log_model``: the
resolved set from ``constraints.txt``, the CPU torch, platform markers
(:mod:`pixel_cnn.tracking.requirements`). Exit 1 with the message when a needed package has no pin.
"""

from __future__ import annotations

import sys

from pixel_cnn.tracking.served import pip_requirements
from pixel_cnn.tracking.requirements import RequirementsError


def main() -> int:
    try:
        print("\n".join(pip_requirements()))
    except RequirementsError as exc:
        print(f"model requirements: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
