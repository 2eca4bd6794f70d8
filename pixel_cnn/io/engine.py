"""One per-target function mapped over targets, by one of two engines.

* ``joblib`` (default): ``n_jobs`` worker processes on this machine (-1 = all
  cores; 1 = in this process).
* ``dask``: the workers of a running Dask cluster, given its scheduler address
  (``tcp://host:port``; ``make dask`` starts one on this machine). Tasks are
  spread over the workers by the scheduler; a worker that dies has its tasks
  re-run on the others (``distributed``'s ``allowed-failures``, 3 by default),
  so every task still gives a result. Results come back to the driver, which
  alone writes files: a worker never writes an output, so nothing is
  half-written whatever dies.

:meth:`Engine.map_unordered` yields ``fn(*task)`` for every task as it finishes
(any order), with a tqdm progress bar over tasks; the callers sort what they
write, so the outputs are the same bytes whichever engine ran them.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterator

ENGINES = ("joblib", "dask")


class EngineError(RuntimeError):
    """The Dask scheduler does not answer, or has no worker; the message names the address."""


class Engine:
    """Where per-target functions run: ``Engine(scheduler="")`` = joblib, ``Engine("tcp://...")`` = Dask.

    Use as a context manager (the Dask client is opened on enter and closed on
    exit). ``name`` is ``"joblib"`` or ``"dask"``; ``n_workers`` the number of
    worker processes (joblib: ``n_jobs`` resolved; Dask: workers connected at
    start); ``dashboard`` the Dask dashboard URL ("" for joblib).

    Raises
    ------
    EngineError
        On enter, when the scheduler cannot be reached within ``timeout``
        seconds or has no worker.
    """

    def __init__(self, scheduler: str = "", n_jobs: int = 1, timeout: float = 30.0, log=None):
        self.scheduler = (scheduler or "").strip()
        self.name = "dask" if self.scheduler else "joblib"
        self.n_jobs = n_jobs
        self.timeout = timeout
        self.client = None
        self.dashboard = ""
        self.n_workers = 0
        self._log = log if log is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))

    def __enter__(self) -> "Engine":
        if self.name == "joblib":
            from joblib import effective_n_jobs

            self.n_workers = effective_n_jobs(self.n_jobs)
            return self
        from distributed import Client

        try:
            self.client = Client(self.scheduler, timeout=self.timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise EngineError(f"Dask scheduler {self.scheduler} does not answer ({type(exc).__name__}: {exc}); "
                              "start one with `make dask`") from None
        try:
            self.client.wait_for_workers(1, timeout=self.timeout)
        except TimeoutError:
            self.client.close()
            raise EngineError(f"Dask scheduler {self.scheduler} has no worker after {self.timeout:.0f} s") from None
        self.n_workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
        self.dashboard = self.client.dashboard_link or ""
        self._log(f"Dask: scheduler {self.scheduler}, {self.n_workers} workers; dashboard {self.dashboard}")
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def describe(self) -> dict:
        """What ran the job, for the MLflow run: ``engine``, ``n_workers``, ``scheduler``, ``dashboard``."""
        return {"engine": self.name, "n_workers": self.n_workers, "scheduler": self.scheduler,
                "dashboard": self.dashboard}

    def map_unordered(self, fn: Callable, tasks: list[tuple], progress: bool = True, desc: str = "tasks",
                      unit: str = "task", on_error: Callable | None = None) -> Iterator:
        """Yield ``fn(*task)`` for each task of ``tasks``, in completion order.

        ``on_error(task, exc)``: with Dask, the result given for a task that
        failed for good (its function raised, or it killed ``allowed-failures``
        workers: ``KilledWorker``); without it the error propagates. With joblib
        an exception of ``fn`` propagates (the per-target functions never raise
        for bad data).
        """
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress)
        try:
            for result in (self._dask(fn, tasks, on_error) if self.name == "dask" else self._joblib(fn, tasks)):
                bar.update(1)
                yield result
        finally:
            bar.close()

    def _joblib(self, fn, tasks):
        from joblib import Parallel, delayed

        runner = Parallel(n_jobs=self.n_jobs, return_as="generator_unordered")
        yield from runner(delayed(fn)(*task) for task in tasks)

    def _dask(self, fn, tasks, on_error):
        from distributed import as_completed

        if self.client is None:
            raise EngineError("the Dask engine is used outside its `with` block")
        if not tasks:
            return
        futures = self.client.map(fn, *(list(column) for column in zip(*tasks)), pure=False, batch_size=10_000)
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future in as_completed(futures, loop=self.client.loop):
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - reported per task when the caller says how
                    if on_error is None:
                        raise
                    result = on_error(tasks[index[future.key]], exc)
                future.release()
                yield result
        finally:
            for future in futures:
                future.cancel()


def map_unordered(fn: Callable, tasks: list[tuple], n_jobs: int = 1, progress: bool = True,
                  desc: str = "tasks", unit: str = "task") -> Iterator:
    """``fn(*task)`` over ``tasks`` in joblib processes (:class:`Engine` without a scheduler)."""
    with Engine("", n_jobs) as engine:
        yield from engine.map_unordered(fn, tasks, progress=progress, desc=desc, unit=unit)
