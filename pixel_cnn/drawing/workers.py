"""Vetting sheets drawn in worker processes while the caller goes on (cv logs its model meanwhile)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def render_sheets(specs: list[tuple[str, dict]], out_dir: str | os.PathLike) -> list[Path]:
    """Draw each ``(relative path, sheet_figure kwargs)`` and save it as PNG under ``out_dir``; returns the paths."""
    import matplotlib.pyplot as plt

    from pixel_cnn.drawing.sheet import SHEET_DPI, sheet_figure

    paths = []
    for rel, kwargs in specs:
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = sheet_figure(**kwargs)
        try:
            fig.savefig(path, dpi=SHEET_DPI)
        finally:
            plt.close(fig)
        paths.append(path)
    return paths


class BackgroundSheets:
    """Render vetting sheets in worker processes while the caller goes on (cv logs its model meanwhile).

    Sheets are CPU-bound matplotlib work and the caller is mostly waiting on the tracking
    store meanwhile; ``workers`` processes (2: the project's machines have 2 cores) each
    draw every ``workers``-th sheet. ``result()`` waits and returns the folder holding them
    (``<tmp>/<relative path>``); the folder lives until :meth:`close`. Uses ``fork`` where the
    platform has it (nothing to re-import), else ``spawn``.
    """

    def __init__(self, specs: list[tuple[str, dict]], workers: int = 2):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._tmp = tempfile.TemporaryDirectory(prefix="pixel-cnn-sheets-")
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        workers = max(1, min(workers, len(specs)))
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
        self._futures = [self._pool.submit(render_sheets, specs[i::workers], self._tmp.name) for i in range(workers)]

    def result(self) -> Path:
        for future in self._futures:
            future.result()
        return Path(self._tmp.name)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._tmp.cleanup()
