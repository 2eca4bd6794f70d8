"""Checks of the tracking and artifact stores, made before any training (MLflow calls only).

A job against a remote tracking server must fail fast and say why when the
server is unreachable or the artifact store refuses writes, rather than after
an hour of training. A job whose server dies must still end its run with a
status once the server is back.

Variables read:

- ``MLFLOW_TRACKING_URI``: an ``http(s)://`` URI is probed at ``/health``
  (the endpoint of ``mlflow server``), then with one authenticated read.
- ``MLFLOW_TRACKING_USERNAME``, ``MLFLOW_TRACKING_PASSWORD``: the credentials of a
  server with authentication (``mlflow server --app-name basic-auth``); a 401 is
  reported before any run is created.
- ``MLFLOW_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``
  (or any boto3 credential source): needed by the client only when the run's
  artifact URI is ``s3://`` (server with ``--default-artifact-root``, "direct"
  mode); with ``mlflow-artifacts:/`` (proxied) the server holds them.
- ``PIXEL_CNN_END_RUN_PATIENCE_S`` (default 300): how long a job keeps trying
  to record its final status while the tracking server is unreachable.

A fresh embedded store (``sqlite:///…/mlflow.db`` with no tables yet) is
created once, under a file lock, before any run (:func:`init_store`):
MLflow's own schema creation is not safe against several processes creating
the same file at once ("table latest_metrics already exists").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# mlflow is imported inside the functions that need it: `python -m entrypoints.tracking_check`
# (run by make before `mlflow run`) stays a stdlib-only, sub-second check.

PREFLIGHT_ARTIFACT = "preflight.json"
S3_VARIABLES = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


class StoreError(RuntimeError):
    """The tracking server or the artifact store cannot be used; the message names the URI and the cause."""


def tracking_uri() -> str:
    """The tracking URI in effect (``mlflow.get_tracking_uri()``; the environment when mlflow is not loaded)."""
    if "mlflow" not in sys.modules:
        return os.environ.get("MLFLOW_TRACKING_URI", "")
    import mlflow

    return mlflow.get_tracking_uri()


#: URI schemes of MLflow tracking stores ("" = a folder path; a database scheme may carry ``+driver``).
STORE_SCHEMES = frozenset({"", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks",
                           "databricks-uc", "uc"})


def check_tracking(uri: str | None = None, timeout: float = 5.0, attempts: int = 3) -> None:
    """Raise :class:`StoreError` unless the tracking server at ``uri`` answers ``GET /health``.

    A scheme outside :data:`STORE_SCHEMES` (a typo such as ``htp://``) is refused at once. Only
    ``http(s)://`` URIs are probed (``sqlite:``, ``file:`` and others are
    local and return at once). ``attempts`` tries ``timeout`` seconds each, one
    second apart: a few seconds at most, against MLflow's own retry policy of
    several minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` = 7, backoff factor 2).
    """
    uri = uri or tracking_uri()
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme.split("+")[0] not in STORE_SCHEMES:
        raise StoreError(f"tracking URI {uri!r} (MLFLOW_TRACKING_URI): unknown scheme {scheme!r}; MLflow stores are "
                         f"{', '.join(s + ':' for s in sorted(STORE_SCHEMES) if s)} or a folder path")
    if scheme not in ("http", "https"):
        return
    last = ""
    for i in range(attempts):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
                if r.status == 200:
                    return _check_credentials(uri, timeout)
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} on /health"
        except (urllib.error.URLError, socket.timeout, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if i + 1 < attempts:
            time.sleep(1.0)
    raise StoreError(
        f"tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable: {last}. Start it (`make server`, "
        f"then `. .services/env`) or point MLFLOW_TRACKING_URI at a running server; nothing was trained")


def _check_credentials(uri: str, timeout: float) -> None:
    """One read (``experiments/search``) with the environment's Basic credentials: :class:`StoreError` on 401.

    A server without authentication answers 200 whatever is sent; 403 (a read-only user) passes
    here: the write that needs more is refused later with MLflow's own message.
    """
    import base64

    req = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user:
        token = base64.b64encode(f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            return
    except (urllib.error.URLError, socket.timeout, OSError):
        return  # reachable a moment ago: let MLflow's own retries handle a blip
    what = (f"refused the credentials of MLFLOW_TRACKING_USERNAME={user} (MLFLOW_TRACKING_PASSWORD wrong?)"
            if user else "requires authentication and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD are unset")
    raise StoreError(f"tracking server {uri} (MLFLOW_TRACKING_URI) {what}: HTTP 401. `. .services/env` sets the "
                     f"stack owner's; `make server-user NAME=...` creates a read-only user; nothing was trained")


def _s3_credentials_error() -> str | None:
    """Why a boto3 client could not write ``s3://...``, judged without network; None if it may."""
    import boto3

    if boto3.session.Session().get_credentials() is None:
        return ("no S3 credentials on this client (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or an AWS profile)")
    return None


def check_artifacts(run_id: str) -> str:
    """Write a small ``preflight.json`` artifact to ``run_id`` and read the listing back.

    Returns the run's artifact URI. Raises :class:`StoreError` naming that URI
    and the variables to check when the write or the listing fails (missing
    S3 endpoint or credentials in direct mode, a bucket the server cannot
    write in proxied mode, ...). The probe is the same call path the model
    upload takes, so a pass means the end-of-training upload can succeed.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    artifact_uri = client.get_run(run_id).info.artifact_uri
    hint = ""
    if artifact_uri.startswith("s3://"):
        missing = _s3_credentials_error()
        if missing:
            raise StoreError(f"artifact store {artifact_uri} (direct S3 access): {missing}; nothing was trained")
        if not os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
            hint = " (MLFLOW_S3_ENDPOINT_URL is unset, so boto3 went to AWS S3)"
        hint += f"; client variables: {', '.join(f'{k}={_shown(k)}' for k in S3_VARIABLES)}"
    probe = {"tracking_uri": tracking_uri(), "artifact_uri": artifact_uri, "host": socket.gethostname(),
             "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        client.log_text(run_id, json.dumps(probe, indent=2) + "\n", PREFLIGHT_ARTIFACT)
        listed = {a.path for a in client.list_artifacts(run_id)}
    except Exception as exc:  # boto3, requests and MLflow each raise their own types
        raise StoreError(f"artifact store {artifact_uri} refused a test write: {type(exc).__name__}: "
                         f"{str(exc)[:300]}{hint}; nothing was trained") from exc
    if PREFLIGHT_ARTIFACT not in listed:
        raise StoreError(f"artifact store {artifact_uri}: a test artifact was written but is not listed{hint}")
    return artifact_uri


def _shown(key: str) -> str:
    value = os.environ.get(key)
    if value is None:
        return "unset"
    return value if key == "MLFLOW_S3_ENDPOINT_URL" else "set"


#: URI schemes :func:`local_dataset` downloads through MLflow.
REMOTE_SCHEMES = ("runs", "models", "mlflow-artifacts", "s3", "http", "https")


def local_dataset(dataset: str, dst: str | None = None) -> str:
    """A local folder for a prepared dataset: ``dataset`` itself, or a download of an artifact URI.

    ``runs:/<prep_run_id>/dataset`` (what prep logs), ``mlflow-artifacts:/...``
    or ``s3://...`` are fetched with ``mlflow.artifacts.download_artifacts``
    into ``dst`` (default: a new temporary folder), so a job on another
    machine needs no shared disk. Raises :class:`StoreError` naming the URI
    when the download fails.
    """
    scheme = urllib.parse.urlparse(str(dataset)).scheme
    if scheme not in REMOTE_SCHEMES:
        return str(dataset)
    import tempfile

    import mlflow

    if scheme in ("runs", "models", "mlflow-artifacts"):
        check_tracking()
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=str(dataset),
                                                   dst_path=dst or tempfile.mkdtemp(prefix="pixel-cnn-dataset-"))
    except Exception as exc:  # noqa: BLE001 - MLflow, boto3 and requests raise their own types
        raise StoreError(f"dataset {dataset}: download failed: {type(exc).__name__}: {str(exc)[:300]}") from exc


def end_run(run_id: str, status: str, patience_s: float | None = None) -> bool:
    """End the active run with ``status``, retrying while the tracking server is unreachable.

    MLflow's own HTTP retries (several minutes by default) come first; this
    loop adds ``patience_s`` seconds (``PIXEL_CNN_END_RUN_PATIENCE_S``, default
    300), so a server restarted by its supervisor still gets the final status.
    Returns True when the status was recorded; otherwise prints to stderr how
    the run was left (RUNNING) and returns False.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    if patience_s is None:
        patience_s = float(os.environ.get("PIXEL_CNN_END_RUN_PATIENCE_S", "300"))
    deadline = time.monotonic() + patience_s
    try:
        if mlflow.active_run() and mlflow.active_run().info.run_id == run_id:
            mlflow.end_run(status)  # pops the active run even when the server call fails
        else:
            MlflowClient().set_terminated(run_id, status)
        return True
    except Exception as exc:  # noqa: BLE001 - any failure of the call means "retry"
        last = exc
    print(f"tracking: {tracking_uri()} unreachable ({type(last).__name__}); retrying for up to "
          f"{patience_s:.0f} s to mark run {run_id} {status}", file=sys.stderr, flush=True)
    while time.monotonic() < deadline:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        try:
            MlflowClient().set_terminated(run_id, status)
            return True
        except Exception as exc:  # noqa: BLE001
            last = exc
    print(f"tracking: run {run_id} could not be marked {status} on {tracking_uri()} within "
          f"{patience_s:.0f} s ({type(last).__name__}: {str(last)[:200]}); it stays RUNNING there",
          file=sys.stderr)
    return False


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///PATH`` tracking URI, or None for any other store."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "sqlite" or not parsed.path or parsed.path in ("/", "/:memory:"):
        return None
    return os.path.abspath(parsed.path[1:])  # sqlite:///relative.db, sqlite:////absolute/path.db


def _schema_ready(db: str) -> bool:
    """True when ``db`` exists and holds MLflow's tables with a recorded schema revision."""
    if not os.path.exists(db):
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"experiments", "alembic_version"} <= tables:
                return False
            return con.execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def init_store(uri: str | None = None) -> bool:
    """Create a fresh sqlite tracking store once, under a file lock; returns True if this call created it.

    For ``sqlite:///PATH`` URIs only (every other store is created by its
    server): when ``PATH`` holds no MLflow schema yet, an exclusive ``flock``
    on ``PATH.init.lock`` is taken, the schema checked again, and MLflow
    creates it (``MlflowClient(uri).search_experiments``, which builds the
    tables and runs its migrations). Concurrent callers wait on the lock and
    then find the store ready. Every job calls this before it creates a run
    (:class:`pixel_cnn.tracking.runs.job_run`), and ``make`` calls it
    (``make tracking-check``) before ``mlflow run``, which creates its run
    before any project code runs.

    Raises
    ------
    StoreError
        The folder of ``PATH`` cannot be created or the lock file not written.
    """
    uri = uri or tracking_uri()
    db = sqlite_path(uri)
    if db is None or _schema_ready(db):
        return False
    try:
        os.makedirs(os.path.dirname(db), exist_ok=True)
        lock = open(db + ".init.lock", "a")
    except OSError as exc:
        raise StoreError(f"tracking store {uri}: cannot create {db}: {exc}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _schema_ready(db):
                return False
            from mlflow.tracking import MlflowClient

            MlflowClient(uri).search_experiments(max_results=1)
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
