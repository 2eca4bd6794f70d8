"""One target: read its TPFs, fold them on its ephemeris, check the stack (never raises for bad data).

:func:`process_target` is the one per-target function that the engines of
:mod:`pixel_cnn.io.engine` map over targets (joblib processes or a Dask cluster).
The science is pure numpy in :mod:`pixel_cnn.stacks.phasefold`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pixel_cnn.stacks.phasefold import (MIN_IN_TRANSIT, MIN_REFERENCE, EpochSystemError, FoldError, Segment,
                                      fill_missing, fold_segments, resolve_epoch)
from pixel_cnn.vetter.stack import N_PHASE_BINS, StackError, validate_stack
from pixel_cnn.io.ephemeris import Ephemeris
from pixel_cnn.io.errors import TPFError
from pixel_cnn.io.fits import TPFData, read_tpf
from pixel_cnn.io.sources import local_copy, target_files


def _name(location) -> str:
    """The file name of a local path or URL."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


#: Keys of :func:`combine_quarters`'s info that hold arrays (kept on :class:`TargetResult`, not in the report).
ARRAY_KEYS = ("bin_counts", "flux_image")


@dataclass
class TargetResult:
    """The outcome for one target: a stack, or a reason; plus the report row.

    ``flux_image``: float64 ``(H, W)`` out-of-transit reference image (electrons/s, NaN for a dead
    pixel) and ``bin_counts`` int64 ``(32,)`` cadences per phase bin, when a stack was made.
    """

    target_id: int
    stack: np.ndarray | None
    report: dict = field(default_factory=dict)
    flux_image: np.ndarray | None = None
    bin_counts: np.ndarray | None = None


def combine_quarters(quarters: list[TPFData], eph: Ephemeris, n_bins: int = N_PHASE_BINS,
                     min_in_transit: int = MIN_IN_TRANSIT, min_reference: int = MIN_REFERENCE
                     ) -> tuple[np.ndarray, dict]:
    """Stack of one target from the quarters/sectors of its TPFs.

    First the epoch's time system is checked against the quarters' time range
    and ``BJDREFI + BJDREFF`` (:func:`~pixel_cnn.stacks.phasefold.resolve_epoch`,
    range taken in the first quarter's system); then the quarters are folded
    and combined by :func:`~pixel_cnn.stacks.phasefold.fold_segments` (one pixel
    grid, each quarter normalised by its own reference image).

    Returns
    -------
    (stack, info) : float64 ``(n_bins, H, W)`` with NaN where data are missing,
        and a dict for the report: ``quarters_used``, ``files_left_out``,
        ``epoch_system``, ``epoch_converted_from`` ("" unless converted),
        ``epoch_note``, the counts of :func:`~pixel_cnn.stacks.phasefold.fold_segments` and its
        arrays :data:`ARRAY_KEYS` (``bin_counts``, ``flux_image``: not report columns).

    Raises
    ------
    TPFError
        The epoch fits no time system or several (message names the target,
        the epoch and the TPFs' time range), or a
        :class:`~pixel_cnn.stacks.phasefold.FoldError` (too few cadences...).
    """
    ref = quarters[0].bjd_ref
    t_min = min(float(q.time.min()) + q.bjd_ref - ref for q in quarters)
    t_max = max(float(q.time.max()) + q.bjd_ref - ref for q in quarters)
    given, declared = eph.given()
    try:
        reading = resolve_epoch(given, declared, t_min, t_max, ref)
    except EpochSystemError as exc:
        raise TPFError(f"target {eph.target_id} ({eph.name}): {exc}") from None
    segments = [Segment(q.time, q.flux, reading.in_system(q.bjd_ref), q.grid) for q in quarters]
    try:
        stack, fold = fold_segments(segments, eph.period_d, eph.duration_h, n_bins, min_in_transit, min_reference)
    except FoldError as exc:
        raise TPFError(f"{exc} ({eph.name}, epoch {given:g} {reading.system} = BJD {reading.epoch_bjd:.5f})"
                       ) from None
    info = {
        "quarters_used": ",".join(quarters[i].period_label for i in fold["used"]),
        "files_left_out": "; ".join(f"{_name(quarters[i].path)} ({quarters[i].period_label}: other pixel grid)"
                                    for i in fold["left_out"]),
        "epoch_system": reading.system,
        "epoch_converted_from": reading.declared if reading.converted else "",
        "epoch_note": reading.note(),
        "epoch_bjd": reading.epoch_bjd,
        **{k: v for k, v in fold.items() if k not in ("used", "left_out")},
    }
    return stack, info


def process_target(target_id: int, paths: list[str] | str, eph: Ephemeris | None, problem: str = "",
                   quality_bitmask: str | int = "default", n_bins: int = N_PHASE_BINS,
                   min_in_transit: int = MIN_IN_TRANSIT, min_reference: int = MIN_REFERENCE
                   ) -> TargetResult:
    """Read a target's TPFs and build its stack; never raises for bad data.

    A file that cannot be read (any reason of :func:`~pixel_cnn.io.fits.read_tpf`) is listed in
    ``files_unreadable`` with its reason and left out; the target's other
    files still make the stack. The target fails (``reason``) only when no
    file is left, or the epoch's time system cannot be told, or too few
    cadences remain.

    Returns a :class:`TargetResult` whose ``stack`` is float32 ``(n_bins, H, W)``
    (missing data filled by :func:`~pixel_cnn.stacks.phasefold.fill_missing`, validated by
    :func:`~pixel_cnn.vetter.stack.validate_stack`) or ``None``, and whose
    ``report`` row says what was used, what was dropped and, on failure, why.

    ``paths``: the target's TPF locations (local paths or object-store URLs,
    :func:`pixel_cnn.io.sources.local_copy` fetches the latter), or a string of
    ``|``-separated object-store prefixes listed here (MAST's layout,
    :func:`pixel_cnn.io.sources.mast_prefixes`): a missing, forbidden or
    truncated object is a reason like any unreadable file.
    """
    listed = isinstance(paths, str)
    report = {"target_id": target_id, "status": "failed", "reason": "", "ephemeris": "",
              "n_kois_on_star": 0, "files": "" if listed else ";".join(sorted(_name(p) for p in paths))}
    if eph is None:
        report["reason"] = problem or f"no ephemeris row for target {target_id}"
        return TargetResult(target_id, None, report)
    list_problems = []
    if listed:
        prefixes = paths
        paths, list_problems = target_files(prefixes)
        report["files"] = ";".join(sorted(_name(p) for p in paths))
        if not paths:
            report["reason"] = "; ".join(list_problems) or f"no TPF under {prefixes.replace('|', ' or ')}"
            return TargetResult(target_id, None, report)
    given, declared = eph.given()
    report.update(ephemeris=eph.name, n_kois_on_star=eph.n_on_star, period_d=eph.period_d,
                  epoch_given=given, epoch_declared=declared, epoch_bjd=eph.epoch_bjd,
                  duration_h=eph.duration_h)
    quarters, unreadable = [], list(list_problems)
    for path in sorted(paths):
        try:
            with local_copy(path) as local:
                q = read_tpf(local, quality_bitmask)
            q.path = str(path)
        except TPFError as exc:
            unreadable.append(str(exc))
            continue
        if q.target_id != target_id:
            unreadable.append(f"{_name(path)}: target id {q.target_id} in the data HDU header differs from "
                              + (f"{target_id}, whose prefix holds the file" if listed
                                 else f"{target_id} in the primary header"))
            continue
        quarters.append(q)
    report.update(
        n_raw=sum(q.n_raw for q in quarters), n_dropped_quality=sum(q.n_quality for q in quarters),
        n_dropped_nonfinite_time=sum(q.n_nonfinite_time for q in quarters),
        n_dropped_nan_flux=sum(q.n_nan_flux for q in quarters),
        files_unreadable="; ".join(unreadable),
    )
    if not quarters:
        report["reason"] = "; ".join(unreadable) or "no TPF"
        return TargetResult(target_id, None, report)
    try:
        stack, info = combine_quarters(quarters, eph, n_bins, min_in_transit, min_reference)
        arrays = {k: info.pop(k) for k in ARRAY_KEYS}
        report.update(info)
        filled, _ = fill_missing(stack)
        filled = validate_stack(filled, nan="reject")
    except (TPFError, StackError, ValueError) as exc:
        report["reason"] = str(exc)
        return TargetResult(target_id, None, report)
    report.update(status="ok", shape="x".join(map(str, filled.shape)))
    return TargetResult(target_id, filled, report, arrays["flux_image"], arrays["bin_counts"])
