"""Phase folding of pixel time series into a pixel-difference stack. Pure numpy.

The science of ``prep source=tpf`` (docs/tpf.md), arrays in and arrays out:
phase folding, transit windows, the out-of-transit reference, normalisation,
binning, the missing-data rule, the combination of several quarters/sectors,
and the rule that tells which time system an ephemeris epoch is in. Reading
the Target Pixel Files (lightkurve/astropy) is :mod:`pixel_cnn.io.tpf`'s job;
nothing here opens a file. The split follows AstroNet's
``light_curve/util.py`` (google-research/exoplanet-ml): pure array functions,
file reading elsewhere.

Stack definition (dataset README, ``kepler-pixdiff/README.md``)::

    phase    = ((t - t0) mod P) / P                      in [0, 1)
    O        = per-pixel median flux over phases 0.2-0.3 and 0.7-0.8
    stack[i] = (median flux of phase bin i - O) / O      i = 0 .. 31

shape ``(32, H, W)``, fractional flux change (-0.001 = 1000 ppm dimming).

Where this differs from the benchmark script (each documented in the function
that does it): in-transit cadences are those within ``duration / 2`` of
mid-transit, not a whole phase bin (:func:`bin_stack`); ``t0`` may lie before
the first cadence or after the last (:func:`phase_fold`); every quarter is
normalised by its own ``O`` and quarters are combined only on the same pixel
grid (:func:`fold_segments`); missing data never looks like dimming
(:func:`fill_missing`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from pixel_cnn.vetter.stack import N_PHASE_BINS

#: Out-of-transit phase windows of the reference image O (dataset README).
REFERENCE_WINDOWS = ((0.2, 0.3), (0.7, 0.8))
#: Barycentric Julian Date of each mission's time-system zero point (days).
#: BKJD = BJD - 2454833 (Kepler Archive Manual, KDMC-10008, sec. 2.3.2: a Kepler
#: TPF has BJDREFI = 2454833, BJDREFF = 0); BTJD = BJD - 2457000 (TESS Science
#: Data Products Description Document, sec. 5.1).
BKJD_REF, BTJD_REF = 2454833.0, 2457000.0
#: The time systems an epoch may be given in: name -> BJD of its zero point.
TIME_SYSTEMS = {"BJD": 0.0, "BKJD": BKJD_REF, "BTJD": BTJD_REF}
#: How far (days) an epoch may lie outside a TPF's time range and still be taken
#: to be in a time system (:func:`resolve_epoch`). 2000 d covers an epoch
#: anywhere in the Kepler mission on any Kepler quarter (BKJD 120-1591: at most
#: 1471 d apart) and 5.5 years of extrapolation, and is less than the
#: BKJD-BTJD offset (2167 d), so an epoch given in the other reduced system on a
#: quarter near it is caught.
EPOCH_WINDOW_D = 2000.0
#: Fewest in-transit cadences and out-of-transit reference cadences per target.
MIN_IN_TRANSIT, MIN_REFERENCE = 3, 10


class FoldError(ValueError):
    """Data that cannot give a stack (too few cadences, no usable pixel); the message says why."""


class EpochSystemError(ValueError):
    """An epoch that fits no time system, or more than one; the message gives the epoch and time range."""


# ------------------------------------------------------------------ the time system of an epoch


def system_name(bjd_ref: float) -> str:
    """Name of the time system ``BJD - bjd_ref``: "BJD", "BKJD", "BTJD", else ``"BJD-<ref>"``."""
    for name, ref in TIME_SYSTEMS.items():
        if bjd_ref == ref:
            return name
    return f"BJD-{bjd_ref:g}"


@dataclass(frozen=True)
class EpochReading:
    """Which time system an epoch was taken to be in, and its value in a TPF's system.

    system : the system the epoch is read in (a key of :data:`TIME_SYSTEMS`).
    declared : the system the ephemeris column says.
    given : the epoch as given (days, in ``declared`` units).
    epoch_bjd : the epoch in BJD, read in ``system``.
    epoch : the epoch in the TPF's system, ``given + ref(system) - bjd_ref`` (days).
    """

    system: str
    declared: str
    given: float
    epoch_bjd: float
    epoch: float

    @property
    def converted(self) -> bool:
        """True when the epoch was read in another system than its column declares."""
        return self.system != self.declared

    def in_system(self, bjd_ref: float) -> float:
        """The epoch in another file's system ``BJD - bjd_ref`` (days), without a round trip through BJD."""
        return self.given + (TIME_SYSTEMS[self.system] - bjd_ref)

    def note(self) -> str:
        """One line for the prep output and the report ("" when not converted)."""
        if not self.converted:
            return ""
        return (f"epoch {self.given:.6f} given as {self.declared} read as {self.system} "
                f"(= BJD {self.epoch_bjd:.6f})")


def resolve_epoch(given: float, declared: str, t_min: float, t_max: float, bjd_ref: float,
                  window_d: float = EPOCH_WINDOW_D) -> EpochReading:
    """Tell the time system of an epoch from the TPF's time range; convert it or refuse.

    Rule (docs/tpf.md, "Time systems"): the epoch is taken to be in system ``S``
    (BJD, BKJD = BJD - 2454833, BTJD = BJD - 2457000) when, converted to the TPF's
    system, ``given + ref(S) - bjd_ref``, it lies within ``[t_min - window_d,
    t_max + window_d]``. The declared system (the ephemeris column's: BKJD for
    ``koi_time0bk``, BJD for ``pl_tranmid``) is used whenever it fits. When it
    does not, the epoch is converted from the one other system that fits; when
    none or several fit, the epoch is refused.

    Parameters
    ----------
    given : float
        The epoch as written in the ephemeris (days).
    declared : str
        Its column's system, a key of :data:`TIME_SYSTEMS`.
    t_min, t_max : float
        First and last cadence time of the TPF(s), days in the TPF's system.
    bjd_ref : float
        The TPF's ``BJDREFI + BJDREFF`` (its time is ``BJD - bjd_ref``).
    window_d : float
        :data:`EPOCH_WINDOW_D` by default.

    Returns
    -------
    EpochReading

    Raises
    ------
    EpochSystemError
        No system fits, or (the declared one not fitting) several do; the
        message gives the epoch, the TPF's time range and the distance of the
        epoch from it in each system.
    ValueError
        ``declared`` not a known system, or a non-finite argument.
    """
    if declared not in TIME_SYSTEMS:
        raise ValueError(f"declared time system {declared!r} not one of {sorted(TIME_SYSTEMS)}")
    if not all(np.isfinite(v) for v in (given, t_min, t_max, bjd_ref)):
        raise ValueError(f"non-finite epoch {given!r}, time range {t_min!r}-{t_max!r} or BJD reference {bjd_ref!r}")

    def distance(system: str) -> float:  # days outside [t_min, t_max], 0 inside
        t0 = given + TIME_SYSTEMS[system] - bjd_ref
        return max(t_min - t0, t0 - t_max, 0.0)

    def reading(system: str) -> EpochReading:
        return EpochReading(system, declared, float(given), float(given + TIME_SYSTEMS[system]),
                            float(given + (TIME_SYSTEMS[system] - bjd_ref)))

    if distance(declared) <= window_d:
        return reading(declared)
    fits = [s for s in TIME_SYSTEMS if s != declared and distance(s) <= window_d]
    if len(fits) == 1:
        return reading(fits[0])
    file_system = system_name(bjd_ref)
    gaps = ", ".join(f"{s} {distance(s):.0f} d" for s in TIME_SYSTEMS)
    where = (f"the TPF's time range {t_min:.3f}-{t_max:.3f} {file_system} "
             f"(BJD {t_min + bjd_ref:.3f}-{t_max + bjd_ref:.3f})")
    if not fits:
        raise EpochSystemError(
            f"epoch {given!r} (declared {declared}) fits no time system: read as {gaps} outside "
            f"{where}; an epoch must lie within {window_d:g} d of it")
    raise EpochSystemError(
        f"epoch {given!r} (declared {declared}, which lies {distance(declared):.0f} d outside {where}) "
        f"is ambiguous: it fits {' and '.join(fits)} (within {window_d:g} d; {gaps})")


# ------------------------------------------------------------------ folding and binning


def phase_fold(time: np.ndarray, period: float, epoch: float) -> np.ndarray:
    """Orbital phase of each cadence, ``((t - t0) mod P) / P`` in ``[0, 1)``.

    Parameters
    ----------
    time : float array ``(N,)``
        Cadence mid-times in days, same time system as ``epoch`` (BKJD or BTJD).
    period : float
        Orbital period in days, > 0.
    epoch : float
        Time of one mid-transit (days). It may lie before the first cadence or
        after the last: ``numpy.mod`` with a positive divisor is non-negative for
        negative ``t - t0`` too, so every transit of the linear ephemeris lands
        at phase 0.

    Returns
    -------
    float64 array ``(N,)`` in ``[0, 1)``; phase 0 is mid-transit.

    Raises
    ------
    ValueError
        ``period`` not finite and positive, or ``epoch`` not finite.

    Formula: dataset README ("How a stack was made").
    """
    if not (np.isfinite(period) and period > 0):
        raise ValueError(f"period {period!r} d must be finite and > 0")
    if not np.isfinite(epoch):
        raise ValueError(f"epoch {epoch!r} must be finite")
    phase = np.mod(np.asarray(time, dtype=np.float64) - epoch, period) / period
    # (t - t0) a hair below a multiple of P can round to exactly P: that is phase 0.
    return np.where(phase >= 1.0, 0.0, phase)


def transit_windows(phase: np.ndarray, period: float, duration_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Cadences inside the transit and inside the secondary-eclipse window.

    In transit: ``|phase - round(phase)| * P * 24 < duration / 2`` (hours), i.e.
    within half the transit duration of mid-transit. Secondary window: the same
    width around phase 0.5 (a circular orbit's secondary eclipse).

    Parameters
    ----------
    phase : float array ``(N,)`` in ``[0, 1)`` (from :func:`phase_fold`)
    period : float, days
    duration_h : float, hours (KOI ``koi_duration``, TOI ``pl_trandurh``: first
        to fourth contact), > 0.

    Returns
    -------
    (in_transit, in_secondary) : bool arrays ``(N,)``

    Raises
    ------
    ValueError
        ``duration_h`` not finite and positive.
    """
    if not (np.isfinite(duration_h) and duration_h > 0):
        raise ValueError(f"duration {duration_h!r} h must be finite and > 0")
    half_width = duration_h / 24.0 / 2.0 / period  # in phase units
    phase = np.asarray(phase, dtype=np.float64)
    in_transit = np.minimum(phase, 1.0 - phase) < half_width
    in_secondary = np.abs(phase - 0.5) < half_width
    return in_transit, in_secondary & ~in_transit


def reference_mask(phase: np.ndarray, in_transit: np.ndarray) -> np.ndarray:
    """Cadences of the out-of-transit reference: phases 0.2-0.3 and 0.7-0.8, not in transit.

    phase : ``(N,)`` in ``[0, 1)``; in_transit : bool ``(N,)`` -> bool ``(N,)``.
    The windows are the dataset README's; in-transit cadences are excluded in
    case a very long transit (``duration > 0.4 P``) reaches them.
    """
    ref = np.zeros(phase.shape, dtype=bool)
    for lo, hi in REFERENCE_WINDOWS:
        ref |= (phase >= lo) & (phase < hi)
    return ref & ~in_transit


def relative_flux(flux: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional flux change of every cadence relative to the reference image.

    ``rel = (F - O) / O`` with ``O`` = per-pixel median of ``flux[reference]``
    (NaN values ignored).

    Parameters
    ----------
    flux : float array ``(N, H, W)``, electrons/s (one quarter or sector).
    reference : bool ``(N,)``, the reference cadences (:func:`reference_mask`).

    Returns
    -------
    rel : float64 ``(N, H, W)``, dimensionless. NaN where the flux is NaN, and
        for the whole pixel where ``O`` is NaN (pixel NaN throughout the
        reference) or ``O <= 0`` (a background-subtracted pixel with no star
        light: the ratio has no meaning). NaN is never turned into a number
        here, so missing flux cannot look like dimming.
    O : float64 ``(H, W)``, electrons/s.
    """
    flux = np.asarray(flux, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixel -> NaN, handled below
        ref_image = np.nanmedian(flux[reference], axis=0)
    bad = ~np.isfinite(ref_image) | (ref_image <= 0)
    safe = np.where(bad, np.nan, ref_image)
    return (flux - safe) / safe, ref_image


def bin_stack(phase: np.ndarray, rel: np.ndarray, window: np.ndarray,
              n_bins: int = N_PHASE_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Median of the relative flux in each of ``n_bins`` equal phase bins.

    Bin ``i`` holds phases ``[i / n_bins, (i + 1) / n_bins)``. A bin that holds
    cadences inside a transit window (``window``: in transit or in the
    secondary window) is the median of those cadences only; any other bin is
    the median of all its cadences. Whole-bin medians (the benchmark script's)
    dilute a transit shorter than half a bin to nothing; this keeps its depth.

    Parameters
    ----------
    phase : ``(N,)`` in ``[0, 1)``
    rel : ``(N, H, W)`` fractional flux change (NaN = missing, ignored)
    window : bool ``(N,)``
    n_bins : int

    Returns
    -------
    stack : float64 ``(n_bins, H, W)``; NaN where a bin has no cadences or a
        pixel has no finite value in that bin.
    counts : int64 ``(n_bins,)``, cadences used per bin.
    """
    idx = np.minimum((np.asarray(phase) * n_bins).astype(np.int64), n_bins - 1)
    stack = np.full((n_bins,) + rel.shape[1:], np.nan)
    counts = np.zeros(n_bins, dtype=np.int64)
    for i in range(n_bins):
        sel = idx == i
        if (sel & window).any():
            sel &= window
        counts[i] = int(sel.sum())
        if counts[i]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixel in a bin
                stack[i] = np.nanmedian(rel[sel], axis=0)
    return stack, counts


def fill_missing(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Missing-data rule: NaN in a normalised stack becomes 0 ("no change"), with a mask.

    Applied after normalisation only, so a missing pixel or an empty phase bin
    reads as "no change", never as dimming (a NaN flux set to 0 *before*
    normalisation would read as ``(0 - O) / O = -1``, a 100% eclipse). This is
    the NaN rule of :func:`~pixel_cnn.vetter.stack.validate_stack` for files;
    the written stack holds no NaN, so the served model (which rejects NaN)
    takes it as it is.

    stack : ``(B, H, W)`` float -> (float32 ``(B, H, W)``, bool mask ``(B, H, W)``
    True where a value was missing).
    """
    missing = ~np.isfinite(stack)
    return np.where(missing, 0.0, stack).astype(np.float32), missing


# ------------------------------------------------------------------ several quarters/sectors


@dataclass(frozen=True)
class Segment:
    """One quarter/sector of a target's pixel time series.

    time : float ``(N,)``, days; flux : float ``(N, H, W)``, electrons/s;
    epoch : a mid-transit time in the same system as ``time`` (days);
    grid : hashable key of the pixel grid (equal keys = the same CCD pixels).
    """

    time: np.ndarray
    flux: np.ndarray
    epoch: float
    grid: tuple


def fold_segments(segments: list[Segment], period: float, duration_h: float,
                  n_bins: int = N_PHASE_BINS, min_in_transit: int = MIN_IN_TRANSIT,
                  min_reference: int = MIN_REFERENCE) -> tuple[np.ndarray, dict]:
    """Stack of one target from its quarters/sectors.

    Segments are grouped by pixel grid. The spacecraft rolls between Kepler
    seasons, so other grids show the sky rotated and shifted; resampling them
    onto one grid would blur the 4-arcsec pixels and smear a neighbour's
    eclipse over the target (the centroid-offset evidence). So one grid is
    used: the one with the most in-transit cadences (ties: more cadences, then
    the earlier segment). Each of its segments is normalised by its own
    reference image ``O`` (:func:`relative_flux`); the cadences of all of them
    are then pooled and binned (:func:`bin_stack`). For one segment this is
    exactly ``(median F_bin - O) / O`` (a median commutes with
    ``(x - O) / O``, O > 0).

    Returns
    -------
    (stack, info) : float64 ``(n_bins, H, W)`` with NaN where data are missing,
        and a dict: ``used`` / ``left_out`` (segment indices, in order),
        ``n_cadences``, ``n_in_transit``, ``n_reference``, ``n_empty_bins``,
        ``n_dead_pixels``, ``bin_counts`` (int64 ``(n_bins,)``, cadences per bin) and
        ``flux_image`` (float64 ``(H, W)``, electrons/s: the out-of-transit reference image ``O``,
        the median over the used segments of each one's ``O``; NaN for a dead pixel).

    Raises
    ------
    FoldError
        No segment, no in-transit cadence, fewer than ``min_in_transit`` of them
        or than ``min_reference`` reference cadences, or no pixel with a usable
        reference.
    """
    if not segments:
        raise FoldError("no quarter/sector to fold")
    groups: dict[tuple, list] = {}
    for i, seg in enumerate(segments):
        phase = phase_fold(seg.time, period, seg.epoch)
        in_transit, in_secondary = transit_windows(phase, period, duration_h)
        groups.setdefault(seg.grid, []).append((i, phase, in_transit, in_secondary))
    n_cad = sum(len(s.time) for s in segments)
    n_in_all = sum(int(x[2].sum()) for g in groups.values() for x in g)
    if n_in_all == 0:
        raise FoldError(f"no in-transit cadences: none of {n_cad} cadences lies within "
                        f"{duration_h / 2:.2f} h of a mid-transit (P={period:g} d)")
    order = sorted(groups, key=lambda g: (-sum(int(x[2].sum()) for x in groups[g]),
                                          -sum(len(segments[x[0]].time) for x in groups[g])))
    used = groups[order[0]]
    rel, phases, windows, images, n_ref = [], [], [], [], 0
    for i, phase, in_transit, in_secondary in used:
        ref = reference_mask(phase, in_transit)
        n_ref += int(ref.sum())
        r, image = relative_flux(segments[i].flux, ref)
        rel.append(r)
        images.append(np.where(image > 0, image, np.nan))
        phases.append(phase)
        windows.append(in_transit | in_secondary)
    n_in = sum(int(x[2].sum()) for x in used)
    if n_in < min_in_transit:
        raise FoldError(f"too few cadences: {n_in} in transit (need >= {min_in_transit})")
    if n_ref < min_reference:
        raise FoldError(f"too few cadences: {n_ref} out-of-transit reference cadences at phases "
                        f"0.2-0.3/0.7-0.8 (need >= {min_reference})")
    rel_all = np.concatenate(rel)
    dead = np.isnan(rel_all).all(axis=0)
    if dead.all():
        raise FoldError("every pixel is NaN throughout or has a non-positive reference flux")
    stack, counts = bin_stack(np.concatenate(phases), rel_all, np.concatenate(windows), n_bins)
    info = {
        "used": [x[0] for x in used],
        "left_out": [x[0] for g in order[1:] for x in groups[g]],
        "n_cadences": int(sum(len(segments[x[0]].time) for x in used)),
        "n_in_transit": n_in,
        "n_reference": n_ref,
        "n_empty_bins": int((counts == 0).sum()),
        "n_dead_pixels": int(dead.sum()),
        "bin_counts": counts,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a dead pixel: NaN in every segment
        info["flux_image"] = np.nanmedian(np.stack(images), axis=0)
    return stack, info
