"""One per-target function mapped over targets: joblib worker processes.

:func:`map_unordered` runs ``fn(*args)`` for every task and yields the results
as they finish (any order), with a tqdm progress bar over tasks.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator


def map_unordered(fn: Callable, tasks: list[tuple], n_jobs: int = 1, progress: bool = True,
                  desc: str = "tasks", unit: str = "task") -> Iterator:
    """Yield ``fn(*task)`` for each task of ``tasks``, in completion order.

    ``n_jobs`` joblib worker processes (-1 = all cores; 1 = in this process).
    An exception of ``fn`` propagates (the per-target functions never raise for
    bad data).
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    runner = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    yield from tqdm(runner(delayed(fn)(*task) for task in tasks), total=len(tasks), desc=desc, unit=unit,
                    disable=not progress)
