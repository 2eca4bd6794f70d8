"""``make server``: PostgreSQL + SeaweedFS (S3) + ``mlflow server`` on loopback (see docs/services.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ops.services import DEFAULT_DIR, MODES, WEED_PORTS, Config, ServiceError, env_lines, read_state, start, status, stop


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.services", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--dir", default=DEFAULT_DIR, help="state, data and logs (default .services)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--s3-port", type=int, default=8333)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--weed-ports", default="", help="'free', or master,volume,filer,admin http ports")
    parser.add_argument("--bucket", default="pixel-cnn")
    parser.add_argument("--artifacts", choices=MODES, default="proxied")
    parser.add_argument("--workers", type=int, default=2, help="mlflow server workers")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    try:
        if args.command == "start":
            weed = {}
            if args.weed_ports == "free":
                weed = {"free": True}
            elif args.weed_ports:
                weed = dict(zip(WEED_PORTS, map(int, args.weed_ports.split(","))))
            cfg = Config(root=root, host=args.host, pg_port=args.pg_port, s3_port=args.s3_port,
                         mlflow_port=args.mlflow_port, weed_ports=weed, bucket=args.bucket,
                         mode=args.artifacts, workers=args.workers)
            state = start(cfg)
            print(f"stack up from {state['root']}: PostgreSQL :{state['ports']['postgres']}, "
                  f"SeaweedFS S3 :{state['ports']['s3']} (bucket {state['bucket']}), "
                  f"mlflow server {state['tracking_uri']} ({state['mode']} artifacts); logs in {root}/logs",
                  file=sys.stderr)
            print(env_lines(state), end="")
            print(f"# written to {root / 'env'}: `. {root / 'env'}`", file=sys.stderr)
        elif args.command == "stop":
            done = stop(root)
            print("stopped: " + (", ".join(f"{k} ({'was running' if v else 'not running'})"
                                          for k, v in done.items()) or f"nothing recorded in {root}"))
        elif args.command == "status":
            st = status(root)
            print("\n".join(f"{k}: {'up' if v else 'down'}" for k, v in st.items()) or f"nothing recorded in {root}")
            return 0 if st and all(st.values()) else 1
        else:
            state = read_state(root)
            if state is None:
                raise ServiceError(f"no stack recorded in {root}")
            print(env_lines(state), end="")
    except ServiceError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
