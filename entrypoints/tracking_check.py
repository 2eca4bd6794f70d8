"""``make tracking-check``: exit 2 with the reason when ``MLFLOW_TRACKING_URI`` is unreachable; create a fresh
sqlite store once, under a file lock, before ``mlflow run`` creates its run (see ``pixel_cnn.tracking.stores.init_store``)."""

from __future__ import annotations

import os
import sys

from pixel_cnn.tracking.stores import StoreError, check_tracking, init_store


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        print("usage: python -m entrypoints.tracking_check", file=sys.stderr)
        return 2
    try:
        uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        check_tracking(uri)
        if uri:
            init_store(uri)
    except StoreError as exc:
        print(f"tracking: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
