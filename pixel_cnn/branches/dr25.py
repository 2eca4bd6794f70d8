"""The tabular branch on ExoMiner's DR25 TCE table: column mapping, labels, folds (issue 20).

Pure science (pandas, numpy, scikit-learn); no MLflow, no file paths. ExoMiner (Valizadegan
et al. 2022, ApJ 926, 120) labels 30,612 Kepler Q1-Q17 DR25 TCEs PC / AFP / NTP and publishes
ten cross-validation folds. The SAME tabular model and feature code as the KOI branch
(:mod:`pixel_cnn.vetter.tabular`) runs on them: :data:`TCE_TO_BRANCH` maps the DV pipeline's
``tce_*`` measurements to the branch's input names, and :func:`branch_inputs` builds a NEW
table from that mapping only, so no other column of the DR25 file (``label``, the ``koi_*``
copies of the KOI table, which exist only for TCEs that became KOIs, ``fpwg_*``, names,
``koi_comment``) can reach the model; :func:`check_mapping` refuses a mapping that reads one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pixel_cnn.branches.tabular import SCORES, cv_predict, scores_with_intervals
from pixel_cnn.vetter.context import catalogue_of
from pixel_cnn.vetter.tabular import PERIOD_FEATURES, build_features, feature_names

#: branch input name -> DR25 column (DV pipeline measurement; Twicken et al. 2018, PASP 130, 064502).
#: Not in DR25, left NaN: koi_dicco_mra, koi_dicco_mdec, koi_srho, koi_ldm_coeff1, koi_gmag.
#: koi_bin_oedp_sig and koi_fwm_stat_sig take the DV statistics tce_bin_oedp_stat and tce_fwm_stat
#: (the same tests, another scale; the tree model is invariant to monotone rescaling only, so the
#: DR25 model is trained on DR25 values and never mixed with the KOI one).
TCE_TO_BRANCH: dict[str, str] = {
    "koi_period": "tce_period", "koi_duration": "tce_duration", "koi_depth": "transit_depth",
    "koi_impact": "tce_impact", "koi_model_snr": "tce_model_snr", "koi_prad": "tce_prad",
    "koi_teq": "tce_eqt", "koi_insol": "tce_insol", "koi_steff": "tce_steff", "koi_slogg": "tce_slogg",
    "koi_srad": "tce_sradius", "koi_kepmag": "mag",
    "koi_num_transits": "tce_num_transits", "koi_max_mult_ev": "tce_max_mult_ev",
    "koi_bin_oedp_sig": "tce_bin_oedp_stat", "koi_fwm_stat_sig": "tce_fwm_stat",
    "koi_fwm_srao": "tce_fwm_srao", "koi_fwm_sdeco": "tce_fwm_sdeco", "koi_fwm_prao": "tce_fwm_prao",
    "koi_fwm_pdeco": "tce_fwm_pdeco", "koi_dicco_msky": "tce_dicco_msky", "koi_dor": "tce_dor",
    "koi_incl": "tce_incl", "koi_smet": "tce_smet", "koi_smass": "tce_smass",
    # parameters of derived features (position and epoch for the context, fit uncertainties)
    "ra": "ra", "dec": "dec", "koi_time0bk": "tce_time0bk",
}
#: Symmetric DR25 uncertainties -> the branch's err1 (+) / err2 (-) pair.
TCE_UNCERTAINTIES: dict[str, str] = {"koi_period": "tce_period_err", "koi_duration": "tce_duration_err",
                                     "koi_depth": "tce_depth_err", "koi_prad": "tce_prad_err"}
#: DR25 columns where -1 stands for a missing value (the study's ``nomissingval`` filling).
MINUS_ONE_IS_MISSING = frozenset({"tce_model_snr", *TCE_UNCERTAINTIES.values()})
#: Answer columns of the DR25 table (README): never read, except ra/dec for the context (derived only).
ANSWER_EXACT = frozenset({"label", "koi_disposition", "koi_pdisposition", "koi_score", "koi_comment", "kepler_name",
                          "kepoi_name", "target_id", "tce_plnt_num", "tceid"})
ANSWER_PREFIXES = ("koi_", "fpwg_", "tce_datalink_")
#: ExoMiner's labels: PC is the positive class, AFP and NTP negative.
POSITIVE, NEGATIVES = "PC", ("AFP", "NTP")
#: ExoMiner's recall at precision 0.99 on its test set (Valizadegan et al. 2022).
EXOMINER_RECALL_AT_P99 = 0.936


def is_answer(column: str) -> bool:
    """True for a DR25 answer column (label, KOI-table copies, FPWG dispositions, names, identifiers)."""
    return column in ANSWER_EXACT or column.startswith(ANSWER_PREFIXES)


def check_mapping(mapping: dict[str, str] = TCE_TO_BRANCH, uncertainties: dict[str, str] = TCE_UNCERTAINTIES) -> None:
    """Raise ValueError naming any source column of the mapping that is an answer column."""
    bad = [c for c in (*mapping.values(), *uncertainties.values()) if is_answer(c)]
    if bad:
        raise ValueError(f"DR25 mapping reads answer column(s) {bad}")


check_mapping()


def dr25_labels(tces: pd.DataFrame) -> np.ndarray:
    """int64 ``(N,)``: 1 for ``label == "PC"``, 0 for AFP and NTP.

    Raises
    ------
    ValueError
        A label other than PC / AFP / NTP (the first few named).
    """
    label = tces["label"].astype(str)
    bad = label[~label.isin([POSITIVE, *NEGATIVES])]
    if len(bad):
        raise ValueError(f"DR25 labels must be PC/AFP/NTP; got {bad.unique()[:5].tolist()}")
    return (label == POSITIVE).to_numpy().astype(np.int64)


def branch_inputs(tces: pd.DataFrame) -> pd.DataFrame:
    """A NEW table of the branch's input names, from :data:`TCE_TO_BRANCH` columns only.

    -1 in :data:`MINUS_ONE_IS_MISSING` becomes NaN; uncertainties become ``<name>_err1 = +err``,
    ``<name>_err2 = -err``. ``kepid`` (from ``target_id``) and ``kepoi_name`` (from ``tceid``) are
    added to identify catalogue rows only (a TCE's own row is left out of its context); they are
    banned as inputs and :func:`~pixel_cnn.vetter.tabular.build_features` never reads them.

    Raises
    ------
    ValueError
        A mapped DR25 column is missing (named).
    """
    need = [*TCE_TO_BRANCH.values(), *TCE_UNCERTAINTIES.values()]
    missing = [c for c in need if c not in tces]
    if missing:
        raise ValueError(f"DR25 table lacks column(s) {missing}")

    def col(name):
        v = pd.to_numeric(tces[name], errors="coerce").astype(float)
        return v.where(v != -1) if name in MINUS_ONE_IS_MISSING else v

    out = pd.DataFrame({dst: col(src).to_numpy() for dst, src in TCE_TO_BRANCH.items()})
    for dst, src in TCE_UNCERTAINTIES.items():
        err = col(src).abs().to_numpy()
        out[f"{dst}_err1"], out[f"{dst}_err2"] = err, -err
    out["kepid"] = pd.to_numeric(tces["target_id"], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    out["kepoi_name"] = tces["tceid"].astype(str).to_numpy() if "tceid" in tces else np.arange(len(tces)).astype(str)
    return out


def dr25_features(tces: pd.DataFrame) -> pd.DataFrame:
    """:func:`~pixel_cnn.vetter.tabular.build_features` of :func:`branch_inputs`, the context computed
    against the catalogue of EVERY TCE of ``tces`` (measurements only, no label). Same row order."""
    inputs = branch_inputs(tces)
    return build_features(inputs, catalogue_of(inputs)).reset_index(drop=True)


def mapped_complete(tces: pd.DataFrame) -> np.ndarray:
    """bool ``(N,)``: TCEs with no missing mapped measurement (after -1 -> NaN)."""
    inputs = branch_inputs(tces)
    cols = [*TCE_TO_BRANCH, *(f"{d}_err1" for d in TCE_UNCERTAINTIES)]
    return inputs[cols].notna().all(axis=1).to_numpy()


#: Protocols of :func:`dr25_cv`: name -> (fold scheme, feature groups, drop the period features).
PROTOCOLS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "exominer_folds": ("exominer", ("koi", "dv", "context"), False),
    "exominer_folds_koi": ("exominer", ("koi",), False),
    "exominer_folds_koi_dv": ("exominer", ("koi", "dv"), False),
    "exominer_folds_no_period": ("exominer", ("koi", "dv", "context"), True),
    "grouped_by_star": ("grouped", ("koi", "dv", "context"), False),
    "grouped_by_star_no_period": ("grouped", ("koi", "dv", "context"), True),
}


def dr25_splits(tces: pd.DataFrame, scheme: str, seed: int = 42, n_folds: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` index pairs: ``scheme="exominer"``: test = ExoMiner's fold ``k`` (column
    ``fold``), train = the nine others; ``"grouped"``: scikit-learn ``StratifiedGroupKFold(n_folds,
    shuffle=True, random_state=seed)`` grouped by star (``target_id``).

    Raises
    ------
    ValueError
        An unknown scheme, or no ``fold`` column for ``"exominer"``.
    """
    if scheme == "exominer":
        if "fold" not in tces:
            raise ValueError("DR25 table lacks the ExoMiner 'fold' column")
        fold = tces["fold"].to_numpy()
        return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in np.unique(fold)]
    if scheme == "grouped":
        y, star = dr25_labels(tces), tces["target_id"].to_numpy()
        return list(StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(tces, y, star))
    raise ValueError(f"unknown fold scheme {scheme!r}; known: exominer, grouped")


def dr25_cv(tces: pd.DataFrame, features: pd.DataFrame, protocol: str, seed: int = 42, n_boot: int = 1000,
            impute: bool = False) -> tuple[pd.DataFrame, dict]:
    """One protocol of :data:`PROTOCOLS`: OOF probabilities and scores (PC against AFP + NTP).

    Parameters
    ----------
    tces : the DR25 table (ten folds concatenated, with ``fold``, ``label``, ``target_id``).
    features : :func:`dr25_features` of ``tces`` (same row order).

    Returns
    -------
    oof : DataFrame ``target_id, tceid, label, fold, probability, complete``.
    summary : dict: pooled-OOF :data:`~pixel_cnn.branches.tabular.SCORES` with bootstrap intervals
        over stars, fold means, the same on complete rows (``complete_<name>``), counts,
        ``exominer_recall_at_p99`` (0.936) and ``gap_recall_at_p99`` (ours minus ExoMiner's).
    """
    scheme, groups, no_period = PROTOCOLS[protocol]
    names = [c for c in feature_names(groups) if not (no_period and c in PERIOD_FEATURES)]
    y, star = dr25_labels(tces), tces["target_id"].to_numpy()
    splits = dr25_splits(tces, scheme, seed=seed)
    group_check = star if scheme == "grouped" else None
    prob = cv_predict(features[names], y, group_check, splits, seed=seed, impute=impute)
    fold_of = np.empty(len(y), dtype=int)
    for k, (_, te) in enumerate(splits):
        fold_of[te] = k
    complete = mapped_complete(tces)
    oof = pd.DataFrame({"target_id": star, "tceid": tces["tceid"].astype(str).to_numpy(), "label": y,
                        "fold": fold_of, "probability": prob, "complete": complete})
    summary = scores_with_intervals(y, prob, star, n_boot=n_boot, seed=seed)
    for name, f in SCORES.items():
        values = np.array([f(y[te], prob[te]) for _, te in splits])
        summary[f"{name}_fold_mean"], summary[f"{name}_fold_std"] = float(values.mean()), float(values.std(ddof=1))
    comp = scores_with_intervals(y[complete], prob[complete], star[complete], n_boot=n_boot, seed=seed)
    summary.update({f"complete_{k}": v for k, v in comp.items()})
    summary.update(n_tces=int(len(y)), n_stars=int(len(np.unique(star))), n_pc=int(y.sum()),
                   n_complete=int(complete.sum()), n_features=len(names),
                   exominer_recall_at_p99=EXOMINER_RECALL_AT_P99,
                   gap_recall_at_p99=float(summary["recall_at_p99"] - EXOMINER_RECALL_AT_P99))
    return oof, summary
