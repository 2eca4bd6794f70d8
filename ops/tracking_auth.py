"""Authentication of the tracking server: MLflow's own ``basic-auth`` app, set up by ``make server``.

``mlflow server --app-name basic-auth`` (MLflow 3.x, ``mlflow.server.auth``) checks HTTP Basic
credentials on every request except ``/health`` and static files, and authorizes each request
against per-user permissions. What the stack sets up:

- ``.services/basic_auth.ini`` (mode 0600; ``MLFLOW_AUTH_CONFIG_PATH`` of the server): the user
  store is the database ``mlflow_auth`` in the stack's PostgreSQL (``database_uri``; its own
  tables and ``alembic_version_auth``, beside the tracking database ``mlflow``),
  ``default_permission = READ``, ``admin_username = admin``.
- The admin password and the Flask secret key (CSRF of the UI's forms, the same in every
  server worker) are generated once into ``.services/secrets.json`` (mode 0600) and reach the
  server through its environment (``MLFLOW_AUTH_ADMIN_PASSWORD``, read only to create the
  admin on an empty user store; ``MLFLOW_FLASK_SERVER_SECRET_KEY``), never its command line.
- ``.services/env`` exports ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (the
  admin: the stack's owner, who runs prep, cv, tune, promote); every MLflow client (``mlflow
  run``, ``MlflowClient``, ``mlflow models serve``) reads them from the environment.
- Colleagues get read-only users (:func:`add_user`): no explicit permission, so MLflow's
  ``default_permission`` READ applies to every experiment, run, artifact and registered model:
  they browse ``mlflow ui`` and search runs; creating a run, logging to a run, registering a
  version or moving an alias in what they did not create is 403.

Who can do what, where each secret lives and how to rotate: docs/services.md ("Security").
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import secrets
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

ADMIN_USER = "admin"
AUTH_DATABASE = "mlflow_auth"
AUTH_CONFIG = "basic_auth.ini"
AUTH_MODES = ("basic", "none")
#: Permission of every user on every resource without an explicit grant (MLflow's ``default_permission``).
DEFAULT_PERMISSION = "READ"
#: MLflow's user names: what its UI and REST API accept; we keep to a safe subset.
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


class AuthError(RuntimeError):
    """A user could not be created or changed on the tracking server; the message says why."""


def new_password() -> str:
    """A generated password: 24 URL-safe characters (144 bits from :mod:`secrets`), safe in a shell line."""
    return secrets.token_urlsafe(18)


def check_username(name: str) -> str:
    """``name`` if it is a usable user name (1-64 of ``[A-Za-z0-9._@-]``), else :class:`AuthError`."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise AuthError(f"user name {name!r}: expected 1-64 characters among letters, digits and . _ - @")
    return name


def write_config(root: Path, database_uri: str) -> Path:
    """Write ``root/basic_auth.ini`` atomically, mode 0600 (it holds the database password); returns its path."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg["mlflow"] = {
        "default_permission": DEFAULT_PERMISSION,
        "database_uri": database_uri,
        "admin_username": ADMIN_USER,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    path = Path(root) / AUTH_CONFIG
    tmp = path.with_suffix(".ini.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# written by `make server` (ops/tracking_auth.py); holds the database password\n")
        cfg.write(f)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def server_env(root: Path, sec: dict) -> dict[str, str]:
    """Environment of ``mlflow server --app-name basic-auth`` for the stack in ``root``."""
    return {"MLFLOW_AUTH_CONFIG_PATH": str(Path(root) / AUTH_CONFIG),
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": sec["mlflow_admin_password"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": sec["flask_secret_key"]}


def request_status(url: str, user: str | None = None, password: str | None = None, timeout: float = 10) -> int:
    """HTTP status of ``GET url`` with Basic credentials when ``user`` is given (200, 401, 403...)."""
    req = urllib.request.Request(url)
    if user is not None:
        req.add_header("Authorization", "Basic " + b64encode(f"{user}:{password or ''}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def _admin_client(tracking_uri: str, admin_password: str):
    """MLflow's ``basic-auth`` app client acting as the admin.

    The client reads its credentials from the environment at each request: they are set for
    the duration of the block and restored afterwards.
    """
    import mlflow.server

    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict(zip(keys, (ADMIN_USER, admin_password))))
    try:
        yield mlflow.server.get_app_client("basic-auth", tracking_uri=tracking_uri)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def add_user(tracking_uri: str, admin_password: str, name: str, password: str | None = None) -> str:
    """Create the read-only user ``name`` on the server; returns its password (generated when None).

    Read-only = a non-admin user with no explicit permission: MLflow's ``default_permission``
    (READ) applies to every experiment and registered model. Raises :class:`AuthError` when the
    name is unusable, the user exists, or the admin credentials are refused.
    """
    check_username(name)
    if name == ADMIN_USER:
        raise AuthError(f"{name!r} is the stack's admin; choose another name")
    password = password or new_password()
    from mlflow.exceptions import MlflowException

    try:
        with _admin_client(tracking_uri, admin_password) as client:
            client.create_user(name, password)
    except MlflowException as exc:
        raise AuthError(f"could not create user {name!r} on {tracking_uri}: {exc.message}") from exc
    return password


def set_password(tracking_uri: str, admin_password: str, name: str, password: str) -> None:
    """Set the password of user ``name`` (the admin included), acting as the admin.

    Raises :class:`AuthError` when the user does not exist or the admin credentials are refused.
    """
    from mlflow.exceptions import MlflowException

    check_username(name)
    try:
        with _admin_client(tracking_uri, admin_password) as client:
            if name == ADMIN_USER:  # self-service: the server wants the current password too
                client.update_user_password(name, password, current_password=admin_password)
            else:
                client.update_user_password(name, password)
    except MlflowException as exc:
        raise AuthError(f"could not set the password of {name!r} on {tracking_uri}: {exc.message}") from exc


def write_json_0600(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically with mode 0600 (a temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
