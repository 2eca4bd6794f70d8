"""A Dask cluster on one machine: one scheduler and N workers, each its own process, stopped by PID.

``python -m entrypoints.dask_cluster start|stop|status|address`` (``make dask`` /
``make dask-stop``), the conventions of :mod:`ops.services` (``make server``):

Layout under ``--dir`` (default ``.services/dask``, git-ignored)::

    logs/            scheduler.log, worker-<i>.log
    scheduler.json   the scheduler file ``dask scheduler --scheduler-file`` writes
    state.json       address, ports, PIDs: what ``stop`` and ``status`` read
    env              ``export PIXEL_CNN_SCHEDULER=tcp://HOST:PORT`` (``. .services/dask/env``)
    workspace/       the workers' spill/scratch folder (``--local-directory``)

Processes, all bound to ``host`` (default 127.0.0.1): ``dask scheduler`` (``--port``,
dashboard on ``--dashboard-address``) and ``n_workers`` x ``dask worker`` (one
thread each, ``--nanny``: a worker process that dies is restarted by its nanny,
and the scheduler re-runs its tasks elsewhere). Every process starts in its own
session (process group); ``stop`` signals each recorded PID's group, waits, then
SIGKILLs. Workers run with ``OMP_NUM_THREADS=1`` (small networks: one BLAS thread
is faster, and N workers do not oversubscribe the cores).

Security: a cluster bound beyond loopback always runs mutual TLS (:mod:`ops.dask_tls`: the
stack's own CA and certificates under ``tls/``, ``tls://`` addresses, peers without a
certificate of that CA refused); on loopback TLS is off unless ``tls=True``. A non-loopback
host with ``tls=False`` is refused (:func:`ops.exposure.require_protected`). With TLS, ``env``
also exports Dask's client configuration (``DASK_DISTRIBUTED__COMM__TLS__...``), so a job
started after ``. .services/dask/env`` connects with the client certificate.
``scheduler_args`` and ``worker_args`` are passed through to the command lines.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ops import dask_tls
from ops.exposure import ExposureError, is_loopback
from ops.services import ServiceError, _alive, _free_port, _port_open, _spawn, _tail, stop_pid, venv_bin

DEFAULT_DIR = ".services/dask"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787


@dataclass
class ClusterConfig:
    """What :func:`start` needs. Ports of 0 are picked free on ``host``."""

    root: Path
    host: str = "127.0.0.1"
    n_workers: int = 2
    scheduler_port: int = SCHEDULER_PORT
    dashboard_port: int = DASHBOARD_PORT
    threads_per_worker: int = 1
    memory_limit: str = "4GiB"
    tls: bool | None = None   # None: TLS exactly when host is beyond loopback
    scheduler_args: list = field(default_factory=list)
    worker_args: list = field(default_factory=list)
    timeout: float = 60.0

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        if self.n_workers < 1:
            raise ServiceError(f"n_workers={self.n_workers}: need at least one worker")


def read_state(root: Path) -> dict | None:
    path = Path(root) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _write_state(root: Path, state: dict) -> None:
    tmp = root / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(root / "state.json")


def _dask() -> str:
    exe = venv_bin() / "dask"
    if not exe.exists():
        raise ServiceError("`dask` not found next to this interpreter: install the project (`make venv`)")
    return str(exe)


def _worker_env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    return env


def n_workers_connected(address: str, timeout: float = 5.0, security=None) -> int:
    """How many workers the scheduler at ``address`` has (a short-lived client, ``security`` for a
    ``tls://`` scheduler); -1 when it does not answer."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout, security=security) as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])
    except Exception:  # noqa: BLE001 - not up yet
        return -1


def start(cfg: ClusterConfig) -> dict:
    """Start the scheduler, then ``cfg.n_workers`` workers; wait until all have joined; write state and env.

    Returns the state dict: ``address`` (``tcp://host:port``), ``dashboard``
    (``http://host:port/status``), ``ports``, ``pids`` (``scheduler``,
    ``worker-0`` ...). When a step fails what was started is stopped and
    :class:`~ops.services.ServiceError` raised (with the log's tail); also when
    a cluster recorded in ``cfg.root`` is still running, or a port is taken.
    """
    tls = (not is_loopback(cfg.host)) if cfg.tls is None else cfg.tls
    try:
        dask_tls.require_tls(cfg.host, tls)
    except ExposureError as exc:
        raise ServiceError(str(exc)) from exc
    cfg.root.mkdir(parents=True, exist_ok=True)
    old = read_state(cfg.root)
    if old and any(_alive(p) for p in old["pids"].values()):
        raise ServiceError(f"a Dask cluster is already running from {cfg.root} (PIDs {old['pids']}); "
                           "stop it first (make dask-stop)")
    for name in ("scheduler_port", "dashboard_port"):
        bind = cfg.host if name == "scheduler_port" or is_loopback(cfg.host) else "127.0.0.1"
        if not getattr(cfg, name):
            setattr(cfg, name, _free_port(bind))
        elif _port_open(bind, getattr(cfg, name)):
            raise ServiceError(f"port {cfg.host}:{getattr(cfg, name)} is taken; pick another "
                               f"({'DASK_PORT' if name == 'scheduler_port' else 'DASK_DASHBOARD_PORT'}=...)")
    certs = dask_tls.ensure_certificates(cfg.root / "tls", hosts=(cfg.host,)) if tls else None
    role_args = {role: dask_tls.cli_args(certs, role)[2:] if tls else [] for role in ("scheduler", "worker")}
    security = dask_tls.security(certs) if tls else None
    address = dask_tls.address(cfg.host, cfg.scheduler_port, tls)
    # the dashboard is plain HTTP without login: never beyond loopback (an SSH tunnel to look at it)
    dashboard_host = cfg.host if is_loopback(cfg.host) else "127.0.0.1"
    state = {"root": str(cfg.root), "host": cfg.host, "address": address,
             "dashboard": f"http://{dashboard_host}:{cfg.dashboard_port}/status", "tls": tls,
             "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": {**asdict(cfg), "root": str(cfg.root)},
             "ports": {"scheduler": cfg.scheduler_port, "dashboard": cfg.dashboard_port}, "pids": {}}
    logs = cfg.root / "logs"
    scheduler_file = cfg.root / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    env = _worker_env()
    try:
        log = logs / "scheduler.log"
        proc = _spawn([_dask(), "scheduler", "--host", cfg.host, "--port", str(cfg.scheduler_port),
                       "--protocol", "tls" if tls else "tcp", "--dashboard-address", f"{dashboard_host}:{cfg.dashboard_port}",
                       "--scheduler-file", str(scheduler_file), "--no-show",
                       *role_args["scheduler"], *cfg.scheduler_args], log, env=env, cwd=cfg.root)
        state["pids"]["scheduler"] = proc.pid
        _write_state(cfg.root, state)
        _wait(lambda: scheduler_file.exists() and _port_open(cfg.host, cfg.scheduler_port),
              cfg.timeout, "dask scheduler", log, proc)
        workspace = cfg.root / "workspace"
        workspace.mkdir(exist_ok=True)
        procs = []
        for i in range(cfg.n_workers):
            wlog = logs / f"worker-{i}.log"
            wproc = _spawn([_dask(), "worker", address, "--name", f"worker-{i}", "--host", cfg.host,
                            "--nthreads", str(cfg.threads_per_worker), "--nworkers", "1",
                            "--memory-limit", cfg.memory_limit, "--local-directory", str(workspace),
                            "--nanny", "--no-dashboard", *role_args["worker"], *cfg.worker_args],
                           wlog, env=env, cwd=cfg.root)
            state["pids"][f"worker-{i}"] = wproc.pid
            procs.append((wproc, wlog))
            _write_state(cfg.root, state)
        deadline = time.monotonic() + cfg.timeout
        while n_workers_connected(address, security=security) < cfg.n_workers:
            for wproc, wlog in procs:
                if wproc.poll() is not None:
                    raise ServiceError(f"dask worker exited with {wproc.returncode}; log {wlog}:\n{_tail(wlog)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"{cfg.n_workers} workers not connected after {cfg.timeout:.0f} s; "
                                   f"logs in {logs}:\n{_tail(procs[-1][1])}")
            time.sleep(0.3)
    except BaseException:
        stop(cfg.root)
        raise
    client = "".join(f"export {k}={v}\n" for k, v in dask_tls.client_env(certs).items()) if tls else ""
    (cfg.root / "env").write_text(f"# pixel-cnn Dask cluster, started {state['started']}; "
                                  f"dashboard {state['dashboard']}\nexport PIXEL_CNN_SCHEDULER={address}\n{client}")
    return state


def _wait(predicate, timeout: float, what: str, log: Path, proc) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise ServiceError(f"{what}: process exited with {proc.returncode}; log {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{what}: not ready after {timeout:.0f} s; log {log}:\n{_tail(log)}")
        time.sleep(0.2)


def stop(root: Path) -> dict[str, bool]:
    """Stop the recorded processes by PID, the workers first (together), the scheduler last; returns
    name -> was running (workers in order, then the scheduler)."""
    root = Path(root)
    state = read_state(root)
    if state is None:
        return {}
    pids = state["pids"]
    names = sorted((n for n in pids if n != "scheduler" and pids[n]), key=lambda n: int(n.split("-")[1]))
    # the workers at once (each may take seconds to close gracefully), then the scheduler
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        stopped = list(pool.map(lambda n: stop_pid(pids[n], signal.SIGTERM, timeout=15.0), names))
    done = dict(zip(names, stopped))
    if pids.get("scheduler"):
        done["scheduler"] = stop_pid(pids["scheduler"], signal.SIGTERM, timeout=15.0)
    state["pids"] = {}
    _write_state(root, state)
    (root / "scheduler.json").unlink(missing_ok=True)
    return done


def status(root: Path) -> dict[str, bool]:
    """name -> alive, for each recorded PID."""
    state = read_state(Path(root))
    return {} if state is None else {name: _alive(pid) for name, pid in state["pids"].items()}

