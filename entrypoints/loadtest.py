"""``make load``: drive a running served model with real stacks and report latency percentiles.

    python -m entrypoints.loadtest http://127.0.0.1:5001 --requests 2000 --concurrency 8 --out load.json

Loopback only; exit 1 when any request failed. The generator is :mod:`ops.loadtest`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ops.loadtest import run_load, stack_bodies
from pixel_cnn.io.dataset import prepare_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="base URL of the served model, e.g. http://127.0.0.1:5001")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=1, help="stacks per request")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: the shared one)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)

    stacks = prepare_dataset(args.data_dir, "seed").stack_list()
    result = run_load(args.url, stack_bodies(stacks, args.per_request), args.requests, args.concurrency)
    text = json.dumps(result.to_dict(), indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0 if result.n_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
