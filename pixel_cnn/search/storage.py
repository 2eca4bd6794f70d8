"""Where a study lives: Optuna storage URLs, the sqlite file lock, the heartbeat, stale trials.

Not science: this module decides which database a study is kept in and how several
processes share it; :mod:`pixel_cnn.search.tuning` (the search space, objective and
study) takes an opened storage from here.

References: Optuna ``RDBStorage`` (heartbeat, ``RetryHeartbeatStaleTrialCallback``,
``optuna.storages.fail_stale_trials``), https://optuna.readthedocs.io/; SQLAlchemy URLs
(``sqlalchemy.engine.make_url``); sqlite's busy timeout (Python ``sqlite3.connect(timeout=)``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: Default storage: an sqlite file in the working directory (the project root
#: under ``mlflow run .`` and ``make``); git-ignored.
DEFAULT_STORAGE_FILE = "optuna.db"
#: Seconds an sqlite connection waits for a lock before failing (sqlite3 ``timeout``).
SQLITE_BUSY_TIMEOUT_S = 600
#: RDBStorage heartbeat: a RUNNING trial whose process stopped beating for
#: ``HEARTBEAT_GRACE_S`` is marked FAIL and re-queued with the same params.
HEARTBEAT_INTERVAL_S, HEARTBEAT_GRACE_S = 20, 120


class StorageError(ValueError):
    """A storage URL that is not one, or a database that cannot be opened; the message names it."""


def resolve_storage(url: str) -> str:
    """The storage URL to use: ``url``, or ``sqlite:///<absolute cwd>/optuna.db`` when empty.

    Any SQLAlchemy URL is accepted (``sqlite:///path.db``,
    ``postgresql://user:pass@host/db``, ...). Resolved once, so every worker
    process (whatever its working directory) opens the same database.

    Raises
    ------
    StorageError
        ``url`` is not an SQLAlchemy URL.
    """
    if not url.strip():
        return f"sqlite:///{(Path.cwd() / DEFAULT_STORAGE_FILE).resolve()}"
    try:
        make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"storage {url!r} is not an SQLAlchemy URL ({exc}); "
                           "e.g. sqlite:///optuna.db or postgresql://user:password@host/db") from None
    return url


def redact(url: str) -> str:
    """``url`` with its password masked, for logs and MLflow tags."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The absolute file of an sqlite URL; None for other backends and ``:memory:``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


@contextlib.contextmanager
def _init_lock(url: str):
    """Serialize table creation of one sqlite file across processes (``flock`` on a file in the temp dir)."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    key = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"pixel-cnn-optuna-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def heartbeat_settings() -> tuple[int, int]:
    """``(interval, grace)`` in seconds of the RDBStorage heartbeat.

    ``PIXEL_CNN_OPTUNA_HEARTBEAT_S`` / ``PIXEL_CNN_OPTUNA_GRACE_S`` when set (read
    at each call, so worker processes started with them inherit them), else
    :data:`HEARTBEAT_INTERVAL_S` / :data:`HEARTBEAT_GRACE_S`.

    Raises
    ------
    StorageError
        ``interval < 1`` or ``grace <= interval``.
    """
    interval = int(os.environ.get("PIXEL_CNN_OPTUNA_HEARTBEAT_S", HEARTBEAT_INTERVAL_S))
    grace = int(os.environ.get("PIXEL_CNN_OPTUNA_GRACE_S", HEARTBEAT_GRACE_S))
    if interval < 1 or grace <= interval:
        raise StorageError(f"heartbeat interval {interval} s / grace {grace} s: need 1 <= interval < grace")
    return interval, grace


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna ``RDBStorage`` for ``url`` that several processes can share.

    sqlite: the parent folder is created; connections wait up to
    :data:`SQLITE_BUSY_TIMEOUT_S` s for a lock instead of failing with
    "database is locked"; table creation is serialized across processes.
    Every backend: a heartbeat, so a trial left RUNNING by a killed process is
    marked FAIL and retried once with the same parameters by the next worker
    (``RetryHeartbeatStaleTrialCallback``): no trial is lost on resume.

    Raises
    ------
    StorageError
        Bad URL, or the database cannot be reached (message names the URL, password hidden).
    """
    heartbeat_interval, grace_period = heartbeat_settings()
    engine_kwargs = {}
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    with _init_lock(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except ImportError as exc:
            raise StorageError(f"storage {redact(url)}: driver missing ({exc})") from None
        except Exception as exc:  # sqlalchemy OperationalError etc.: name the storage
            raise StorageError(f"storage {redact(url)} cannot be opened: {exc}") from exc


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark FAIL the RUNNING trials of ``study`` whose process stopped beating for the grace period.

    ``optuna.storages.fail_stale_trials``: also runs the storage's retry callback, which
    queues (WAITING) one copy of each with the same parameters. Trials of live workers
    keep beating and are left alone.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def wait_stale_trials(study: optuna.Study, running: set[int]) -> list[int]:
    """After a worker died: wait out the heartbeat grace, then fail the stale trials among ``running``.

    ``running``: numbers of trials that were RUNNING when the workers stopped. Live workers
    fail a dead one's trial themselves when they look at the study after the grace period;
    when they all stopped first, this does it (:func:`fail_stale_trials`, whose retry
    callback leaves a WAITING copy for the next run). Waits at most grace + interval
    seconds (:func:`heartbeat_settings`); trials of live workers elsewhere keep beating and
    are left alone. Returns the numbers of the trials failed.
    """
    if not running:
        return []
    interval, grace = heartbeat_settings()
    deadline = time.monotonic() + grace + interval
    while True:
        fail_stale_trials(study)
        states = {t.number: t.state for t in study.get_trials(deepcopy=False) if t.number in running}
        failed = sorted(n for n, st in states.items() if st == optuna.trial.TrialState.FAIL)
        if all(st != optuna.trial.TrialState.RUNNING for st in states.values()) or time.monotonic() > deadline:
            return failed
        time.sleep(1.0)
