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
from pixel_cnn.io.engine import Engine
from pixel_cnn.io.ephemeris import load_ephemeris
from pixel_cnn.io.errors import TPFError
from pixel_cnn.io.fits import TPF_SUFFIXES
from pixel_cnn.io.sources import LAYOUTS, header_target_ids, is_remote, list_tpfs, mast_prefixes
from pixel_cnn.io.target import TargetResult, process_target

REPORT_FILE = "prep_report.csv"
#: Folder beside ``stacks/`` with, per stack, ``pixdiff_<id>.npz``: ``flux_image`` float64 ``(H, W)``
#: (the fold's out-of-transit image, electrons/s, NaN = dead pixel) and ``bin_counts`` int64 ``(32,)``
#: (cadences per phase bin): what :func:`pixel_cnn.vetter.vetting.vetting_statistics` measures with.
FLUX_IMAGES = "flux_images"
#: TPFs per header-reading task of an object-store prefix (layout flat).
HEADER_CHUNK = 32


def build_stacks(tpf_dir: str | os.PathLike, ephemeris: str | os.PathLike, out_dir: str | os.PathLike,
                 n_jobs: int = 1, quality_bitmask: str | int = "default", progress: bool = True,
                 min_in_transit: int = MIN_IN_TRANSIT, min_reference: int = MIN_REFERENCE,
                 known_problems: dict[int, str] | None = None, engine: Engine | None = None,
                 layout: str = "flat", targets: list[int] | None = None) -> pd.DataFrame:
    """Build ``out_dir/stacks/pixdiff_<id>.npy`` for every target with TPFs under ``tpf_dir``.

    ``tpf_dir`` is a local folder or an object-store prefix (``s3://bucket/prefix``,
    :mod:`pixel_cnn.io.sources`). ``layout="flat"``: every TPF below it, grouped
    by the target id of its header (``KEPLERID``/``TICID``, never the file name;
    for a prefix the headers are read on the engine's workers, from the start of
    each object only). ``layout="mast"``: ``tpf_dir`` is the root of MAST's bucket
    layout (``s3://stpubdata``); every target of the ephemeris (or of
    ``targets``) is looked for under its own prefix, listed in its own task
    (Kepler for a KOI ephemeris, TESS for a TOI one). Each target is processed by
    :func:`~pixel_cnn.io.target.process_target`, in parallel over targets by
    ``engine`` (:class:`~pixel_cnn.io.engine.Engine`: joblib with ``n_jobs``
    worker processes when not given, or a Dask cluster) with a tqdm progress
    bar over targets. Only this driver writes: ``out_dir/stacks/`` is built in
    a temporary folder and swapped in whole at the end, so it never mixes
    stacks of two runs and is never half-written, whatever worker dies; ``out_dir/flux_images/``
    (:data:`FLUX_IMAGES`) likewise holds each stack's out-of-transit flux image and bin counts.
    ``out_dir/prep_report.csv`` gets one row per target, one per file whose
    header gives no id, and one per target of ``known_problems`` (e.g. a
    failed download) without files; a failed target has ``status=failed`` and
    its ``reason`` (a missing, forbidden or truncated object too); the others
    still go through. Rows are sorted by target id, so the report and the
    stacks are the same bytes whichever engine ran them.

    Returns
    -------
    pandas.DataFrame
        The report (also written to ``out_dir/prep_report.csv``).

    Raises
    ------
    TPFError
        ``tpf_dir`` missing, empty of FITS files or not listable, the ephemeris
        CSV unusable, or ``layout`` unknown.
    """
    if layout not in LAYOUTS:
        raise TPFError(f"layout {layout!r}: expected one of {LAYOUTS}")
    ephemerides, problems, eph_layout = load_ephemeris(ephemeris)
    own_engine = engine is None
    engine = engine or Engine("", n_jobs)
    if own_engine:
        engine.__enter__()
    try:
        by_target, rows = _group_targets(tpf_dir, layout, eph_layout, ephemerides, problems, targets, engine,
                                         progress)
        for target, why in (known_problems or {}).items():
            if target not in by_target:
                rows.append({"target_id": target, "status": "failed", "reason": why, "files": ""})
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stacks_dir = Path(tempfile.mkdtemp(prefix=".stacks.", dir=out))
        images_dir = Path(tempfile.mkdtemp(prefix=".flux_images.", dir=out))
        tasks = [(t, by_target[t], ephemerides.get(t), problems.get(t, ""),
                  quality_bitmask, N_PHASE_BINS, min_in_transit, min_reference)
                 for t in sorted(by_target)]
        try:
            for result in engine.map_unordered(process_target, tasks, progress=progress, desc="TPF targets",
                                               unit="target", on_error=_failed_task):
                if result.stack is not None:
                    name = f"pixdiff_{result.target_id}.npy"
                    np.save(stacks_dir / name, result.stack, allow_pickle=False)
                    result.report["stack_file"] = f"stacks/{name}"
                    extras = f"pixdiff_{result.target_id}.npz"
                    np.savez(images_dir / extras, flux_image=result.flux_image, bin_counts=result.bin_counts)
                    result.report["flux_image_file"] = f"{FLUX_IMAGES}/{extras}"
                rows.append(result.report)
            replace_dir(stacks_dir, out / "stacks")
            replace_dir(images_dir, out / FLUX_IMAGES)
        except BaseException:
            shutil.rmtree(stacks_dir, ignore_errors=True)
            shutil.rmtree(images_dir, ignore_errors=True)
            raise
    finally:
        if own_engine:
            engine.__exit__(None, None, None)
    # Rows in target order before the frame is built: its columns (first appearance) and rows are
    # then the same whatever order the engine finished the targets in.
    rows = sorted(enumerate(rows), key=lambda r: (pd.isna(r[1]["target_id"]),
                                                  0 if pd.isna(r[1]["target_id"]) else r[1]["target_id"], r[0]))
    report = pd.DataFrame([row for _, row in rows])
    report["target_id"] = report["target_id"].astype("Int64")
    tmp = out / f".{REPORT_FILE}.tmp"
    report.to_csv(tmp, index=False)
    os.replace(tmp, out / REPORT_FILE)
    return report


def _failed_task(task: tuple, exc: BaseException) -> TargetResult:
    """The report row of a target whose task failed for good on the cluster (e.g. it killed its workers)."""
    target, paths = task[0], task[1]
    files = "" if isinstance(paths, str) else ";".join(sorted(str(p).rsplit("/", 1)[-1] for p in paths))
    return TargetResult(target, None, {"target_id": target, "status": "failed", "files": files,
                                       "reason": f"task failed on the cluster ({type(exc).__name__}: "
                                                 f"{(str(exc).splitlines() or [''])[0][:200]})"})


def _group_targets(tpf_dir, layout: str, eph_layout: str, ephemerides: dict, problems: dict,
                   targets: list[int] | None, engine: Engine, progress: bool) -> tuple[dict, list[dict]]:
    """``(target id -> its TPF locations, or its prefixes as one '|'-joined string; report rows of files
    without a readable id)``."""
    rows: list[dict] = []
    if layout == "mast":
        if not is_remote(tpf_dir):
            raise TPFError(f"tpf_dir {tpf_dir}: layout=mast needs an object-store root (s3://stpubdata)")
        mission = "kepler" if eph_layout == "koi" else "tess"
        wanted = targets or sorted(set(ephemerides) | set(problems))
        return {int(t): "|".join(mast_prefixes(str(tpf_dir), int(t), mission)) for t in wanted}, rows
    files = list_tpfs(tpf_dir)
    if not files:
        raise TPFError(f"tpf_dir {tpf_dir}: no FITS files ({', '.join(TPF_SUFFIXES)})")
    if is_remote(tpf_dir):
        chunks = [(files[i:i + HEADER_CHUNK],) for i in range(0, len(files), HEADER_CHUNK)]
        found = [hit for part in engine.map_unordered(header_target_ids, chunks, progress=progress,
                                                      desc="TPF headers", unit="chunk") for hit in part]
    else:
        found = header_target_ids(files)
    by_target: dict[int, list[str]] = {}
    for location, target, reason in sorted(found):
        if target is None:
            rows.append({"target_id": pd.NA, "status": "failed", "reason": reason,
                         "files": str(location).rstrip("/").rsplit("/", 1)[-1]})
        else:
            by_target.setdefault(target, []).append(str(location))
    if targets:
        by_target = {t: v for t, v in by_target.items() if t in set(targets)}
    return by_target, rows


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
