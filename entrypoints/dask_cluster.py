"""``make dask``: a Dask scheduler and N workers as separate processes on loopback (see docs/scaling.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ops.dask_cluster import DASHBOARD_PORT, DEFAULT_DIR, SCHEDULER_PORT, ClusterConfig, read_state, start, status, stop
from ops.services import ServiceError, status_lines, stopped_line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.dask_cluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "address"])
    parser.add_argument("--dir", default=DEFAULT_DIR, help="state and logs (default .services/dask)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--port", type=int, default=SCHEDULER_PORT, help="scheduler port (0 = a free one)")
    parser.add_argument("--dashboard-port", type=int, default=DASHBOARD_PORT, help="dashboard port (0 = a free one)")
    parser.add_argument("--memory-limit", default="4GiB", help="per worker (its nanny restarts it above)")
    parser.add_argument("--tls", choices=["auto", "on", "off"], default="auto",
                        help="mutual TLS (auto: on exactly when --host is beyond loopback; off beyond loopback is refused)")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    try:
        if args.command == "start":
            state = start(ClusterConfig(root=root, host=args.host, n_workers=args.workers, scheduler_port=args.port,
                                        dashboard_port=args.dashboard_port, memory_limit=args.memory_limit,
                                        tls={"auto": None, "on": True, "off": False}[args.tls]))
            print(f"Dask scheduler {state['address']} with {args.workers} workers; "
                  f"dashboard {state['dashboard']}; logs in {root}/logs", file=sys.stderr)
            print(f"SCHEDULER={state['address']}")
            print(f"# e.g. make prep-tpf SCHEDULER={state['address']} ... ; `. {root / 'env'}` exports "
                  "PIXEL_CNN_SCHEDULER", file=sys.stderr)
        elif args.command == "stop":
            done = stop(root)
            print(stopped_line(done, root))
        elif args.command == "status":
            st = status(root)
            print(status_lines(st, root))
            return 0 if st and all(st.values()) else 1
        else:
            state = read_state(root)
            if state is None:
                raise ServiceError(f"no Dask cluster recorded in {root}")
            print(state["address"])
    except ServiceError as exc:
        print(f"dask: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
