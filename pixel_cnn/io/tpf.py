"""Pixel-difference stacks from raw Target Pixel Files (Kepler, K2, TESS).

The science (phase folding, transit windows, normalisation, binning, the
missing-data rule) is pure numpy on arrays; reading a TPF (lightkurve) and
writing ``.npy`` files happen at the edge, in :func:`read_tpf` and
:func:`build_stacks`. ``docs/tpf.md`` describes every choice and each place
where the stack differs from the benchmark script's.

Stack definition (dataset README, ``kepler-pixdiff/README.md``)::

    phase    = ((t - t0) mod P) / P                      in [0, 1)
    O        = per-pixel median flux over phases 0.2-0.3 and 0.7-0.8
    stack[i] = (median flux of phase bin i - O) / O      i = 0 .. 31

shape ``(32, H, W)``, float32, fractional flux change (-0.001 = 1000 ppm dimming).

Where this module does better than the benchmark script (each documented in
the function that does it):

* in-transit cadences are those within ``duration / 2`` of mid-transit, not a
  whole phase bin: a bin that holds in-transit cadences is the median of those
  only, so a short transit is not diluted by the out-of-transit cadences that
  share its bin (same for the secondary-eclipse window at phase 0.5);
* ``t0`` may lie before the first cadence or after the last (any epoch of the
  linear ephemeris works);
* every quarter/sector is normalised by its own ``O`` (flux levels differ
  between quarters), and quarters are combined only on the same pixel grid;
* missing data never looks like dimming: NaN cadences are dropped, and a pixel
  or phase bin without data is filled with 0 ("no change") after normalisation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pixel_cnn.core.stack import N_PHASE_BINS, StackError, validate_stack
from pixel_cnn.io.dataset import replace_dir

#: Out-of-transit phase windows of the reference image O (dataset README).
REFERENCE_WINDOWS = ((0.2, 0.3), (0.7, 0.8))
#: Barycentric Julian Date of each mission's time-system zero point (days).
#: BKJD = BJD - 2454833 (Kepler Archive Manual, sec. 2.3.2); BTJD = BJD - 2457000
#: (TESS Science Data Products Description Document, sec. 5.1).
BKJD_REF, BTJD_REF = 2454833.0, 2457000.0
#: Fewest in-transit cadences and out-of-transit reference cadences per target.
MIN_IN_TRANSIT, MIN_REFERENCE = 3, 10
#: Column names of an ephemeris table: KOI cumulative table and TESS TOI table.
KOI_COLUMNS = {"id": "kepid", "period": "koi_period", "epoch": "koi_time0bk",
               "duration": "koi_duration", "name": "kepoi_name"}
TOI_COLUMNS = {"id": "tid", "period": "pl_orbper", "epoch": "pl_tranmid",
               "duration": "pl_trandurh", "name": "toi"}
TPF_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")
REPORT_FILE = "prep_report.csv"


class TPFError(ValueError):
    """A TPF or a target that cannot give a stack; the message says why."""


# ------------------------------------------------------------------ science (pure numpy)


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
    the NaN rule of :func:`~pixel_cnn.core.stack.validate_stack` for files;
    the written stack holds no NaN, so the served model (which rejects NaN)
    takes it as it is.

    stack : ``(B, H, W)`` float -> (float32 ``(B, H, W)``, bool mask ``(B, H, W)``
    True where a value was missing).
    """
    missing = ~np.isfinite(stack)
    return np.where(missing, 0.0, stack).astype(np.float32), missing


# ------------------------------------------------------------------ ephemeris


@dataclass(frozen=True)
class Ephemeris:
    """One transit ephemeris: period (days), epoch (BJD), duration (hours)."""

    target_id: int
    name: str
    period_d: float
    epoch_bjd: float
    duration_h: float
    n_on_star: int = 1

    def epoch_in(self, bjd_ref: float) -> float:
        """Epoch in a file's time system (``BJD - bjd_ref``: BKJD for 2454833, BTJD for 2457000)."""
        return self.epoch_bjd - bjd_ref


def load_ephemeris(path: str | os.PathLike) -> tuple[dict[int, Ephemeris], dict[int, str], str]:
    """Read an ephemeris CSV (``#`` comment lines skipped); one ephemeris per target.

    Two layouts, told apart by their columns:

    * KOI (the NASA Exoplanet Archive KOI cumulative table works as is):
      ``kepid``, ``koi_period`` [d], ``koi_time0bk`` [BKJD = BJD - 2454833],
      ``koi_duration`` [h], optional ``kepoi_name``. K2 targets: their EPIC id
      in ``kepid`` (a K2 TPF stores it in ``KEPLERID``), epoch in BKJD.
    * TOI (TESS): ``tid`` (TIC id), ``pl_orbper`` [d], ``pl_tranmid`` [BJD],
      ``pl_trandurh`` [h], optional ``toi``.

    Several KOIs/TOIs on one star: the stack is folded on the one with the
    lowest KOI/TOI number among those with a complete ephemeris (``.01``, the
    first signal the pipeline found, usually the strongest); without a name
    column, the first complete row. Filter the CSV to fold on another one.

    Returns
    -------
    (ephemerides, problems, layout)
        ``ephemerides``: target id -> :class:`Ephemeris` (epoch in BJD);
        ``problems``: target id -> why it has no usable row (NaN or
        non-positive period/duration, NaN epoch); ``layout``: "koi" or "toi".

    Raises
    ------
    TPFError
        Unreadable file, or neither layout's columns (the missing ones named).
    """
    try:
        table = pd.read_csv(path, comment="#", low_memory=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TPFError(f"{path}: cannot read the ephemeris CSV ({exc})") from None
    layouts = {"koi": KOI_COLUMNS, "toi": TOI_COLUMNS}
    layout = next((k for k, c in layouts.items()
                   if all(c[f] in table.columns for f in ("id", "period", "epoch", "duration"))), None)
    if layout is None:
        need = {k: [c[f] for f in ("id", "period", "epoch", "duration") if c[f] not in table.columns]
                for k, c in layouts.items()}
        raise TPFError(f"{path}: not an ephemeris table; KOI layout lacks {need['koi']}, "
                       f"TOI layout lacks {need['toi']}")
    cols = layouts[layout]
    ids = pd.to_numeric(table[cols["id"]], errors="coerce")
    if ids.isna().any():
        raise TPFError(f"{path}: non-numeric {cols['id']} in {int(ids.isna().sum())} row(s)")
    num = {f: pd.to_numeric(table[cols[f]], errors="coerce") for f in ("period", "epoch", "duration")}
    epoch_bjd = num["epoch"] + (BKJD_REF if layout == "koi" else 0.0)
    names = table[cols["name"]].astype(str) if cols["name"] in table.columns else pd.Series(
        [f"row{i}" for i in range(len(table))])
    frame = pd.DataFrame({"id": ids.astype(np.int64), "name": names, "period": num["period"],
                          "epoch": epoch_bjd, "duration": num["duration"], "row": np.arange(len(table))})
    frame["complete"] = (np.isfinite(frame["period"]) & (frame["period"] > 0) & np.isfinite(frame["epoch"])
                         & np.isfinite(frame["duration"]) & (frame["duration"] > 0))
    if cols["name"] in table.columns:
        # "K00752.01" sorts as text; TOI numbers (101.01) as numbers.
        key = pd.to_numeric(frame["name"], errors="coerce")
        frame["order"] = key if key.notna().all() else frame["name"]
    else:
        frame["order"] = frame["row"]
    ephemerides, problems = {}, {}
    for target, group in frame.groupby("id", sort=True):
        good = group[group["complete"]].sort_values(["order", "row"])
        if good.empty:
            bad = group.iloc[0]
            problems[int(target)] = (
                f"ephemeris row(s) for {cols['id']} {target} incomplete: {cols['period']}={bad['period']}, "
                f"{cols['epoch']}={table[cols['epoch']].iloc[bad['row']]}, {cols['duration']}={bad['duration']} "
                "(need finite values, period and duration > 0)")
            continue
        row = good.iloc[0]
        ephemerides[int(target)] = Ephemeris(int(target), str(row["name"]), float(row["period"]),
                                             float(row["epoch"]), float(row["duration"]), len(group))
    return ephemerides, problems, layout


# ------------------------------------------------------------------ reading (edge: lightkurve)


@dataclass
class TPFData:
    """The cadences of one TPF that survive the quality and NaN cuts.

    time : float64 ``(N,)``, days in the file's own system (BKJD/BTJD: ``BJD - bjd_ref``).
    flux : float32 ``(N, H, W)``, electrons/s (``FLUX`` column, background-subtracted).
    grid : the pixel grid, ``(mission, channel or camera-ccd, column, row, H, W)``;
        equal grids are the same CCD pixels.
    """

    path: str
    target_id: int
    mission: str
    period_label: str  # "Q5", "C3", "S14"
    bjd_ref: float
    time: np.ndarray
    flux: np.ndarray
    grid: tuple
    n_raw: int
    n_quality: int
    n_nonfinite_time: int
    n_nan_flux: int


def _lightkurve():
    with warnings.catch_warnings():  # "tpfmodel submodule is not available without oktopus"
        warnings.simplefilter("ignore")
        import lightkurve
    return lightkurve


def read_tpf(path: str | os.PathLike, quality_bitmask: str | int = "default") -> TPFData:
    """Read one TPF with lightkurve and drop unusable cadences.

    Kepler long and short cadence, K2 and TESS SPOC TPFs (``lightkurve.read``
    returns a ``KeplerTargetPixelFile`` or ``TessTargetPixelFile``). Cadences
    dropped, each counted: flagged by the lightkurve quality ``bitmask``
    ("default": ``KeplerQualityFlags``/``TessQualityFlags.DEFAULT_BITMASK``),
    non-finite ``TIME``, and cadences whose ``FLUX`` is NaN in every pixel.
    Single NaN pixels stay NaN (ignored by the medians).

    Raises
    ------
    TPFError
        Unreadable or truncated FITS, not a target pixel file, no
        ``KEPLERID``/``TICID`` in the header; the message starts with the file name.
    """
    lk = _lightkurve()
    name = Path(path).name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tpf = lk.read(str(path), quality_bitmask=quality_bitmask)
            if not isinstance(tpf, lk.targetpixelfile.TargetPixelFile):
                raise TPFError(f"{name}: not a target pixel file (lightkurve read a {type(tpf).__name__})")
            raw_time = np.asarray(tpf.hdu[1].data["TIME"], dtype=np.float64)
            raw_flux = np.asarray(tpf.hdu[1].data["FLUX"], dtype=np.float32)
            header0, header1 = tpf.get_header(0), tpf.get_header(1)
        except TPFError:
            raise
        except Exception as exc:  # astropy/lightkurve raise many types for a bad file
            raise TPFError(f"{name}: unreadable or truncated FITS file ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]})") from None
    truncated = [str(w.message) for w in caught if "truncated" in str(w.message).lower()]
    if truncated:
        raise TPFError(f"{name}: truncated FITS file ({truncated[0][:200]})")
    target = tpf.targetid
    if target in (None, ""):
        raise TPFError(f"{name}: header has no target id (KEPLERID / TICID)")
    mission = str(tpf.mission or header0.get("TELESCOP") or "unknown")
    if isinstance(tpf, lk.TessTargetPixelFile):
        label, chip = f"S{header0.get('SECTOR', '?')}", f"{header0.get('CAMERA', '?')}-{header0.get('CCD', '?')}"
        default_ref = BTJD_REF
    else:
        q = header0.get("QUARTER")
        label = f"Q{q}" if q not in (None, "") else f"C{header0.get('CAMPAIGN', '?')}"
        chip, default_ref = str(header0.get("CHANNEL", "?")), BKJD_REF
    bjdrefi, bjdreff = header1.get("BJDREFI"), header1.get("BJDREFF")
    bjd_ref = float(bjdrefi) + float(bjdreff or 0.0) if bjdrefi not in (None, "") else default_ref

    n_raw = len(raw_time)
    finite_time = np.isfinite(raw_time)
    quality_ok = np.asarray(tpf.quality_mask, dtype=bool)
    nan_cadence = np.isnan(raw_flux).reshape(n_raw, -1).all(axis=1) if n_raw else np.zeros(0, bool)
    keep = quality_ok & finite_time & ~nan_cadence
    height, width = raw_flux.shape[1:]
    return TPFData(
        path=str(path), target_id=int(target), mission=mission, period_label=label, bjd_ref=bjd_ref,
        time=raw_time[keep], flux=raw_flux[keep],
        grid=(mission, chip, int(tpf.column), int(tpf.row), int(height), int(width)),
        n_raw=n_raw,
        n_quality=int((~quality_ok & finite_time).sum()),
        n_nonfinite_time=int((~finite_time).sum()),
        n_nan_flux=int((quality_ok & finite_time & nan_cadence).sum()),
    )


def header_target_id(path: str | os.PathLike) -> int:
    """Target id from a FITS primary header (``KEPLERID`` or ``TICID``), without reading the data.

    Raises
    ------
    TPFError
        Unreadable header, or no id keyword.
    """
    from astropy.io import fits

    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(path, 0)
    except Exception as exc:
        raise TPFError(f"{name}: unreadable FITS header ({type(exc).__name__}: {exc})") from None
    for key in ("KEPLERID", "TICID"):
        value = header.get(key)
        if value not in (None, ""):
            try:
                return int(value)
            except (TypeError, ValueError):
                raise TPFError(f"{name}: header {key}={value!r} is not an integer id") from None
    raise TPFError(f"{name}: header has no target id (KEPLERID / TICID)")


# ------------------------------------------------------------------ one target


@dataclass
class TargetResult:
    """The outcome for one target: a stack, or a reason; plus the report row."""

    target_id: int
    stack: np.ndarray | None
    report: dict = field(default_factory=dict)


def combine_quarters(quarters: list[TPFData], eph: Ephemeris, n_bins: int = N_PHASE_BINS,
                     min_in_transit: int = MIN_IN_TRANSIT, min_reference: int = MIN_REFERENCE
                     ) -> tuple[np.ndarray, dict]:
    """Stack of one target from the quarters/sectors of its TPFs.

    Quarters are grouped by pixel grid (:attr:`TPFData.grid`: same CCD channel,
    same corner pixel, same size). The spacecraft rolls between Kepler seasons,
    so other grids show the sky rotated and shifted; resampling them onto one
    grid would blur the 4-arcsec pixels and smear a neighbour's eclipse over
    the target (the centroid-offset evidence). So one grid is used: the one
    with the most in-transit cadences (ties: more cadences, then the earlier
    file). Each of its quarters is normalised by its own reference image ``O``
    (:func:`relative_flux`); the cadences of all of them are then pooled and
    binned (:func:`bin_stack`). For one quarter this is exactly
    ``(median F_bin - O) / O`` (a median commutes with ``(x - O) / O``, O > 0).

    Returns
    -------
    (stack, info) : float64 ``(n_bins, H, W)`` with NaN where data are missing,
        and a dict of counts for the report.

    Raises
    ------
    TPFError
        No in-transit cadences, fewer than ``min_in_transit`` of them or than
        ``min_reference`` reference cadences, or no pixel with a usable reference.
    """
    groups: dict[tuple, list] = {}
    for q in quarters:
        t0 = eph.epoch_in(q.bjd_ref)
        phase = phase_fold(q.time, eph.period_d, t0)
        in_transit, in_secondary = transit_windows(phase, eph.period_d, eph.duration_h)
        groups.setdefault(q.grid, []).append((q, phase, in_transit, in_secondary))
    n_cad = sum(len(q.time) for q in quarters)
    n_in_all = sum(int(it.sum()) for g in groups.values() for _, _, it, _ in g)
    if n_in_all == 0:
        raise TPFError(
            f"no in-transit cadences: none of {n_cad} cadences lies within {eph.duration_h / 2:.2f} h "
            f"of a mid-transit (P={eph.period_d:g} d, epoch BJD {eph.epoch_bjd:.5f}, {eph.name})")
    order = sorted(groups, key=lambda g: (-sum(int(x[2].sum()) for x in groups[g]),
                                          -sum(len(x[0].time) for x in groups[g])))
    grid = order[0]
    used = groups[grid]
    rel, phases, windows, n_ref = [], [], [], 0
    for q, phase, in_transit, in_secondary in used:
        ref = reference_mask(phase, in_transit)
        n_ref += int(ref.sum())
        r, _ = relative_flux(q.flux, ref)
        rel.append(r)
        phases.append(phase)
        windows.append(in_transit | in_secondary)
    n_in = sum(int(x[2].sum()) for x in used)
    if n_in < min_in_transit:
        raise TPFError(f"too few cadences: {n_in} in transit (need >= {min_in_transit})")
    if n_ref < min_reference:
        raise TPFError(f"too few cadences: {n_ref} out-of-transit reference cadences at phases "
                       f"0.2-0.3/0.7-0.8 (need >= {min_reference})")
    rel_all = np.concatenate(rel)
    dead = np.isnan(rel_all).all(axis=0)
    if dead.all():
        raise TPFError("every pixel is NaN throughout or has a non-positive reference flux")
    stack, counts = bin_stack(np.concatenate(phases), rel_all, np.concatenate(windows), n_bins)
    left_out = [f"{Path(q.path).name} ({q.period_label}: other pixel grid)"
                for g in order[1:] for q, *_ in groups[g]]
    info = {
        "quarters_used": ",".join(q.period_label for q, *_ in used),
        "files_left_out": "; ".join(left_out),
        "n_cadences": int(sum(len(q.time) for q, *_ in used)),
        "n_in_transit": n_in,
        "n_reference": n_ref,
        "n_empty_bins": int((counts == 0).sum()),
        "n_dead_pixels": int(dead.sum()),
    }
    return stack, info


def process_target(target_id: int, paths: list[str], eph: Ephemeris | None, problem: str = "",
                   quality_bitmask: str | int = "default", n_bins: int = N_PHASE_BINS,
                   min_in_transit: int = MIN_IN_TRANSIT, min_reference: int = MIN_REFERENCE
                   ) -> TargetResult:
    """Read a target's TPFs and build its stack; never raises for bad data.

    Returns a :class:`TargetResult` whose ``stack`` is float32 ``(n_bins, H, W)``
    (missing data filled by :func:`fill_missing`, validated by
    :func:`~pixel_cnn.core.stack.validate_stack`) or ``None``, and whose
    ``report`` row says what was used, what was dropped and, on failure, why.
    """
    report = {"target_id": target_id, "status": "failed", "reason": "", "ephemeris": "",
              "n_kois_on_star": 0, "files": ";".join(sorted(Path(p).name for p in paths))}
    if eph is None:
        report["reason"] = problem or f"no ephemeris row for target {target_id}"
        return TargetResult(target_id, None, report)
    report.update(ephemeris=eph.name, n_kois_on_star=eph.n_on_star, period_d=eph.period_d,
                  epoch_bjd=eph.epoch_bjd, duration_h=eph.duration_h)
    quarters, unreadable = [], []
    for path in sorted(paths):
        try:
            q = read_tpf(path, quality_bitmask)
        except TPFError as exc:
            unreadable.append(str(exc))
            continue
        if q.target_id != target_id:
            unreadable.append(f"{Path(path).name}: target id {q.target_id} in the data HDU header "
                              f"differs from {target_id} in the primary header")
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
        report.update(info)
        filled, _ = fill_missing(stack)
        filled = validate_stack(filled, nan="reject")
    except (TPFError, StackError) as exc:
        report["reason"] = str(exc)
        return TargetResult(target_id, None, report)
    report.update(status="ok", shape="x".join(map(str, filled.shape)))
    return TargetResult(target_id, filled, report)


# ------------------------------------------------------------------ many targets


def find_tpfs(tpf_dir: str | os.PathLike) -> list[Path]:
    """FITS files under ``tpf_dir`` (recursive: lightkurve's download cache nests them), sorted.

    Raises
    ------
    TPFError
        ``tpf_dir`` is not a folder.
    """
    root = Path(tpf_dir)
    if not root.is_dir():
        raise TPFError(f"tpf_dir {root} is not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(TPF_SUFFIXES))


def build_stacks(tpf_dir: str | os.PathLike, ephemeris: str | os.PathLike, out_dir: str | os.PathLike,
                 n_jobs: int = 1, quality_bitmask: str | int = "default", progress: bool = True,
                 min_in_transit: int = MIN_IN_TRANSIT, min_reference: int = MIN_REFERENCE,
                 known_problems: dict[int, str] | None = None) -> pd.DataFrame:
    """Build ``out_dir/stacks/pixdiff_<id>.npy`` for every target with TPFs under ``tpf_dir``.

    Files are grouped by the target id of their header (``KEPLERID``/``TICID``,
    never the file name); each target is processed by :func:`process_target`,
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
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

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
    tasks = [delayed(process_target)(t, by_target[t], ephemerides.get(t), problems.get(t, ""),
                                     quality_bitmask, N_PHASE_BINS, min_in_transit, min_reference)
             for t in sorted(by_target)]
    runner = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    try:
        for result in tqdm(runner(tasks), total=len(tasks), desc="TPF targets", unit="target",
                           disable=not progress):
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


def download_tpfs(target_ids: list[int], layout: str, cache_dir: str | os.PathLike,
                  cadence: str = "long") -> dict[int, str]:
    """Fetch TPFs from MAST with lightkurve's search into ``cache_dir`` (needs network).

    ``layout="koi"``: Kepler TPFs of ``KIC <id>`` (``cadence`` long/short);
    ``"toi"``: TESS SPOC 2-min TPFs of ``TIC <id>``. Files already in the cache
    are not fetched again (lightkurve's ``download_all(download_dir=...)``).
    Returns target id -> problem for each target that could not be fetched.
    """
    lk = _lightkurve()
    problems = {}
    for target in target_ids:
        try:
            if layout == "koi":
                found = lk.search_targetpixelfile(f"KIC {target}", mission="Kepler", cadence=cadence)
            else:
                found = lk.search_targetpixelfile(f"TIC {target}", mission="TESS", author="SPOC", exptime=120)
            if len(found) == 0:
                problems[target] = "no TPF found at MAST"
                continue
            found.download_all(download_dir=str(cache_dir))
        except Exception as exc:  # network and archive errors: reported per target
            problems[target] = f"download failed ({type(exc).__name__}: {exc})"
    return problems


def stacks_summary(report: pd.DataFrame) -> dict[str, int]:
    """Counts for logging: targets ok / failed and dropped cadences."""
    ok = report["status"] == "ok"
    out = {"n_targets_ok": int(ok.sum()), "n_targets_failed": int((~ok).sum())}
    for col in ("n_dropped_quality", "n_dropped_nonfinite_time", "n_dropped_nan_flux"):
        if col in report:
            out[col] = int(pd.to_numeric(report[col], errors="coerce").fillna(0).sum())
    return out
