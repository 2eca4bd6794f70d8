"""Pixel-difference stacks from raw Target Pixel Files (Kepler, K2, TESS): the driver.

:func:`build_stacks` groups the TPFs of a folder by target, maps the one
per-target function (:func:`pixel_cnn.io.target.process_target`) over the
targets with an engine of :mod:`pixel_cnn.io.engine`, writes the stacks and the
report. The parts: :mod:`pixel_cnn.io.ephemeris` (ephemeris tables, epoch time
systems), :mod:`pixel_cnn.io.fits` (one TPF -> arrays + header checks),
:mod:`pixel_cnn.io.sources` (where TPFs come from), :mod:`pixel_cnn.io.target`
(one target). The science (phase folding, transit windows, normalisation,
binning, the missing-data rule, combining quarters, the time system of an
epoch) is pure numpy in :mod:`pixel_cnn.stacks.phasefold`; ``docs/tpf.md``
describes every choice.

Every failure of one file is caught at that file's boundary
(:func:`~pixel_cnn.io.fits.read_tpf`, :func:`~pixel_cnn.io.fits.header_target_id`)
and becomes a reason naming the file in ``prep_report.csv``; the other files
still go through.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pixel_cnn.stacks.phasefold import MIN_IN_TRANSIT, MIN_REFERENCE
from pixel_cnn.vetter.stack import N_PHASE_BINS
from pixel_cnn.io.dataset import replace_dir
from pixel_cnn.io.engine import map_unordered
from pixel_cnn.io.ephemeris import load_ephemeris
from pixel_cnn.io.errors import TPFError
from pixel_cnn.io.fits import TPF_SUFFIXES, header_target_id
from pixel_cnn.io.sources import find_tpfs
from pixel_cnn.io.target import process_target

REPORT_FILE = "prep_report.csv"


def build_stacks(tpf_dir: str | os.PathLike, ephemeris: str | os.PathLike, out_dir: str | os.PathLike,
                 n_jobs: int = 1, quality_bitmask: str | int = "default", progress: bool = True,
                 min_in_transit: int = MIN_IN_TRANSIT, min_reference: int = MIN_REFERENCE,
                 known_problems: dict[int, str] | None = None) -> pd.DataFrame:
    """Build ``out_dir/stacks/pixdiff_<id>.npy`` for every target with TPFs under ``tpf_dir``.

    Files are grouped by the target id of their header (``KEPLERID``/``TICID``,
    never the file name); each target is processed by :func:`~pixel_cnn.io.target.process_target`,
    in parallel over targets (joblib, ``n_jobs`` worker processes, -1 = all
    cores; 1 = in this process) with a tqdm progress bar over targets.
    ``out_dir/stacks/`` is built in a temporary folder and swapped in whole at
    the end, so it never mixes stacks of two runs and is never half-written.
    ``out_dir/prep_report.csv`` gets one row per target, one per file whose
    header gives no id, and one per target of ``known_problems`` (e.g. a
    failed download) without files; a failed target has ``status=failed`` and
    its ``reason``; the others still go through.

    Returns
    -------
    pandas.DataFrame
        The report (also written to ``out_dir/prep_report.csv``).

    Raises
    ------
    TPFError
        ``tpf_dir`` missing or empty of FITS files, or the ephemeris CSV unusable.
    """
    files = find_tpfs(tpf_dir)
    if not files:
        raise TPFError(f"tpf_dir {tpf_dir}: no FITS files ({', '.join(TPF_SUFFIXES)})")
    ephemerides, problems, _ = load_ephemeris(ephemeris)
    by_target: dict[int, list[str]] = {}
    rows = []
    for path in files:
        try:
            by_target.setdefault(header_target_id(path), []).append(str(path))
        except TPFError as exc:
            rows.append({"target_id": pd.NA, "status": "failed", "reason": str(exc), "files": path.name})
    for target, why in (known_problems or {}).items():
        if target not in by_target:
            rows.append({"target_id": target, "status": "failed", "reason": why, "files": ""})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stacks_dir = Path(tempfile.mkdtemp(prefix=".stacks.", dir=out))
    tasks = [(t, by_target[t], ephemerides.get(t), problems.get(t, ""),
              quality_bitmask, N_PHASE_BINS, min_in_transit, min_reference)
             for t in sorted(by_target)]
    try:
        for result in map_unordered(process_target, tasks, n_jobs=n_jobs, progress=progress,
                                    desc="TPF targets", unit="target"):
            if result.stack is not None:
                name = f"pixdiff_{result.target_id}.npy"
                np.save(stacks_dir / name, result.stack, allow_pickle=False)
                result.report["stack_file"] = f"stacks/{name}"
            rows.append(result.report)
        replace_dir(stacks_dir, out / "stacks")
    except BaseException:
        shutil.rmtree(stacks_dir, ignore_errors=True)
        raise
    report = pd.DataFrame(rows)
    report = report.sort_values("target_id", na_position="last", ignore_index=True)
    report["target_id"] = report["target_id"].astype("Int64")
    tmp = out / f".{REPORT_FILE}.tmp"
    report.to_csv(tmp, index=False)
    os.replace(tmp, out / REPORT_FILE)
    return report


def stacks_summary(report: pd.DataFrame) -> dict[str, int]:
    """Counts for logging: targets ok / failed, dropped cadences, bad files, converted epochs.

    ``n_files_bad``: files left out with a reason (a failed target's unreadable
    files, the files without a readable target id, and the unreadable files of
    targets that still got a stack); ``n_epochs_converted``: targets whose
    epoch was read in another time system than its column declares.
    """
    ok = report["status"] == "ok"
    out = {"n_targets_ok": int(ok.sum()), "n_targets_failed": int((~ok).sum())}
    for col in ("n_dropped_quality", "n_dropped_nonfinite_time", "n_dropped_nan_flux"):
        if col in report:
            out[col] = int(pd.to_numeric(report[col], errors="coerce").fillna(0).sum())
    if "files_unreadable" in report:
        unreadable = report["files_unreadable"].fillna("").astype(str)
        out["n_files_bad"] = int(sum(len(u.split("; ")) for u in unreadable if u)
                                 + (report["target_id"].isna() & ~ok).sum())
    if "epoch_converted_from" in report:
        out["n_epochs_converted"] = int((report["epoch_converted_from"].fillna("").astype(str) != "").sum())
    return out
