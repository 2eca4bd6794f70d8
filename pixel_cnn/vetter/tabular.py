"""The tabular branch: one KOI's transit fit and host-star parameters -> probability of planet.

Pure science (pandas, numpy, scikit-learn); no MLflow, no file paths. Inputs are
columns of the NASA Exoplanet Archive Kepler KOI cumulative table
(https://exoplanetarchive.ipac.caltech.edu/docs/API_kepcandidate_columns.html).

- :data:`ALLOWED_INPUTS`: the only KOI-table columns the model may read, with units
  and the physical range a served value must lie in: the transit fit and host star
  (:data:`BASE_INPUTS`) and the Data Validation diagnostics (:data:`DV_INPUTS`, issue 20).
- :data:`PARAMETER_INPUTS`: measurements a caller may pass that feed derived features only,
  never the model directly (``ra``, ``dec``, the epoch, fit uncertainties).
- :data:`DERIVED_FEATURES`: physics features computed from them (formula + source);
  :data:`UNCERTAINTY_FEATURES`: relative uncertainties of fit values; the catalogue-context
  features of :mod:`.context` (against a catalogue of KOI measurements, never labels).
- :data:`FEATURE_GROUPS`: ``koi`` (today's inputs), ``dv``, ``context``: added in turn by the
  benchmark.
- :data:`BANNED_COLUMNS` / :func:`is_banned`: vetting outputs and identifiers that must
  never reach the model (dispositions, score, false-positive flags, names, kepid,
  TCE delivery, epoch, sky position). :func:`build_features` copies only the allow-list
  and asserts that no banned name is among its output columns.
- :func:`check_parameters`: a served KOI parameter set checked against the allow-list;
  :func:`predict_tabular`: the fitted model's probability.

How the model is fitted (labels, the per-star KOI rule, the KOI-wide cv) is
:mod:`pixel_cnn.branches.tabular`.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from .context import CONTEXT_FEATURES, context_features

#: The allowed KOI-table inputs: ``name -> (description [unit], low, high)``. A served value
#: must be a finite number with ``low < value <= high`` when ``low`` is a strict bound
#: (see :data:`STRICT_LOW`), else ``low <= value <= high``. The ranges are physical limits
#: (a period or radius is positive, a depth is at most the whole flux = 1e6 ppm), wide
#: enough for every value of the KOI table.
BASE_INPUTS: dict[str, tuple[str, float, float]] = {
    "koi_period": ("orbital period [days]", 0.0, 1e7),
    "koi_duration": ("transit duration, first to last contact [hours]", 0.0, 1e4),
    "koi_depth": ("transit depth [ppm]", 0.0, 1e6),
    "koi_impact": ("impact parameter b [stellar radii]", 0.0, 1e3),
    "koi_model_snr": ("transit signal-to-noise ratio of the fit [dimensionless]", 0.0, 1e6),
    "koi_prad": ("planet radius [Earth radii]", 0.0, 1e7),
    "koi_teq": ("equilibrium temperature [K]", 0.0, 1e6),
    "koi_insol": ("insolation flux [Earth flux]", 0.0, 1e9),
    "koi_steff": ("stellar effective temperature [K]", 0.0, 1e6),
    "koi_slogg": ("stellar surface gravity [log10(cm/s^2)]", -5.0, 12.0),
    "koi_srad": ("stellar radius [solar radii]", 0.0, 1e5),
    "koi_kepmag": ("Kepler-band magnitude [mag]", -30.0, 40.0),
}
#: The Kepler pipeline's Data Validation diagnostics and further fit values of the KOI table
#: (``koi_dv_diagnostics.csv``; NASA Exoplanet Archive KOI column definitions; Twicken et al.
#: 2018, PASP 130, 064502 for DV; Bryson et al. 2013, PASP 125, 889 for the centroid tests).
#: Ranges are physical limits, wide enough for every value of the KOI table (``koi_bin_oedp_sig``
#: is -1 where the archive did not compute it).
DV_INPUTS: dict[str, tuple[str, float, float]] = {
    "koi_num_transits": ("number of transits observed [count]", 0.0, 1e5),
    "koi_max_mult_ev": ("maximum multiple event statistic, MES [sigma]", 0.0, 1e8),
    "koi_bin_oedp_sig": ("odd-even depth comparison statistic [probability; -1 = not computed]", -1.0, 1.0),
    "koi_fwm_stat_sig": ("flux-weighted centroid motion significance [probability, 0-1]", 0.0, 1.0),
    "koi_fwm_srao": ("flux-weighted source RA offset out of transit [s of RA]", -1e5, 1e5),
    "koi_fwm_sdeco": ("flux-weighted source Dec offset out of transit [arcsec]", -1e5, 1e5),
    "koi_fwm_prao": ("flux-weighted centroid RA shift in transit [s of RA]", -1e5, 1e5),
    "koi_fwm_pdeco": ("flux-weighted centroid Dec shift in transit [arcsec]", -1e5, 1e5),
    "koi_dicco_mra": ("difference-image centroid RA offset from the out-of-transit centroid, multi-quarter "
                      "[arcsec]", -1e5, 1e5),
    "koi_dicco_mdec": ("difference-image centroid Dec offset, multi-quarter [arcsec]", -1e5, 1e5),
    "koi_dicco_msky": ("difference-image centroid offset on the sky, multi-quarter [arcsec]", 0.0, 1e5),
    "koi_dor": ("fitted planet-star distance over stellar radius a/R* [dimensionless]", 0.0, 1e7),
    "koi_incl": ("fitted orbital inclination [deg]", 0.0, 180.0),
    "koi_srho": ("stellar density from the transit fit [g/cm^3]", 0.0, 1e7),
    "koi_ldm_coeff1": ("limb-darkening coefficient 1 [dimensionless]", -5.0, 5.0),
    "koi_smet": ("stellar metallicity [Fe/H] [dex]", -10.0, 10.0),
    "koi_smass": ("stellar mass [solar masses]", 0.0, 1e3),
    "koi_gmag": ("g'-band magnitude [mag]", -30.0, 40.0),
}
#: Every input the model may read directly (a served parameter of the same name).
ALLOWED_INPUTS: dict[str, tuple[str, float, float]] = {**BASE_INPUTS, **DV_INPUTS}
#: Served parameters that feed DERIVED features only (never a model input; ``ra``, ``dec`` and the
#: epoch stay banned as inputs): the candidate's position and epoch for the catalogue context
#: (:mod:`.context`), the fit uncertainties for :data:`UNCERTAINTY_FEATURES`.
PARAMETER_INPUTS: dict[str, tuple[str, float, float]] = {
    "ra": ("right ascension, J2000 [deg]", 0.0, 360.0),
    "dec": ("declination, J2000 [deg]", -90.0, 90.0),
    "koi_time0bk": ("transit epoch [BKJD = BJD - 2454833]", -1e5, 1e5),
    "koi_period_err1": ("period upper uncertainty [days]", 0.0, 1e7),
    "koi_period_err2": ("period lower uncertainty (<= 0) [days]", -1e7, 0.0),
    "koi_duration_err1": ("duration upper uncertainty [hours]", 0.0, 1e4),
    "koi_duration_err2": ("duration lower uncertainty (<= 0) [hours]", -1e4, 0.0),
    "koi_depth_err1": ("depth upper uncertainty [ppm]", 0.0, 1e6),
    "koi_depth_err2": ("depth lower uncertainty (<= 0) [ppm]", -1e6, 0.0),
    "koi_prad_err1": ("planet radius upper uncertainty [Earth radii]", 0.0, 1e7),
    "koi_prad_err2": ("planet radius lower uncertainty (<= 0) [Earth radii]", -1e7, 0.0),
}
#: What a request may carry: the model inputs and the parameters of derived features.
SERVED_PARAMETERS: dict[str, tuple[str, float, float]] = {**ALLOWED_INPUTS, **PARAMETER_INPUTS}
#: Inputs whose lower bound is strict (the value must be > low): zero is unphysical.
STRICT_LOW = frozenset({"koi_period", "koi_duration", "koi_prad", "koi_teq", "koi_steff", "koi_srad",
                        "koi_dor", "koi_srho"})

#: Derived physics features: ``name -> (definition, source)``.
DERIVED_FEATURES: dict[str, tuple[str, str]] = {
    "a_over_rstar": (
        "a/R* of a circular orbit from Kepler's third law with M* = g R*^2 / G "
        "(g = 10**koi_slogg cgs, R* = koi_srad): (G M* P^2 / (4 pi^2))^(1/3) / R*",
        "Kepler's third law; Seager & Mallen-Ornelas 2003, ApJ 585, 1038, eq. 8 (stellar density)",
    ),
    "duration_ratio": (
        "observed duration koi_duration over the central (b = 0, Rp << R*) duration expected for that "
        "circular orbit, T = (P / pi) asin(R*/a); an eclipsing binary or a blend is often far from 1",
        "Seager & Mallen-Ornelas 2003 eq. 3; Winn 2010, 'Transits and Occultations', eq. 14 and 16",
    ),
    "radius_ratio": (
        "k = Rp / R* from koi_prad and koi_srad (IAU 2015 nominal R_earth / R_sun)",
        "IAU 2015 Resolution B3 nominal radii",
    ),
    "depth_over_k2": (
        "transit depth (koi_depth 1e-6) over k^2; about 1 for a planet (limb darkening and grazing "
        "geometry move it), far from 1 when the radius does not explain the depth",
        "Seager & Mallen-Ornelas 2003 eq. 1; Winn 2010 eq. 1 (depth ~ k^2)",
    ),
}

#: Relative uncertainties of fit values: ``name -> (value column, definition, source)``.
UNCERTAINTY_FEATURES: dict[str, tuple[str, str, str]] = {
    f"rel_err_{q}": (f"koi_{q}", f"(koi_{q}_err1 - koi_{q}_err2) / 2 / koi_{q}: half the 1-sigma interval over the "
                     f"value (one side when only one is given) [dimensionless]",
                     "NASA Exoplanet Archive KOI columns (MCMC fit uncertainties, Rowe et al. 2015, ApJS 217, 16)")
    for q in ("period", "duration", "depth", "prad")
}

#: Groups of model inputs, in the order the benchmark adds them (issue 20): today's KOI inputs
#: and their derived features; the DV diagnostics; the catalogue context and uncertainties.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "koi": tuple(BASE_INPUTS) + tuple(DERIVED_FEATURES),
    "dv": tuple(DV_INPUTS),
    "context": tuple(CONTEXT_FEATURES) + tuple(UNCERTAINTY_FEATURES),
}
#: Model inputs, in column order: every group in turn.
FEATURE_NAMES: tuple[str, ...] = tuple(c for g in FEATURE_GROUPS.values() for c in g)
#: Features that read the period or the epoch (left out by the DR25 "no period" protocol).
PERIOD_FEATURES = frozenset({"koi_period", "a_over_rstar", "duration_ratio", "rel_err_period",
                             "ctx_sibling_log_offset", "ctx_ephem_sigma_p", "ctx_n_ephem_match",
                             "ctx_match_log_sep", "ctx_match_dmag", "ctx_match_log_depth_ratio",
                             "koi_insol", "koi_teq", "koi_dor", "koi_srho", "koi_num_transits"})


def feature_names(groups=("koi", "dv", "context"), drop=()) -> tuple[str, ...]:
    """Model inputs of the given :data:`FEATURE_GROUPS` (in :data:`FEATURE_NAMES` order), minus ``drop``.

    Raises
    ------
    ValueError
        An unknown group name.
    """
    unknown = [g for g in groups if g not in FEATURE_GROUPS]
    if unknown:
        raise ValueError(f"unknown feature group(s) {unknown}; known: {list(FEATURE_GROUPS)}")
    keep = {c for g in groups for c in FEATURE_GROUPS[g]} - set(drop)
    return tuple(c for c in FEATURE_NAMES if c in keep)

#: Columns that are vetting outputs or identifiers: never an input (exact names).
BANNED_COLUMNS = frozenset({
    "koi_disposition", "koi_pdisposition", "koi_score", "kepler_name", "kepoi_name", "kepid",
    "koi_tce_delivname", "koi_tce_plnt_num", "koi_time0bk", "koi_time0bk_err1", "koi_time0bk_err2",
    "koi_time0", "ra", "dec",
})
#: Prefixes of banned columns: every false-positive flag and every epoch column.
BANNED_PREFIXES = ("koi_fpflag_", "koi_time0")

CONFIRMED, FALSE_POSITIVE = "CONFIRMED", "FALSE POSITIVE"
#: IAU 2015 Resolution B3: nominal solar radius and Earth equatorial radius [cm]; G (CODATA 2018) [cgs].
R_SUN_CM, R_EARTH_CM, G_CGS = 6.957e10, 6.3781e8, 6.67430e-8
KOI_NAME = re.compile(r"^K(\d+)\.(\d+)$")


class TabularInputError(ValueError):
    """A KOI parameter that cannot be used; the message names it and says why."""


def is_banned(column: str) -> bool:
    """True for a vetting output or identifier column (:data:`BANNED_COLUMNS`, :data:`BANNED_PREFIXES`)."""
    return column in BANNED_COLUMNS or column.startswith(BANNED_PREFIXES)


assert not any(is_banned(c) for c in FEATURE_NAMES), "a banned column is in FEATURE_NAMES"


def derived_features(table: pd.DataFrame) -> pd.DataFrame:
    """The :data:`DERIVED_FEATURES` of KOI rows (float64, NaN where an input is missing or unusable).

    Parameters
    ----------
    table : DataFrame with the allowed columns (float; NaN = missing).
    """
    period_s = table["koi_period"].to_numpy(float) * 86400.0
    r_star = table["koi_srad"].to_numpy(float) * R_SUN_CM
    g = 10.0 ** table["koi_slogg"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mass = g * r_star**2 / G_CGS
        a_over_r = np.cbrt(G_CGS * mass * period_s**2 / (4 * math.pi**2)) / r_star
        expected_h = period_s / math.pi * np.arcsin(np.clip(1.0 / a_over_r, 0.0, 1.0)) / 3600.0
        duration_ratio = table["koi_duration"].to_numpy(float) / expected_h
        k = table["koi_prad"].to_numpy(float) * R_EARTH_CM / r_star
        depth_over_k2 = table["koi_depth"].to_numpy(float) * 1e-6 / k**2
    out = pd.DataFrame({"a_over_rstar": a_over_r, "duration_ratio": duration_ratio,
                        "radius_ratio": k, "depth_over_k2": depth_over_k2}, index=table.index)
    return out.replace([np.inf, -np.inf], np.nan)


def uncertainty_features(table: pd.DataFrame) -> pd.DataFrame:
    """The :data:`UNCERTAINTY_FEATURES` of KOI rows (float64; NaN where the value or both errors are missing,
    or the value is 0). ``table``: DataFrame with ``koi_<q>`` and ``koi_<q>_err1`` / ``_err2`` columns."""
    def col(name):
        return pd.to_numeric(table[name], errors="coerce").to_numpy(float) if name in table else np.full(len(table), np.nan)

    out = {}
    for name, (value, _, _) in UNCERTAINTY_FEATURES.items():
        up, low = np.abs(col(f"{value}_err1")), np.abs(col(f"{value}_err2"))
        half = np.where(np.isfinite(up) & np.isfinite(low), (up + low) / 2, np.where(np.isfinite(up), up, low))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = half / np.abs(col(value))
    return pd.DataFrame(out, index=table.index).replace([np.inf, -np.inf], np.nan)


def build_features(table: pd.DataFrame, catalogue: pd.DataFrame | None = None) -> pd.DataFrame:
    """Model inputs of KOI rows: the allowed columns (and nothing else), the derived features, the
    relative uncertainties and the catalogue context against ``catalogue``.

    Parameters
    ----------
    table : DataFrame
        KOI-table rows (optionally joined with the DV diagnostics); any other columns
        (dispositions, names, flags...) are ignored: only :data:`ALLOWED_INPUTS` are read as
        inputs, and :data:`PARAMETER_INPUTS` for derived features. An allowed column that is
        absent is all NaN (the model handles missing values natively).
    catalogue : :func:`.context.catalogue_of` output (KOI measurements, no label), or None:
        then the context features are NaN. A row's own KOI is left out of its context.

    Returns
    -------
    DataFrame ``(N, len(FEATURE_NAMES))`` float64, columns :data:`FEATURE_NAMES`, same index.

    Raises
    ------
    AssertionError
        A banned column would reach the model (cannot happen unless the lists are edited).
    CatalogueError
        The catalogue carries an answer column or lacks a measurement column.
    """
    allowed = pd.DataFrame(index=table.index)
    for name in ALLOWED_INPUTS:
        allowed[name] = pd.to_numeric(table[name], errors="coerce") if name in table else np.nan
    allowed = allowed.astype(float)
    features = pd.concat([allowed, derived_features(allowed), uncertainty_features(table),
                          context_features(table, catalogue)], axis=1)[list(FEATURE_NAMES)]
    banned = [c for c in features.columns if is_banned(c)]
    assert not banned, f"banned column(s) {banned} would reach the tabular model"
    return features


def predict_tabular(model, features: pd.DataFrame) -> np.ndarray:
    """Probability of CONFIRMED, float64 ``(N,)``, for :func:`build_features` rows (``model``: a fitted
    scikit-learn ``HistGradientBoostingClassifier``; the columns it was fitted on are used, in its order).

    Raises
    ------
    ValueError
        The model was fitted on a banned column.
    """
    names = list(getattr(model, "feature_names_in_", FEATURE_NAMES))
    banned = [c for c in names if is_banned(c)]
    if banned:
        raise ValueError(f"the tabular model reads banned column(s) {banned}")
    return model.predict_proba(features[names])[:, 1].astype(np.float64)


def check_parameters(params: dict) -> dict[str, float]:
    """Validate served KOI parameters; returns ``{name: float}`` of those given (None = not given).

    Accepted names: :data:`SERVED_PARAMETERS` (model inputs, DV diagnostics included, and the
    :data:`PARAMETER_INPUTS` of derived features: ``ra``, ``dec``, ``koi_time0bk``, uncertainties).

    Raises
    ------
    TabularInputError
        An unknown name (the message lists the allowed ones), a value that is not a finite
        number, or one out of its physical range (:data:`ALLOWED_INPUTS`); the message names it.
    """
    out = {}
    for name, value in params.items():
        if value is None:
            continue
        if name not in SERVED_PARAMETERS:
            raise TabularInputError(f"unknown parameter {name!r}; allowed: {', '.join(SERVED_PARAMETERS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TabularInputError(f"parameter {name}: {value!r} is not a number")
        value = float(value)
        desc, low, high = SERVED_PARAMETERS[name]
        if not math.isfinite(value):
            raise TabularInputError(f"parameter {name}: {value} is not a finite number")
        low_ok = value > low if name in STRICT_LOW else value >= low
        if not (low_ok and value <= high):
            bound = ">" if name in STRICT_LOW else ">="
            raise TabularInputError(f"parameter {name} ({desc}) = {value} is out of physical range "
                                    f"({bound} {low:g} and <= {high:g})")
        out[name] = value
    return out


#: The one type of a fitted ``HistGradientBoostingClassifier`` that skops does not trust by
#: default (scikit-learn's tree predictor); trusted by name when the served model loads.
SKOPS_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def dumps_tabular(model) -> bytes:
    """A fitted tabular model as skops bytes (``skops.io.dumps``; no pickle)."""
    import skops.io as sio

    return sio.dumps(model)


def loads_tabular(data: bytes):
    """The tabular model from :func:`dumps_tabular` bytes; only :data:`SKOPS_TRUSTED` beyond skops' defaults.

    Raises
    ------
    skops.io.exceptions.UntrustedTypesFoundException
        The file holds another type (not a model this project wrote).
    """
    import skops.io as sio

    return sio.loads(data, trusted=SKOPS_TRUSTED)
