"""The tabular branch: one KOI's transit fit and host-star parameters -> probability of planet.

Pure science (pandas, numpy, scikit-learn); no MLflow, no file paths. Inputs are
columns of the NASA Exoplanet Archive Kepler KOI cumulative table
(https://exoplanetarchive.ipac.caltech.edu/docs/API_kepcandidate_columns.html).

- :data:`ALLOWED_INPUTS`: the only KOI-table columns the model may read, with units
  and the physical range a served value must lie in.
- :data:`DERIVED_FEATURES`: physics features computed from them (formula + source).
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

#: The allowed KOI-table inputs: ``name -> (description [unit], low, high)``. A served value
#: must be a finite number with ``low < value <= high`` when ``low`` is a strict bound
#: (see :data:`STRICT_LOW`), else ``low <= value <= high``. The ranges are physical limits
#: (a period or radius is positive, a depth is at most the whole flux = 1e6 ppm), wide
#: enough for every value of the KOI table.
ALLOWED_INPUTS: dict[str, tuple[str, float, float]] = {
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
#: Inputs whose lower bound is strict (the value must be > low): zero is unphysical.
STRICT_LOW = frozenset({"koi_period", "koi_duration", "koi_prad", "koi_teq", "koi_steff", "koi_srad"})

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

#: Model inputs, in column order: the allowed KOI columns, then the derived features.
FEATURE_NAMES: tuple[str, ...] = tuple(ALLOWED_INPUTS) + tuple(DERIVED_FEATURES)

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


def build_features(table: pd.DataFrame) -> pd.DataFrame:
    """Model inputs of KOI rows: the allowed columns (and nothing else) plus the derived features.

    Parameters
    ----------
    table : DataFrame
        KOI-table rows; any other columns (dispositions, names, flags...) are ignored:
        only :data:`ALLOWED_INPUTS` are read. An allowed column that is absent is all
        NaN (the model handles missing values natively).

    Returns
    -------
    DataFrame ``(N, len(FEATURE_NAMES))`` float64, columns :data:`FEATURE_NAMES`, same index.

    Raises
    ------
    AssertionError
        A banned column would reach the model (cannot happen unless the lists are edited).
    """
    allowed = pd.DataFrame(index=table.index)
    for name in ALLOWED_INPUTS:
        allowed[name] = pd.to_numeric(table[name], errors="coerce") if name in table else np.nan
    allowed = allowed.astype(float)
    features = pd.concat([allowed, derived_features(allowed)], axis=1)[list(FEATURE_NAMES)]
    banned = [c for c in features.columns if is_banned(c)]
    assert not banned, f"banned column(s) {banned} would reach the tabular model"
    return features


def predict_tabular(model, features: pd.DataFrame) -> np.ndarray:
    """Probability of CONFIRMED, float64 ``(N,)``, for :func:`build_features` rows (``model``: a fitted
    scikit-learn ``HistGradientBoostingClassifier``)."""
    return model.predict_proba(features[list(FEATURE_NAMES)])[:, 1].astype(np.float64)


def check_parameters(params: dict) -> dict[str, float]:
    """Validate served KOI parameters; returns ``{name: float}`` of those given (None = not given).

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
        if name not in ALLOWED_INPUTS:
            raise TabularInputError(f"unknown parameter {name!r}; allowed: {', '.join(ALLOWED_INPUTS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TabularInputError(f"parameter {name}: {value!r} is not a number")
        value = float(value)
        desc, low, high = ALLOWED_INPUTS[name]
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
