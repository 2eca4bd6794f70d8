"""The tabular branch's training side: labels, the per-star KOI rule, fitting, the KOI-wide cv.

Pure science (pandas, numpy, scikit-learn); no MLflow, no file paths. What a fitted tabular
branch reads and how it scores (the allow-list, features, parameter checks) is
:mod:`pixel_cnn.vetter.tabular`, shipped with the served model.

- :func:`koi_labels`: labels from ``koi_disposition`` only (CONFIRMED 1, FALSE POSITIVE 0,
  CANDIDATE left out). :func:`star_koi`: the per-star KOI rule (the star's first KOI).
- :func:`fit_tabular`: scikit-learn ``HistGradientBoostingClassifier`` (native missing
  values), seeded. :func:`koi_cv`: grouped (kepid), stratified k-fold cv over all
  labelled KOIs, with bootstrap intervals (:func:`scores_with_intervals`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from sklearn.impute import SimpleImputer

from pixel_cnn.branches.base import Branch, Fitted
from pixel_cnn.vetter.context import catalogue_of
from pixel_cnn.vetter.tabular import (ALLOWED_INPUTS, BASE_INPUTS, CONFIRMED, DV_INPUTS, FALSE_POSITIVE,
                                      FEATURE_NAMES, KOI_NAME, PARAMETER_INPUTS, build_features, feature_names,
                                      is_banned, predict_tabular)


def koi_number(name: str) -> tuple[int, int]:
    """``"K00752.01"`` -> ``(752, 1)``: the KOI number and the planet suffix.

    Raises
    ------
    ValueError
        Not a KOI name of the form ``K<digits>.<digits>``.
    """
    m = KOI_NAME.match(str(name))
    if not m:
        raise ValueError(f"{name!r} is not a KOI name like K00752.01")
    return int(m.group(1)), int(m.group(2))


def koi_labels(koi: pd.DataFrame) -> pd.DataFrame:
    """Every labelled KOI: ``koi_disposition`` CONFIRMED -> 1, FALSE POSITIVE -> 0; CANDIDATE left out.

    Returns the rows of ``koi`` with a ``label`` column (int64), original order and index reset.
    The label comes from ``koi_disposition`` and nothing else.
    """
    disp = koi["koi_disposition"].astype(str)
    out = koi[disp.isin([CONFIRMED, FALSE_POSITIVE])].copy()
    out["label"] = (out["koi_disposition"] == CONFIRMED).astype(np.int64)
    return out.reset_index(drop=True)


def star_koi(koi: pd.DataFrame, kepids=None) -> pd.DataFrame:
    """The per-star KOI rule: each star's first KOI (lowest KOI number, then lowest suffix, i.e. ``.01``).

    A stack is folded on one KOI's ephemeris and the dataset does not record which; the
    ``.01`` KOI is the first threshold-crossing event found on the star (the strongest TCE
    of the first pipeline run that found it; NASA Exoplanet Archive KOI table docs). The
    rule looks at names only, never at a disposition.

    Parameters
    ----------
    koi : KOI table rows (any dispositions).
    kepids : optional iterable of int: only these stars (a star absent from ``koi`` is absent
        from the result).

    Returns
    -------
    DataFrame: one row of ``koi`` per kepid, sorted by kepid, index reset.
    """
    rows = koi if kepids is None else koi[koi["kepid"].isin(np.asarray(list(kepids), dtype=np.int64))]
    order = rows["kepoi_name"].map(koi_number)
    rows = rows.assign(_order=order).sort_values(["kepid", "_order"], kind="stable")
    return rows.drop_duplicates("kepid").drop(columns="_order").reset_index(drop=True)


def make_model(seed: int) -> HistGradientBoostingClassifier:
    """scikit-learn ``HistGradientBoostingClassifier`` with fixed settings, ``random_state=seed``.

    Defaults of scikit-learn 1.9 (100 iterations, learning rate 0.1, 31 leaves) with early
    stopping off, so the number of trees never depends on a random validation split; not tuned.
    """
    return HistGradientBoostingClassifier(early_stopping=False, random_state=seed)


def fit_tabular(features: pd.DataFrame, labels, seed: int = 42, names=None) -> HistGradientBoostingClassifier:
    """Fit the tabular branch on :func:`build_features` rows and 0/1 labels.

    ``names`` (default :data:`FEATURE_NAMES`): the columns the model reads, a subset of
    :data:`FEATURE_NAMES` in its order (e.g. :func:`~pixel_cnn.vetter.tabular.feature_names` of
    some groups); ``features`` must have exactly these columns. A column with no value in
    ``features`` (all NaN) is fitted as a constant 0: the trees never split on it.

    Raises
    ------
    ValueError
        ``features`` columns are not exactly ``names``, ``names`` is not a subset of
        :data:`FEATURE_NAMES` (a banned or unknown column), or lengths differ.
    """
    names = list(FEATURE_NAMES if names is None else names)
    unknown = [c for c in names if c not in FEATURE_NAMES or is_banned(c)]
    if unknown:
        raise ValueError(f"tabular features {unknown} are not model inputs (FEATURE_NAMES)")
    if list(features.columns) != names:
        raise ValueError(f"tabular features must be exactly {names}; got {list(features.columns)}")
    labels = np.asarray(labels).astype(int)
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    empty = [c for c in names if features[c].isna().all()]
    if empty:
        # An input with no value at all (e.g. the DV diagnostics of a KOI table without them)
        # carries nothing and scikit-learn cannot bin it: a constant column is never split on.
        features = features.assign(**{c: 0.0 for c in empty})
    model = make_model(seed).fit(features, labels)
    assert not any(is_banned(c) for c in model.feature_names_in_)
    return model


def recall_at_precision(y_true, prob, precision_target: float) -> float:
    """Highest recall over thresholds whose precision is at least ``precision_target`` (0 if none).

    The operating points AstroNet (Shallue & Vanderburg 2018) and ExoMiner (Valizadegan et al.
    2022) report; computed from scikit-learn's ``precision_recall_curve``.
    """
    precision, recall, _ = precision_recall_curve(np.asarray(y_true).astype(int), np.asarray(prob, float))
    ok = precision >= precision_target
    return float(recall[ok].max()) if ok.any() else 0.0


#: Scores of :func:`scores_with_intervals`: name -> score(y, p).
SCORES = {
    "pr_auc": average_precision_score,
    "roc_auc": roc_auc_score,
    "recall_at_p99": lambda y, p: recall_at_precision(y, p, 0.99),
    "recall_at_p95": lambda y, p: recall_at_precision(y, p, 0.95),
}


def _weighted_scores(y_sorted: np.ndarray, w_sorted: np.ndarray, last_of_tie: np.ndarray) -> dict[str, float]:
    """:data:`SCORES` of rows replicated ``w`` times, from rows sorted by decreasing score.

    Equals scikit-learn on the replicated rows: cumulative true/false positives at each distinct
    score (``last_of_tie``: index of the last row of each tie group) give the precision-recall
    and ROC points; average precision = sum (R_k - R_{k-1}) P_k, ROC-AUC by the trapezoid rule,
    recall at precision = max recall among points with precision >= target (0 if none).
    """
    tps = np.cumsum(w_sorted * y_sorted)[last_of_tie]
    fps = np.cumsum(w_sorted * (1 - y_sorted))[last_of_tie]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 1.0)
    recall, fpr = tps / tps[-1], fps / fps[-1]
    d_recall = np.diff(np.r_[0.0, recall])
    out = {"pr_auc": float(np.sum(d_recall * precision)),
           "roc_auc": float(np.sum(np.diff(np.r_[0.0, fpr]) * (np.r_[0.0, recall][1:] + np.r_[0.0, recall][:-1]) / 2))}
    for name, target in (("recall_at_p99", 0.99), ("recall_at_p95", 0.95)):
        ok = precision >= target
        out[name] = float(recall[ok].max()) if ok.any() else 0.0
    return out


def scores_with_intervals(y_true, prob, groups, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> dict[str, float]:
    """:data:`SCORES` and their percentile bootstrap intervals, resampling stars (``groups``).

    Each resample draws as many stars as there are, with replacement, and keeps all their
    KOIs (a cluster bootstrap: KOIs of one star are not independent); percentile interval
    (Efron & Tibshirani 1993, ch. 13). A resample is scored as the rows replicated by their
    star's draw count (:func:`_weighted_scores`, one sort for all resamples; the same figures
    as scikit-learn on the resampled rows). Resamples with one class only are redrawn.
    Returns ``{name, name_ci_low, name_ci_high}``.
    """
    y_true, prob, groups = np.asarray(y_true).astype(int), np.asarray(prob, float), np.asarray(groups)
    out = {name: float(f(y_true, prob)) for name, f in SCORES.items()}
    stars, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(-prob, kind="stable")
    y_sorted, star_sorted = y_true[order], inverse[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(prob[order])), len(prob) - 1]
    rng = np.random.default_rng(seed)
    boot = {name: [] for name in SCORES}
    while len(boot["pr_auc"]) < n_boot:
        draws = np.bincount(rng.integers(0, len(stars), len(stars)), minlength=len(stars))
        w = draws[star_sorted].astype(float)
        pos = float(np.sum(w * y_sorted))
        if pos == 0 or pos == w.sum():
            continue
        for name, value in _weighted_scores(y_sorted, w, last_of_tie).items():
            boot[name].append(value)
    for name, values in boot.items():
        low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)]) if values else (np.nan, np.nan)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low), float(high)
    return out


#: Raw measured inputs behind each feature group: a row is "complete" for some groups when none of
#: these is missing (issue 20: missing values are not a label). ``context`` reads the position,
#: epoch, period, depth and magnitude, and the fit uncertainties.
RAW_INPUTS: dict[str, tuple[str, ...]] = {
    "koi": tuple(BASE_INPUTS),
    "dv": tuple(DV_INPUTS),
    "context": tuple(PARAMETER_INPUTS) + ("koi_period", "koi_depth", "koi_kepmag"),
}
#: Context features whose NaN means "no ephemeris match", not a missing measurement: never imputed.
STRUCTURAL_NAN = ("ctx_match_log_sep", "ctx_match_dmag", "ctx_match_log_depth_ratio")


def complete_rows(table: pd.DataFrame, groups=("koi", "dv", "context")) -> np.ndarray:
    """bool ``(N,)``: rows with no missing raw input (:data:`RAW_INPUTS`) of the given groups
    (an absent column counts as missing)."""
    cols = [c for g in groups for c in RAW_INPUTS[g]]
    ok = np.ones(len(table), dtype=bool)
    for c in cols:
        ok &= pd.to_numeric(table[c], errors="coerce").notna().to_numpy() if c in table else False
    return ok


def cv_predict(x: pd.DataFrame, y, groups, splits, seed: int = 42, impute: bool = False) -> np.ndarray:
    """Out-of-fold probabilities of the tabular branch over given ``(train, test)`` index splits.

    Fold ``k``'s model is seeded ``seed + k``. ``impute=True``: missing values of the
    training fold's columns (all but :data:`STRUCTURAL_NAN`) are replaced by that fold's medians
    (scikit-learn ``SimpleImputer``, fitted on the training fold only) in both folds, so the
    model cannot read missingness. A column with no value in the training fold (e.g. a DV
    diagnostic absent from the DR25 table) is left out of that fold's model (it carries nothing,
    and scikit-learn cannot bin it).

    Returns float64 ``(N,)`` (NaN for rows in no test fold).

    Raises
    ------
    AssertionError
        A star (``groups``) on both sides of a split, when ``groups`` is given.
    """
    y = np.asarray(y).astype(int)
    prob = np.full(len(y), np.nan)
    names = list(x.columns)
    for k, (tr, va) in enumerate(splits):
        if groups is not None:
            assert not np.intersect1d(groups[tr], groups[va]).size, f"fold {k}: a star on both sides"
        keep = [c for c in names if x[c].iloc[tr].notna().any()]
        xtr, xva = x.iloc[tr][keep], x.iloc[va][keep]
        if impute:
            cols = [c for c in keep if c not in STRUCTURAL_NAN]
            imp = SimpleImputer(strategy="median").fit(xtr[cols])
            xtr, xva = xtr.copy(), xva.copy()
            xtr[cols], xva[cols] = imp.transform(xtr[cols]), imp.transform(xva[cols])
        model = fit_tabular(xtr, y[tr], seed=seed + k, names=keep)
        prob[va] = predict_tabular(model, xva)
    return prob


def koi_table_features(koi: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labelled KOIs (:func:`koi_labels`) and their :func:`build_features`, the context computed
    against the catalogue of EVERY KOI of ``koi`` (:func:`~pixel_cnn.vetter.context.catalogue_of`: any
    disposition, measurements only: no label feeds a feature, and which KOIs are in it does not depend on
    labels). Returns ``(labelled, features)``, same row order."""
    labelled = koi_labels(koi)
    catalogue = catalogue_of(koi) if all(c in koi for c in ("ra", "dec", "koi_time0bk")) else None
    return labelled, build_features(labelled, catalogue)


def koi_cv(koi: pd.DataFrame, n_folds: int = 5, seed: int = 42, n_boot: int = 1000, groups=("koi", "dv", "context"),
           impute: bool = False, prepared: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> tuple[pd.DataFrame, dict]:
    """Grouped (by kepid), stratified k-fold cv of the tabular branch over every labelled KOI.

    scikit-learn ``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)`` (the same
    folds whatever ``groups``/``impute``); fold ``k``'s model is seeded ``seed + k``. No star has
    KOIs on both sides of a fold (asserted). The model reads the features of the given
    :data:`~pixel_cnn.vetter.tabular.FEATURE_GROUPS`; ``impute``: see :func:`cv_predict`.
    ``prepared``: :func:`koi_table_features` of ``koi`` already computed (the context takes ~10 s).

    Returns
    -------
    oof : DataFrame ``kepid, kepoi_name, label, fold, probability, complete`` (one row per labelled
        KOI; ``complete``: no missing raw input of ``groups``, :func:`complete_rows`).
    summary : dict
        Pooled-OOF :data:`SCORES` with cluster-bootstrap intervals
        (:func:`scores_with_intervals`), their fold means ``<name>_fold_mean`` / ``_fold_std``,
        the same scores on complete rows only (``complete_<name>``, with intervals),
        ``n_kois``, ``n_stars``, ``n_confirmed``, ``n_false_positive``, ``n_complete``,
        ``n_complete_confirmed``.
    """
    labelled, all_x = prepared if prepared is not None else koi_table_features(koi)
    names = list(feature_names(groups))
    x, y, star = all_x[names], labelled["label"].to_numpy(), labelled["kepid"].to_numpy()
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(x, y, star))
    fold_of = np.empty(len(y), dtype=int)
    for k, (_, va) in enumerate(splits):
        fold_of[va] = k
    prob = cv_predict(x, y, star, splits, seed=seed, impute=impute)
    complete = complete_rows(labelled, groups)
    oof = pd.DataFrame({"kepid": star, "kepoi_name": labelled["kepoi_name"], "label": y,
                        "fold": fold_of, "probability": prob, "complete": complete})
    summary = scores_with_intervals(y, prob, star, n_boot=n_boot, seed=seed)
    for name, f in SCORES.items():
        values = np.array([f(y[va], prob[va]) for _, va in splits])
        summary[f"{name}_fold_mean"], summary[f"{name}_fold_std"] = float(values.mean()), float(values.std(ddof=1))
    if complete.sum() > 10 and 0 < y[complete].sum() < complete.sum():
        comp = scores_with_intervals(y[complete], prob[complete], star[complete], n_boot=n_boot, seed=seed)
        summary.update({f"complete_{k}": v for k, v in comp.items()})
    summary.update(n_kois=int(len(y)), n_stars=int(len(np.unique(star))), n_confirmed=int(y.sum()),
                   n_false_positive=int(len(y) - y.sum()), n_complete=int(complete.sum()),
                   n_complete_confirmed=int(y[complete].sum()), n_features=len(names))
    return oof, summary


def training_table(koi: pd.DataFrame) -> pd.DataFrame:
    """The KOI training table as logged: ``kepid, kepoi_name, label`` and the allowed inputs.

    The identifiers are kept for the record (which KOIs trained the model); the model reads
    only :func:`build_features` of it (``ra``, ``dec``, the epoch and uncertainties only through
    derived features).
    """
    labelled = koi_labels(koi)
    cols = ["kepid", "kepoi_name", "label"] + [c for c in (*ALLOWED_INPUTS, *PARAMETER_INPUTS) if c in labelled]
    return labelled[cols].reset_index(drop=True)


def table_digest(table: pd.DataFrame) -> str:
    """16 hex digits of SHA-256 over a table's CSV text (columns and rows in their order)."""
    import hashlib

    return hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()[:16]


class TabularBranch(Branch):
    """The tabular branch: every labelled KOI of the KOI table trains it, each star scored by its first KOI.

    Parameters
    ----------
    koi : DataFrame
        The KOI cumulative table joined with its DV diagnostics (:func:`pixel_cnn.io.koi.load_koi_with_dv`;
        a table without them gives NaN DV inputs). Every KOI of it (any disposition) is the context
        catalogue (:attr:`catalogue`).

    A fit trains :func:`fit_tabular` (seed ``seed``) on every labelled KOI whose star is not in
    ``exclude_kepids`` (asserted), whatever ``train_idx`` holds: stars outside the cv's dataset
    train it too. It scores each target of ``score_idx`` by its star's first KOI
    (:func:`star_koi`); a star absent from the table gets all-NaN features.
    """

    name = "tabular"

    def __init__(self, koi: pd.DataFrame):
        self.koi = koi
        self.labelled = koi_labels(koi)
        #: the context catalogue (every KOI, measurements only, :func:`~pixel_cnn.vetter.context.catalogue_of`):
        #: the context features of training and scored KOIs are computed against it, and it ships with the model
        self.catalogue = catalogue_of(koi) if all(c in koi for c in ("ra", "dec", "koi_time0bk")) else None
        self.features = build_features(self.labelled, self.catalogue)
        self.labels = self.labelled["label"].to_numpy(np.int64)
        self.kepids = self.labelled["kepid"].to_numpy(np.int64)
        self.table = self.training_table = training_table(koi)
        self.digest = table_digest(self.table)
        self.star_x = self.star_names = None

    def prepare(self, dataset) -> None:
        self.star_x, self.star_names = self.star_features(dataset.kepids)

    def star_features(self, kepids) -> tuple[pd.DataFrame, list[str]]:
        """Features of each star's first KOI (:func:`star_koi`), in ``kepids`` order, and the KOI
        names used (``""`` and all-NaN features for a star not in the table)."""
        kepids = np.asarray(kepids, dtype=np.int64)
        first = star_koi(self.koi, kepids).set_index("kepid")
        rows = first.reindex(kepids)
        return (build_features(rows.reset_index(), self.catalogue),
                rows["kepoi_name"].fillna("").astype(str).tolist())

    def fit_excluding(self, exclude_kepids, seed: int):
        """The model trained on every labelled KOI whose star is not in ``exclude_kepids``.

        Returns ``(model, n_training_kois, training kepids)``. Asserts that no KOI of an
        excluded star is in the training set.
        """
        exclude_kepids = np.asarray(exclude_kepids, dtype=np.int64)
        keep = ~np.isin(self.kepids, exclude_kepids)
        train_kepids = self.kepids[keep]
        assert not np.isin(train_kepids, exclude_kepids).any(), "an excluded star's KOI is in the tabular training set"
        model = fit_tabular(self.features[keep], self.labels[keep], seed=seed)
        return model, int(keep.sum()), train_kepids

    def fit(self, train_idx, score_idx, exclude_kepids, seed, on_epoch=None) -> Fitted:
        model, n_train, train_kepids = self.fit_excluding(exclude_kepids, seed)
        return Fitted(prob=predict_tabular(model, self.star_x.iloc[score_idx]), model=model,
                      info={"n_tabular_train_kois": float(n_train)}, training_kepids=train_kepids)

    def notes(self, idx) -> dict[str, list]:
        return {"tabular_koi": [self.star_names[i] for i in idx]}

    def final(self, outer: list[Fitted], seed: int):
        """The served tabular model: trained on every labelled KOI of the table."""
        return self.fit_excluding(np.array([], dtype=np.int64), seed)[0]

    def served_catalogue(self) -> pd.DataFrame | None:
        """The catalogue the served model ships (:data:`~pixel_cnn.vetter.context.CATALOGUE_COLUMNS` but
        ``kepid``: names, positions, periods, epochs, depths, magnitudes of every KOI; no disposition)."""
        return None if self.catalogue is None else self.catalogue.drop(columns=["kepid"])

    def describe(self) -> dict:
        return {"name": self.name, "features": list(FEATURE_NAMES), "koi_table_digest": self.digest,
                "catalogue_kois": 0 if self.catalogue is None else int(len(self.catalogue))}
