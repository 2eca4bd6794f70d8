"""Catalogue context of a transit candidate: what the other KOIs of the catalogue say about it.

Pure science (pandas, numpy, the standard library); no MLflow, no file paths, relative imports only (this
module ships inside the registered model). The Kepler team found most false positives by
catalogue context rather than by one star's own light curve:

- multi-KOI systems are almost all planets (Lissauer et al. 2012, ApJ 750, 112; Rowe et al.
  2014, ApJ 784, 45), and a sibling at a period ratio of exactly 1:1 or 2:1 is the signature
  of an eclipsing binary's primary and secondary found as two events;
- 12 % of KOIs are contamination whose period and epoch match another, usually brighter,
  star's (Coughlin et al. 2014, AJ 147, 119: "ephemeris matching").

The catalogue is a table of MEASUREMENTS only (:data:`CATALOGUE_COLUMNS`: position, period,
epoch, depth, magnitude): never a disposition, score or flag, so no label can feed a context
feature. :func:`catalogue_of` cuts it from a KOI table (every disposition, CANDIDATE included,
so which KOIs are in it does not depend on labels either). :func:`context_features` computes
:data:`CONTEXT_FEATURES` of candidate rows against a catalogue, the candidate's own KOI left
out (by name, or by an identical ephemeris on the same star), so a candidate in the catalogue
and the same candidate served from its parameters get the same features.

Stars are matched by position, not by identifier: two rows are on the same star when their
KIC positions are within :data:`SAME_STAR_ARCSEC` (every KOI of one KIC target carries the same
``ra``, ``dec``), so a served candidate needs no ``kepid``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from statistics import NormalDist

#: Catalogue columns: measurements only. ``kepid``/``kepoi_name`` identify rows (to leave a
#: candidate's own KOI out); they are never features. Never a disposition, score or flag.
CATALOGUE_COLUMNS: tuple[str, ...] = ("kepid", "kepoi_name", "ra", "dec", "koi_period", "koi_time0bk",
                                      "koi_depth", "koi_kepmag")
#: Columns whose presence in a catalogue is refused (answers): prefixes and exact names.
_ANSWER_PREFIXES = ("koi_disposition", "koi_pdisposition", "koi_score", "koi_fpflag_", "fpwg_", "label",
                    "kepler_name", "koi_comment")

#: Two rows are on the same star when their positions are closer than this [arcsec].
SAME_STAR_ARCSEC = 1.0
#: Coughlin et al. 2014 (Sect. 3) ephemeris-match significance thresholds: sigma_P >= 5 for the
#: period (ratio) and sigma_T >= 3 for the epoch; period ratios up to 50.
MATCH_SIGMA_P, MATCH_SIGMA_T, MAX_PERIOD_RATIO = 5.0, 3.0, 50
#: Small-integer period ratios j:k (1 <= k <= j <= 5) of Lissauer et al. 2012 / Fabrycky et al. 2014.
SMALL_RATIOS = np.array(sorted({j / k for j in range(1, 6) for k in range(1, j + 1)}))
#: Cap of a significance (erfcinv(0) is infinite) and floor of log10 offsets.
SIGMA_CAP, LOG_FLOOR = 10.0, -6.0

#: Context features: ``name -> (formula, source)``.
CONTEXT_FEATURES: dict[str, tuple[str, str]] = {
    "ctx_n_koi_star": (
        "number of KOIs on the candidate's star: 1 + catalogue KOIs within SAME_STAR_ARCSEC of its position "
        "(its own KOI left out) [count]",
        "Lissauer et al. 2012, ApJ 750, 112 (multiplicity boost); Rowe et al. 2014, ApJ 784, 45",
    ),
    "ctx_sibling_log_offset": (
        "log10 of the smallest fractional distance of a sibling period ratio r = P_long / P_short to a "
        "small-integer ratio j/k (1 <= k <= j <= 5): min |r / (j/k) - 1|, floored at 1e-6; 0 (offset 1) when "
        "the star has no other KOI. Near -6: an exact 1:1 or 2:1 ratio (an eclipsing binary's primary and "
        "secondary, or a duplicate); -2 to -1: the near-resonant pairs of real multi-planet systems",
        "Lissauer et al. 2011, ApJS 197, 8 and 2012 (period ratios of multis); Fabrycky et al. 2014, ApJ 790, 146",
    ),
    "ctx_ephem_sigma_p": (
        "best period-match significance with a KOI of ANOTHER star whose epoch matches (sigma_T >= 3): "
        "sigma_P = sqrt(2) erfcinv(dP'), dP' = |r - rint(r)|, r = P_long / P_short <= 50; "
        "sigma_T = sqrt(2) erfcinv(dT'), dT' = |dT - rint(dT)|, dT = (T_long - T_short) / P_short (epochs BKJD); "
        "capped at 10; 0 when no epoch matches",
        "Coughlin et al. 2014, AJ 147, 119, Sect. 3 (ephemeris matching)",
    ),
    "ctx_n_ephem_match": (
        "number of KOIs of other stars that match the candidate's ephemeris (sigma_P >= 5 and sigma_T >= 3) [count]",
        "Coughlin et al. 2014, Sect. 3",
    ),
    "ctx_match_log_sep": (
        "log10 of the sky separation [arcsec] to the best ephemeris match (highest sigma_P among matches); "
        "NaN without a match. Contamination reaches arcminutes (PSF wings, CCD crosstalk, reflections)",
        "Coughlin et al. 2014, Sect. 5 (separation of parent and child)",
    ),
    "ctx_match_dmag": (
        "Kepler magnitude of the candidate minus that of its best ephemeris match [mag]; > 0: the match is "
        "brighter (the usual parent of a contaminated 'child'); NaN without a match",
        "Coughlin et al. 2014, Sect. 5 (the parent is usually the brighter star)",
    ),
    "ctx_match_log_depth_ratio": (
        "log10(depth of the candidate / depth of its best ephemeris match); < 0: the match is deeper "
        "(the parent's own, undiluted signal); NaN without a match",
        "Coughlin et al. 2014, Sect. 5",
    ),
}


class CatalogueError(ValueError):
    """A catalogue that cannot be used (a missing column, an answer column); the message says which."""


def catalogue_of(koi: pd.DataFrame) -> pd.DataFrame:
    """The context catalogue of a KOI table: :data:`CATALOGUE_COLUMNS` of every row, any disposition.

    Parameters
    ----------
    koi : DataFrame with at least :data:`CATALOGUE_COLUMNS` (the NASA Exoplanet Archive KOI
        cumulative table has them); other columns (dispositions, flags, scores) are dropped.

    Returns
    -------
    DataFrame ``(N, 8)``: ``kepid`` int64, ``kepoi_name`` str, the rest float64 (NaN = missing);
    ``ra``/``dec`` [deg], ``koi_period`` [days], ``koi_time0bk`` [BKJD], ``koi_depth`` [ppm],
    ``koi_kepmag`` [mag]. Index reset.

    Raises
    ------
    CatalogueError
        A column of :data:`CATALOGUE_COLUMNS` is missing (named).
    """
    missing = [c for c in CATALOGUE_COLUMNS if c not in koi.columns]
    if missing:
        raise CatalogueError(f"KOI table lacks catalogue column(s) {missing}")
    out = pd.DataFrame({"kepid": pd.to_numeric(koi["kepid"], errors="coerce").fillna(-1).astype(np.int64),
                        "kepoi_name": koi["kepoi_name"].astype(str)})
    for c in CATALOGUE_COLUMNS[2:]:
        out[c] = pd.to_numeric(koi[c], errors="coerce").astype(float)
    return out.reset_index(drop=True)


def check_catalogue(catalogue: pd.DataFrame) -> None:
    """Refuse a catalogue with an answer column (disposition, score, flag, label, comment) or without a
    measurement column of :data:`CATALOGUE_COLUMNS`.

    Raises
    ------
    CatalogueError
        The message names the columns.
    """
    answers = [c for c in catalogue.columns if str(c).startswith(_ANSWER_PREFIXES)]
    if answers:
        raise CatalogueError(f"catalogue carries answer column(s) {answers}: a catalogue holds measurements only")
    missing = [c for c in CATALOGUE_COLUMNS[2:] if c not in catalogue.columns]
    if missing:
        raise CatalogueError(f"catalogue lacks column(s) {missing}")


def _col(table: pd.DataFrame, name: str) -> np.ndarray:
    if name not in table:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[name], errors="coerce").to_numpy(float)


def _separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle separation [arcsec] (haversine), inputs in degrees, broadcast."""
    ra1, dec1, ra2, dec2 = (np.radians(a) for a in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))) * 3600.0


def _sigma(offset: np.ndarray) -> np.ndarray:
    """sqrt(2) erfcinv(offset) = -Phi^-1(offset / 2) (Phi: standard normal CDF) for offsets in [0, 1],
    capped at :data:`SIGMA_CAP` (offset 0 gives the cap)."""
    inv = NormalDist().inv_cdf
    floor = 2 * NormalDist().cdf(-SIGMA_CAP)
    return np.array([SIGMA_CAP if not (o > floor) else min(-inv(min(o, 1.0) / 2), SIGMA_CAP)
                     for o in np.asarray(offset, float).ravel()]).reshape(np.shape(offset))


def context_features(table: pd.DataFrame, catalogue: pd.DataFrame | None, chunk: int = 256) -> pd.DataFrame:
    """:data:`CONTEXT_FEATURES` of candidate rows against a catalogue of KOI measurements.

    Parameters
    ----------
    table : DataFrame, N rows, with ``ra``, ``dec`` [deg], ``koi_period`` [days], ``koi_time0bk``
        [BKJD], ``koi_depth`` [ppm], ``koi_kepmag`` [mag] (a missing column or value gives NaN
        or 0-count features for what needs it) and optionally ``kepoi_name`` (its own catalogue
        row is then left out by name).
    catalogue : :func:`catalogue_of` output (measurements only), or None: then every context
        feature is NaN (no catalogue, no context).
    chunk : candidate rows compared at once (memory ``chunk x len(catalogue)`` floats).

    Returns
    -------
    DataFrame ``(N, len(CONTEXT_FEATURES))`` float64, same index. A catalogue row is the
    candidate itself when it has the candidate's ``kepoi_name``, or is on the same star with
    the same period (relative 1e-6) and epoch (1e-4 d); it is never counted.

    Raises
    ------
    CatalogueError
        The catalogue carries an answer column (disposition, score, flag, label) or lacks a column.
    """
    names = list(CONTEXT_FEATURES)
    n = len(table)
    out = pd.DataFrame(np.nan, index=table.index, columns=names, dtype=float)
    if catalogue is None or n == 0:
        return out
    check_catalogue(catalogue)
    ra, dec, period, t0, depth, mag = (_col(table, c) for c in
                                       ("ra", "dec", "koi_period", "koi_time0bk", "koi_depth", "koi_kepmag"))
    own = table["kepoi_name"].astype(str).to_numpy() if "kepoi_name" in table else np.full(n, "\x00")
    c_ra, c_dec, c_p, c_t0, c_depth, c_mag = (_col(catalogue, c) for c in
                                              ("ra", "dec", "koi_period", "koi_time0bk", "koi_depth", "koi_kepmag"))
    c_name = catalogue["kepoi_name"].astype(str).to_numpy() if "kepoi_name" in catalogue else np.full(len(catalogue), "")
    res = np.full((n, len(names)), np.nan)
    tol_deg = SAME_STAR_ARCSEC / 3600.0
    # Significance thresholds as offsets: sigma >= S  <=>  offset <= erfc(S / sqrt(2)).
    max_dt, max_dp = math.erfc(MATCH_SIGMA_T / math.sqrt(2)), math.erfc(MATCH_SIGMA_P / math.sqrt(2))
    for start in range(0, n, chunk):
        s = slice(start, min(start + chunk, n))
        with np.errstate(invalid="ignore", divide="ignore"):
            # Same star: a cheap box test, confirmed by the great-circle separation.
            box = (np.abs(dec[s, None] - c_dec[None, :]) < tol_deg) & (
                np.abs(ra[s, None] - c_ra[None, :]) * np.cos(np.radians(dec[s, None])) < tol_deg)
            same_star = np.zeros_like(box)
            bi, bj = np.nonzero(box)
            same_star[bi, bj] = _separation_arcsec(ra[s][bi], dec[s][bi], c_ra[bj], c_dec[bj]) < SAME_STAR_ARCSEC
            p, cp = period[s, None], c_p[None, :]
            shorter = p <= cp
            p_short = np.where(shorter, p, cp)
            r = np.where(shorter, cp, p) / p_short
            self_row = (own[s, None] == c_name[None, :]) | (
                same_star & (np.abs(p - cp) <= 1e-6 * np.abs(p)) & (np.abs(t0[s, None] - c_t0[None, :]) <= 1e-4))
            sibling = same_star & ~self_row
            # Star multiplicity and sibling period ratios (Lissauer et al. 2012).
            res[s, 0] = np.where(np.isfinite(ra[s]) & np.isfinite(dec[s]), 1 + sibling.sum(axis=1), np.nan)
            offset = np.full(sibling.shape, np.inf)
            si, sj = np.nonzero(sibling)
            if si.size:
                off = np.min(np.abs(r[si, sj][:, None] / SMALL_RATIOS - 1.0), axis=1)
                offset[si, sj] = np.where(np.isfinite(off), off, np.inf)
            offset = offset.min(axis=1)
            log_off = np.where(np.isfinite(offset), np.log10(np.clip(offset, 10**LOG_FLOOR, 1.0)), 0.0)
            res[s, 1] = np.where(np.isfinite(period[s]) & np.isfinite(ra[s]), log_off, np.nan)
            # Ephemeris matching with other stars' KOIs (Coughlin et al. 2014).
            n_ratio = np.rint(r)
            d_p = np.abs(r - n_ratio)
            d_t = np.where(shorter, c_t0[None, :] - t0[s, None], t0[s, None] - c_t0[None, :]) / p_short
            d_t = np.abs(d_t - np.rint(d_t))
            epoch_ok = (~same_star & ~self_row & (n_ratio <= MAX_PERIOD_RATIO) & (d_t <= max_dt)
                        & np.isfinite(d_p))
            best_dp = np.where(epoch_ok, d_p, np.inf).min(axis=1)
            match = epoch_ok & (d_p <= max_dp)
            has_ephem = np.isfinite(period[s]) & np.isfinite(t0[s]) & np.isfinite(ra[s])
            res[s, 2] = np.where(has_ephem, np.where(np.isfinite(best_dp), _sigma(best_dp), 0.0), np.nan)
            res[s, 3] = np.where(has_ephem, match.sum(axis=1), np.nan)
            any_match = match.any(axis=1)
            best = np.argmin(np.where(match, d_p, np.inf), axis=1)
            mi = np.flatnonzero(any_match)
            if mi.size:
                mj = best[mi]
                gi = start + mi
                sep = _separation_arcsec(ra[gi], dec[gi], c_ra[mj], c_dec[mj])
                res[gi, 4] = np.log10(np.maximum(sep, 1e-3))
                res[gi, 5] = mag[gi] - c_mag[mj]
                res[gi, 6] = np.log10(depth[gi] / c_depth[mj])
    res[~np.isfinite(res)] = np.nan
    return pd.DataFrame(res, index=table.index, columns=names)
