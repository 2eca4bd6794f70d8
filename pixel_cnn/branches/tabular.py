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

from pixel_cnn.branches.base import Branch, Fitted
from pixel_cnn.vetter.tabular import (ALLOWED_INPUTS, CONFIRMED, FALSE_POSITIVE, FEATURE_NAMES, KOI_NAME,
                                      build_features, is_banned, predict_tabular)


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


def fit_tabular(features: pd.DataFrame, labels, seed: int = 42) -> HistGradientBoostingClassifier:
    """Fit the tabular branch on :func:`build_features` rows and 0/1 labels.

    Raises
    ------
    ValueError
        ``features`` columns are not exactly :data:`FEATURE_NAMES` (a banned or unknown
        column, or a missing one), or lengths differ.
    """
    if list(features.columns) != list(FEATURE_NAMES):
        raise ValueError(f"tabular features must be exactly {list(FEATURE_NAMES)}; got {list(features.columns)}")
    labels = np.asarray(labels).astype(int)
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
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


def scores_with_intervals(y_true, prob, groups, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> dict[str, float]:
    """:data:`SCORES` and their percentile bootstrap intervals, resampling stars (``groups``).

    Each resample draws as many stars as there are, with replacement, and keeps all their
    KOIs (a cluster bootstrap: KOIs of one star are not independent); percentile interval
    (Efron & Tibshirani 1993, ch. 13). Returns ``{name, name_ci_low, name_ci_high}``.
    """
    y_true, prob, groups = np.asarray(y_true).astype(int), np.asarray(prob, float), np.asarray(groups)
    out = {name: float(f(y_true, prob)) for name, f in SCORES.items()}
    stars, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(stars))]
    rng = np.random.default_rng(seed)
    boot = {name: [] for name in SCORES}
    while len(boot["pr_auc"]) < n_boot:
        idx = np.concatenate([members[i] for i in rng.integers(0, len(stars), len(stars))])
        y, p = y_true[idx], prob[idx]
        if y.min() == y.max():
            continue
        for name, f in SCORES.items():
            boot[name].append(f(y, p))
    for name, values in boot.items():
        low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low), float(high)
    return out


def koi_cv(koi: pd.DataFrame, n_folds: int = 5, seed: int = 42, n_boot: int = 1000) -> tuple[pd.DataFrame, dict]:
    """Grouped (by kepid), stratified k-fold cv of the tabular branch over every labelled KOI.

    scikit-learn ``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)``; fold
    ``k``'s model is seeded ``seed + k``. No star has KOIs on both sides of a fold (asserted).

    Returns
    -------
    oof : DataFrame ``kepid, kepoi_name, label, fold, probability`` (one row per labelled KOI).
    summary : dict
        Pooled-OOF :data:`SCORES` with cluster-bootstrap intervals
        (:func:`scores_with_intervals`), their fold means ``<name>_fold_mean`` / ``_fold_std``,
        ``n_kois``, ``n_stars``, ``n_confirmed``, ``n_false_positive``.
    """
    labelled = koi_labels(koi)
    x, y, groups = build_features(labelled), labelled["label"].to_numpy(), labelled["kepid"].to_numpy()
    prob = np.empty(len(y))
    fold_of = np.empty(len(y), dtype=int)
    per_fold = []
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (tr, va) in enumerate(splitter.split(x, y, groups)):
        assert not np.intersect1d(groups[tr], groups[va]).size, f"fold {k}: a star on both sides"
        model = fit_tabular(x.iloc[tr], y[tr], seed=seed + k)
        prob[va], fold_of[va] = predict_tabular(model, x.iloc[va]), k
        per_fold.append({name: f(y[va], prob[va]) for name, f in SCORES.items()})
    oof = pd.DataFrame({"kepid": groups, "kepoi_name": labelled["kepoi_name"], "label": y,
                        "fold": fold_of, "probability": prob})
    summary = scores_with_intervals(y, prob, groups, n_boot=n_boot, seed=seed)
    for name in SCORES:
        values = np.array([f[name] for f in per_fold])
        summary[f"{name}_fold_mean"], summary[f"{name}_fold_std"] = float(values.mean()), float(values.std(ddof=1))
    summary.update(n_kois=int(len(y)), n_stars=int(len(np.unique(groups))), n_confirmed=int(y.sum()),
                   n_false_positive=int(len(y) - y.sum()))
    return oof, summary


def training_table(koi: pd.DataFrame) -> pd.DataFrame:
    """The KOI training table as logged: ``kepid, kepoi_name, label`` and the allowed inputs.

    The identifiers are kept for the record (which KOIs trained the model); the model reads
    only :func:`build_features` of it.
    """
    labelled = koi_labels(koi)
    cols = ["kepid", "kepoi_name", "label"] + [c for c in ALLOWED_INPUTS if c in labelled]
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
        The KOI cumulative table (:func:`pixel_cnn.io.dataset.load_koi_table`).

    A fit trains :func:`fit_tabular` (seed ``seed``) on every labelled KOI whose star is not in
    ``exclude_kepids`` (asserted), whatever ``train_idx`` holds: stars outside the cv's dataset
    train it too. It scores each target of ``score_idx`` by its star's first KOI
    (:func:`star_koi`); a star absent from the table gets all-NaN features.
    """

    name = "tabular"

    def __init__(self, koi: pd.DataFrame):
        self.koi = koi
        self.labelled = koi_labels(koi)
        self.features = build_features(self.labelled)
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
        return build_features(rows.reset_index()), rows["kepoi_name"].fillna("").astype(str).tolist()

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

    def describe(self) -> dict:
        return {"name": self.name, "features": list(FEATURE_NAMES), "koi_table_digest": self.digest}
