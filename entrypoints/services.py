"""``make server``: PostgreSQL + SeaweedFS (S3) + ``mlflow server`` on loopback (see docs/services.md).

``add-user --name NAME``: a read-only user of the tracking server (``make server-user NAME=...``);
``passwd --name NAME``: a new generated password for a user, the admin included (``make
server-passwd NAME=...``). Both act as the stack's admin (its password from ``secrets.json``) and
print the new password once on stdout; the admin's is also written to secrets, state and env.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ops import tracking_auth
from ops.services import (DEFAULT_DIR, MODES, WEED_PORTS, Config, ServiceError, env_lines, read_secrets, read_state,
                          rotate_admin_password, start, status, status_lines, stop, stopped_line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.services", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env", "add-user", "passwd"])
    parser.add_argument("--dir", default=DEFAULT_DIR, help="state, data and logs (default .services)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--s3-port", type=int, default=8333)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--weed-ports", default="", help="'free', or master,volume,filer,admin http ports")
    parser.add_argument("--bucket", default="pixel-cnn")
    parser.add_argument("--artifacts", choices=MODES, default="proxied")
    parser.add_argument("--workers", type=int, default=2, help="mlflow server workers")
    parser.add_argument("--auth", choices=tracking_auth.AUTH_MODES, default="basic",
                        help="tracking server authentication (none: loopback only)")
    parser.add_argument("--name", default="", help="user name (add-user, passwd)")
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
                         mode=args.artifacts, workers=args.workers, auth=args.auth)
            state = start(cfg)
            print(f"stack up from {state['root']}: PostgreSQL :{state['ports']['postgres']}, "
                  f"SeaweedFS S3 :{state['ports']['s3']} (bucket {state['bucket']}), "
                  f"mlflow server {state['tracking_uri']} ({state['mode']} artifacts); logs in {root}/logs",
                  file=sys.stderr)
            print(env_lines(state), end="")
            print(f"# written to {root / 'env'}: `. {root / 'env'}`", file=sys.stderr)
        elif args.command == "stop":
            done = stop(root)
            print(stopped_line(done, root))
        elif args.command == "status":
            st = status(root)
            print(status_lines(st, root))
            return 0 if st and all(st.values()) else 1
        elif args.command == "env":
            state = read_state(root)
            if state is None:
                raise ServiceError(f"no stack recorded in {root}")
            print(env_lines(state), end="")
        else:
            return _users(args.command, root, args.name)
    except ServiceError as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 2
    return 0


def _users(command: str, root: Path, name: str) -> int:
    state = read_state(root)
    if state is None or state.get("auth") != "basic":
        raise ServiceError(f"no stack with tracking authentication recorded in {root}")
    if not name:
        raise ServiceError(f"{command}: give the user name with --name (make: NAME=...)")
    try:
        if command == "passwd" and name == tracking_auth.ADMIN_USER:
            password = rotate_admin_password(root)
            print(f"admin password changed on {state['tracking_uri']}; {root}/secrets.json and {root}/env "
                  f"updated: `. {root}/env` again in open shells", file=sys.stderr)
        elif command == "passwd":
            password = tracking_auth.new_password()
            tracking_auth.set_password(state["tracking_uri"], read_secrets(root)["mlflow_admin_password"], name,
                                       password)
            print(f"password of {name!r} changed on {state['tracking_uri']}; hand it over:", file=sys.stderr)
        else:
            password = tracking_auth.add_user(state["tracking_uri"], read_secrets(root)["mlflow_admin_password"],
                                              name)
            print(f"read-only user {name!r} created on {state['tracking_uri']}; hand over its password "
                  f"(shown once, stored nowhere). It logs in with MLFLOW_TRACKING_USERNAME={name} "
                  f"MLFLOW_TRACKING_PASSWORD=<password>, or in a browser at {state['tracking_uri']}.", file=sys.stderr)
    except tracking_auth.AuthError as exc:
        raise ServiceError(str(exc)) from None
    print(password)
    return 0


if __name__ == "__main__":
    sys.exit(main())
