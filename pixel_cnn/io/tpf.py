"""Pixel-difference stacks from raw Target Pixel Files (Kepler, K2, TESS): the file side.

Reading TPFs (lightkurve/astropy), the ephemeris CSV, one target's files
(:func:`process_target`), the folder driver (:func:`build_stacks`, joblib),
downloads and the report. The science (phase folding, transit windows,
normalisation, binning, the missing-data rule, combining quarters, the time
system of an epoch) is pure numpy in :mod:`pixel_cnn.stacks.phasefold`;
``docs/tpf.md`` describes every choice.

Every failure of one file (unreadable, truncated or corrupt FITS, a missing or
non-numeric header keyword, an empty aperture, no cadence left after the
quality mask, a TIME column without a finite value) is caught at that file's
boundary (:func:`read_tpf`, :func:`header_target_id`) and becomes a reason
naming the file in ``prep_report.csv``; the other files still go through.
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

from pixel_cnn.stacks.phasefold import (BKJD_REF, BTJD_REF, MIN_IN_TRANSIT, MIN_REFERENCE,
                                      EpochSystemError, FoldError, Segment, fill_missing,
                                      fold_segments, resolve_epoch)
from pixel_cnn.vetter.stack import N_PHASE_BINS, StackError, validate_stack
from pixel_cnn.io.dataset import replace_dir

#: Column names of an ephemeris table: KOI cumulative table and TESS TOI table.
KOI_COLUMNS = {"id": "kepid", "period": "koi_period", "epoch": "koi_time0bk",
               "duration": "koi_duration", "name": "kepoi_name"}
TOI_COLUMNS = {"id": "tid", "period": "pl_orbper", "epoch": "pl_tranmid",
               "duration": "pl_trandurh", "name": "toi"}
#: The time system each layout's epoch column is documented in (NASA Exoplanet Archive).
EPOCH_SYSTEMS = {"koi": "BKJD", "toi": "BJD"}
TPF_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")
REPORT_FILE = "prep_report.csv"


class TPFError(ValueError):
    """A TPF or a target that cannot give a stack; the message says why."""


# ------------------------------------------------------------------ ephemeris


@dataclass(frozen=True)
class Ephemeris:
    """One transit ephemeris: period (days), epoch, duration (hours).

    ``epoch_bjd`` is the epoch in BJD as its column declares it
    (``epoch_given + ref(epoch_system)``); ``epoch_given`` is the number as
    written and ``epoch_system`` its column's time system ("BKJD" for
    ``koi_time0bk``, "BJD" for ``pl_tranmid``). Whether that declaration holds
    is checked per target against its TPFs' time range
    (:func:`pixel_cnn.stacks.phasefold.resolve_epoch`, in :func:`combine_quarters`).
    Without ``epoch_given`` the epoch is ``epoch_bjd`` declared in BJD.
    """

    target_id: int
    name: str
    period_d: float
    epoch_bjd: float
    duration_h: float
    n_on_star: int = 1
    epoch_given: float | None = None
    epoch_system: str = "BJD"

    def given(self) -> tuple[float, str]:
        """``(epoch as written, its declared time system)``."""
        if self.epoch_given is None:
            return self.epoch_bjd, "BJD"
        return self.epoch_given, self.epoch_system

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
        ``ephemerides``: target id -> :class:`Ephemeris` (epoch as given, with
        its column's time system; whether it holds is checked per target
        against its TPFs, :func:`combine_quarters`);
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
    declared = EPOCH_SYSTEMS[layout]
    epoch_bjd = num["epoch"] + (BKJD_REF if declared == "BKJD" else 0.0)
    names = table[cols["name"]].astype(str) if cols["name"] in table.columns else pd.Series(
        [f"row{i}" for i in range(len(table))])
    frame = pd.DataFrame({"id": ids.astype(np.int64), "name": names, "period": num["period"],
                          "epoch": epoch_bjd, "given": num["epoch"], "duration": num["duration"],
                          "row": np.arange(len(table))})
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
                                             float(row["epoch"]), float(row["duration"]), len(group),
                                             float(row["given"]), declared)
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


def _header_number(header, key: str, name: str, what: str, integer: bool = False,
                   default: float | None = None) -> float:
    """A numeric header keyword, or :class:`TPFError` naming the file, the keyword and the problem."""
    value = header.get(key)
    if value in (None, ""):
        if default is not None:
            return default
        raise TPFError(f"{name}: header keyword {key} ({what}) "
                       f"{'has no value' if key in header else 'is missing'}")
    try:
        number = float(value)
        if not np.isfinite(number) or (integer and number != int(number)):
            raise ValueError
    except (TypeError, ValueError):
        raise TPFError(f"{name}: header keyword {key} ({what}) = {value!r} is not "
                       f"{'an integer' if integer else 'a finite number'}") from None
    return int(number) if integer else number


def read_tpf(path: str | os.PathLike, quality_bitmask: str | int = "default") -> TPFData:
    """Read one TPF with lightkurve and drop unusable cadences.

    Kepler long and short cadence, K2 and TESS SPOC TPFs (``lightkurve.read``
    returns a ``KeplerTargetPixelFile`` or ``TessTargetPixelFile``). Cadences
    dropped, each counted: flagged by the lightkurve quality ``bitmask``
    ("default": ``KeplerQualityFlags``/``TessQualityFlags.DEFAULT_BITMASK``),
    non-finite ``TIME``, and cadences whose ``FLUX`` is NaN in every pixel.
    Single NaN pixels stay NaN (ignored by the medians).

    Header keywords read (Kepler Archive Manual, KDMC-10008, sec. 2.3):
    ``KEPLERID``/``TICID`` (target), in the pixel extension ``1CRV5P``/``2CRV5P``
    (CCD column/row of the grid's corner pixel: the pixel grid), ``BJDREFI`` +
    ``BJDREFF`` (the time system; missing: the mission's, 2454833 or 2457000).

    Raises
    ------
    TPFError
        Every problem of the file, the message starting with the file name:
        unreadable, truncated or corrupt FITS; not a target pixel file; a
        header keyword above missing or not a number; an empty aperture (no
        pixel, or the ``APERTURE`` image has no collected pixel, bit 1);
        ``TIME`` without a finite value; no cadence left after the quality
        mask (and the NaN cuts). Nothing else escapes: an unexpected error of
        lightkurve/astropy on a bad file becomes a ``TPFError`` with its type.
    """
    name = Path(path).name
    try:
        return _read_tpf(path, name, quality_bitmask)
    except TPFError:
        raise
    except Exception as exc:  # the file's boundary: whatever a malformed file makes the readers raise
        raise TPFError(f"{name}: cannot read the TPF ({type(exc).__name__}: "
                       f"{(str(exc).splitlines() or [''])[0][:200]})") from None


def _read_tpf(path, name: str, quality_bitmask) -> TPFData:
    lk = _lightkurve()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tpf = lk.read(str(path), quality_bitmask=quality_bitmask)
            if not isinstance(tpf, lk.targetpixelfile.TargetPixelFile):
                raise TPFError(f"{name}: not a target pixel file (lightkurve read a {type(tpf).__name__})")
            raw_time = np.asarray(tpf.hdu[1].data["TIME"], dtype=np.float64)
            raw_flux = np.asarray(tpf.hdu[1].data["FLUX"], dtype=np.float32)
            header0, header1 = tpf.get_header(0), tpf.get_header(1)
            aperture = tpf.hdu[2].data if len(tpf.hdu) > 2 else None
            quality_ok = np.asarray(tpf.quality_mask, dtype=bool)
        except TPFError:
            raise
        except Exception as exc:  # astropy/lightkurve raise many types for a bad file
            raise TPFError(f"{name}: unreadable or truncated FITS file ({type(exc).__name__}: "
                           f"{(str(exc).splitlines() or [''])[0][:200]})") from None
    truncated = [str(w.message) for w in caught if "truncated" in str(w.message).lower()]
    if truncated:
        raise TPFError(f"{name}: truncated FITS file ({truncated[0][:200]})")
    target = tpf.targetid
    if target in (None, ""):
        raise TPFError(f"{name}: header has no target id (KEPLERID / TICID)")
    try:
        target = int(target)
    except (TypeError, ValueError):
        raise TPFError(f"{name}: header target id {target!r} is not an integer") from None
    mission = str(tpf.mission or header0.get("TELESCOP") or "unknown")
    if isinstance(tpf, lk.TessTargetPixelFile):
        label, chip = f"S{header0.get('SECTOR', '?')}", f"{header0.get('CAMERA', '?')}-{header0.get('CCD', '?')}"
        default_ref = BTJD_REF
    else:
        q = header0.get("QUARTER")
        label = f"Q{q}" if q not in (None, "") else f"C{header0.get('CAMPAIGN', '?')}"
        chip, default_ref = str(header0.get("CHANNEL", "?")), BKJD_REF
    column = _header_number(header1, "1CRV5P", name, "CCD column of the pixel grid", integer=True)
    row = _header_number(header1, "2CRV5P", name, "CCD row of the pixel grid", integer=True)
    if header1.get("BJDREFI") in (None, ""):
        bjd_ref = default_ref
    else:
        bjd_ref = (_header_number(header1, "BJDREFI", name, "integer part of the BJD reference", integer=True)
                   + _header_number(header1, "BJDREFF", name, "fraction of the BJD reference", default=0.0))

    if raw_flux.ndim != 3 or raw_flux.shape[1] * raw_flux.shape[2] == 0:
        raise TPFError(f"{name}: empty aperture: the FLUX image has no pixel (shape {raw_flux.shape[1:]})")
    if aperture is not None:
        collected = (np.asarray(aperture).astype(np.int64) & 1) > 0
        if not collected.any():
            raise TPFError(f"{name}: empty aperture: the APERTURE image has no collected pixel (bit 1)")
    n_raw = len(raw_time)
    finite_time = np.isfinite(raw_time)
    if not finite_time.any():
        raise TPFError(f"{name}: TIME has no finite value (NaN in all {n_raw} cadences)")
    nan_cadence = np.isnan(raw_flux).reshape(n_raw, -1).all(axis=1)
    keep = quality_ok & finite_time & ~nan_cadence
    n_quality = int((~quality_ok & finite_time).sum())
    if not keep.any():
        raise TPFError(f"{name}: no cadences left after the quality mask: of {n_raw}, {n_quality} flagged "
                       f"(bitmask {quality_bitmask!r}), {int((~finite_time).sum())} non-finite TIME, "
                       f"{int((quality_ok & finite_time & nan_cadence).sum())} all-NaN FLUX")
    height, width = raw_flux.shape[1:]
    return TPFData(
        path=str(path), target_id=target, mission=mission, period_label=label, bjd_ref=bjd_ref,
        time=raw_time[keep], flux=raw_flux[keep],
        grid=(mission, chip, column, row, int(height), int(width)),
        n_raw=n_raw,
        n_quality=n_quality,
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
        ``epoch_note``, the counts of :func:`~pixel_cnn.stacks.phasefold.fold_segments`.

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
        "files_left_out": "; ".join(f"{Path(quarters[i].path).name} ({quarters[i].period_label}: other pixel grid)"
                                    for i in fold["left_out"]),
        "epoch_system": reading.system,
        "epoch_converted_from": reading.declared if reading.converted else "",
        "epoch_note": reading.note(),
        "epoch_bjd": reading.epoch_bjd,
        **{k: v for k, v in fold.items() if k not in ("used", "left_out")},
    }
    return stack, info


def process_target(target_id: int, paths: list[str], eph: Ephemeris | None, problem: str = "",
                   quality_bitmask: str | int = "default", n_bins: int = N_PHASE_BINS,
                   min_in_transit: int = MIN_IN_TRANSIT, min_reference: int = MIN_REFERENCE
                   ) -> TargetResult:
    """Read a target's TPFs and build its stack; never raises for bad data.

    A file that cannot be read (any reason of :func:`read_tpf`) is listed in
    ``files_unreadable`` with its reason and left out; the target's other
    files still make the stack. The target fails (``reason``) only when no
    file is left, or the epoch's time system cannot be told, or too few
    cadences remain.

    Returns a :class:`TargetResult` whose ``stack`` is float32 ``(n_bins, H, W)``
    (missing data filled by :func:`~pixel_cnn.stacks.phasefold.fill_missing`, validated by
    :func:`~pixel_cnn.vetter.stack.validate_stack`) or ``None``, and whose
    ``report`` row says what was used, what was dropped and, on failure, why.
    """
    report = {"target_id": target_id, "status": "failed", "reason": "", "ephemeris": "",
              "n_kois_on_star": 0, "files": ";".join(sorted(Path(p).name for p in paths))}
    if eph is None:
        report["reason"] = problem or f"no ephemeris row for target {target_id}"
        return TargetResult(target_id, None, report)
    given, declared = eph.given()
    report.update(ephemeris=eph.name, n_kois_on_star=eph.n_on_star, period_d=eph.period_d,
                  epoch_given=given, epoch_declared=declared, epoch_bjd=eph.epoch_bjd,
                  duration_h=eph.duration_h)
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
    except (TPFError, StackError, ValueError) as exc:
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
