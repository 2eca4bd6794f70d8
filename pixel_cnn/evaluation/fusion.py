"""The fusion vetter's cv (issue 14): the pixel branch, the tabular branch, and their combiner.

No MLflow here. :func:`run_fusion_cv` follows :func:`pixel_cnn.evaluation.cv.run_cv` (same
splits, seeds, pixel networks and callbacks; the pixel branch's predictions and threshold
are those of the ``phase2`` preset, bit for bit) and adds, in every outer fold:

1. the tabular branch (:mod:`pixel_cnn.vetter.tabular`) trained on every labelled KOI of the
   KOI table except those of the fold's validation stars (asserted), scoring each
   validation star's first KOI (:func:`pixel_cnn.vetter.koi_branch.star_koi`);
2. inner out-of-fold predictions of both branches on the fold's training stars: the pixel
   networks of the inner split that already chooses the threshold
   (:func:`pixel_cnn.evaluation.cv.inner_oof`), and a tabular model per inner fold trained without
   the KOIs of the outer validation stars nor of that inner fold's stars;
3. the combiner, a logistic regression on the two logits (:class:`~pixel_cnn.vetter.combiner.Combiner`), fitted on those
   inner predictions only, and the fused threshold, F1-optimal on them. Nothing is chosen on
   the validation fold.

Per fold and on the pooled OOF predictions, every score is reported for the three branches
(``pr_auc_pixel``, ``pr_auc_tabular``, ``pr_auc_fused`` ...); the standard names
(``pr_auc``, ``pr_auc_oof`` ...) are the fused ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pixel_cnn.vetter import tabular
from pixel_cnn.branches import tabular as koi_branch
from pixel_cnn.vetter.combiner import Combiner
from pixel_cnn.evaluation.cv import (CVCallbacks, fold_info, CVError, CVResult, FoldOutcome, FOLD_THRESHOLD, INNER_FOLDS, inner_oof,
                               make_folds, plan_splits, summarize)
from pixel_cnn.drawing.explain import integrated_gradients
from pixel_cnn.evaluation.metrics import METRIC_NAMES, binary_metrics, f1_optimal_threshold, thresholded_metrics
from pixel_cnn.vetter.networks import Preset
from pixel_cnn.vetter.representation import build_inputs
from pixel_cnn.branches.pixel import train_fold
from pixel_cnn.stacks.dataset import Dataset

BRANCHES = ("pixel", "tabular", "fused")


class KOITable:
    """The tabular side of a fusion cv: every labelled KOI, its features, and each star's KOI.

    Parameters
    ----------
    koi : DataFrame
        The KOI cumulative table (:func:`pixel_cnn.io.dataset.load_koi_table`).
    """

    def __init__(self, koi: pd.DataFrame):
        self.koi = koi
        self.labelled = koi_branch.koi_labels(koi)
        self.features = tabular.build_features(self.labelled)
        self.labels = self.labelled["label"].to_numpy(np.int64)
        self.kepids = self.labelled["kepid"].to_numpy(np.int64)
        self.table = koi_branch.training_table(koi)
        self.digest = koi_branch.table_digest(self.table)

    def star_features(self, kepids) -> tuple[pd.DataFrame, list[str]]:
        """Features of each star's first KOI (:func:`~pixel_cnn.vetter.koi_branch.star_koi`), in ``kepids``
        order, and the KOI names used (``""`` and all-NaN features for a star not in the table)."""
        kepids = np.asarray(kepids, dtype=np.int64)
        first = koi_branch.star_koi(self.koi, kepids).set_index("kepid")
        rows = first.reindex(kepids)
        return tabular.build_features(rows.reset_index()), rows["kepoi_name"].fillna("").astype(str).tolist()

    def fit_excluding(self, exclude_kepids, seed: int):
        """The tabular branch trained on every labelled KOI whose star is not in ``exclude_kepids``.

        Returns ``(model, n_training_kois, training kepids)``. Asserts that no KOI of an
        excluded star is in the training set.
        """
        keep = ~np.isin(self.kepids, np.asarray(exclude_kepids, dtype=np.int64))
        train_kepids = self.kepids[keep]
        assert not np.isin(train_kepids, exclude_kepids).any(), "a validation star's KOI is in the tabular training set"
        model = koi_branch.fit_tabular(self.features[keep], self.labels[keep], seed=seed)
        return model, int(keep.sum()), train_kepids


@dataclass
class FusionFoldOutcome(FoldOutcome):
    """A fusion cv fold: :class:`~pixel_cnn.evaluation.cv.FoldOutcome` (fused ``metrics`` and ``threshold``)
    plus its combiner, pixel-only threshold and the kepids of the tabular training KOIs (one per KOI)."""

    combiner: Combiner | None = None
    threshold_pixel: float = FOLD_THRESHOLD
    tabular_train_kepids: np.ndarray | None = field(default=None, repr=False)


@dataclass
class FusionCVResult(CVResult):
    """:class:`~pixel_cnn.evaluation.cv.CVResult` of a fusion cv, plus what the served model needs.

    ``oof`` has ``probability`` / ``threshold`` (fused) and ``probability_<branch>`` /
    ``threshold_<branch>`` for each of :data:`BRANCHES`, and ``tabular_koi`` (the KOI whose
    parameters scored the star). ``combiner``: the mean of repeat 0's fold combiners;
    ``threshold_pixel``: the mean of repeat 0's pixel thresholds (served when no KOI parameter
    is sent); ``koi_digest``: digest of the KOI training table.
    """

    combiner: Combiner | None = None
    threshold_pixel: float = FOLD_THRESHOLD
    koi_digest: str = ""
    koi_table: pd.DataFrame | None = field(default=None, repr=False)


def branch_summary(folds: list[FoldOutcome], oof: pd.DataFrame, branch: str) -> dict[str, float]:
    """``<m>_mean_<b>``, ``<m>_std_<b>`` over folds and ``<m>_oof_<b>`` (``_oof_std_<b>``) pooled, for branch ``b``."""
    out = {}
    for name in METRIC_NAMES:
        values = np.array([f.extra_metrics[f"{name}_{branch}"] for f in folds])
        out[f"{name}_mean_{branch}"] = float(values.mean())
        out[f"{name}_std_{branch}"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    per_repeat = []
    for _, g in oof.groupby("repeat"):
        scores = binary_metrics(g["label"], g[f"probability_{branch}"], FOLD_THRESHOLD)
        scores.update(thresholded_metrics(g["label"], g[f"probability_{branch}"], g[f"threshold_{branch}"]))
        per_repeat.append(scores)
    for name in METRIC_NAMES:
        values = np.array([m[name] for m in per_repeat])
        out[f"{name}_oof_{branch}"] = float(values.mean())
        if len(values) > 1:
            out[f"{name}_oof_std_{branch}"] = float(values.std(ddof=1))
    return out


def run_fusion_cv(
    dataset: Dataset,
    preset: Preset,
    koi: pd.DataFrame | KOITable,
    n_folds: int = 5,
    seed: int = 42,
    repeats: int = 1,
    callbacks: CVCallbacks | None = None,
    inner_folds: int = INNER_FOLDS,
    attributions: bool = False,
) -> FusionCVResult:
    """Grouped, stratified k-fold cv of the fusion vetter; nothing chosen on validation (module doc).

    Splits, seeds and pixel networks are those of :func:`pixel_cnn.evaluation.cv.run_cv` with the
    same arguments; the tabular models of outer fold ``k`` of repeat ``r`` are seeded with the
    fold seed ``seed + 1000 r + k`` (inner fold ``j``: ``fold seed + 100 (j + 1)``).

    Parameters
    ----------
    dataset : the benchmark stacks with labels.
    preset : the pixel branch's preset (``fusion`` = ``phase2``'s network).
    koi : the KOI table, or a :class:`KOITable` of it.
    inner_folds : int, >= 2 (the combiner is fitted on the inner predictions).

    Raises
    ------
    CVError
        As :func:`pixel_cnn.evaluation.cv.run_cv`, or ``inner_folds`` < 2.
    """
    if inner_folds < 2:
        raise CVError(f"inner_folds={inner_folds}: the fusion combiner is fitted on inner out-of-fold "
                      "predictions; use inner_folds >= 2")
    callbacks = callbacks or CVCallbacks()
    table = koi if isinstance(koi, KOITable) else KOITable(koi)
    kepids, labels = dataset.kepids, dataset.labels
    splits = plan_splits(kepids, labels, n_folds, seed, repeats, inner_folds)
    x = build_inputs(dataset.stack_list(), preset.representation, preset.image_size)
    star_x, star_koi_names = table.star_features(kepids)

    outcomes, oof_rows = [], []
    for r in range(repeats):
        for k, (train_idx, val_idx) in enumerate(splits[r]):
            fold_seed = seed + 1000 * r + k
            callbacks.fold_start(r, k, fold_info(train_idx, val_idx, labels, inner_folds))
            val_stars = kepids[val_idx]
            # Pixel branch: the inner split and networks of run_cv's inner_threshold, then the outer network.
            inner_pixel = inner_oof(x[train_idx], labels[train_idx], kepids[train_idx], preset, inner_folds, fold_seed)
            threshold_pixel = f1_optimal_threshold(labels[train_idx], inner_pixel)
            result = train_fold(
                x[train_idx], labels[train_idx], preset, seed=fold_seed,
                x_val=x[val_idx], y_val=labels[val_idx],
                on_epoch=lambda e, losses, r=r, k=k: callbacks.epoch_end(r, k, e, losses),
            )
            # Tabular branch, inner: without the outer validation stars nor the inner fold's stars.
            inner_tab = np.empty(len(train_idx))
            inner_split = make_folds(kepids[train_idx], labels[train_idx], inner_folds, fold_seed)
            for j, (_, iva) in enumerate(inner_split):
                held = train_idx[iva]
                model, _, _ = table.fit_excluding(np.concatenate([val_stars, kepids[held]]), fold_seed + 100 * (j + 1))
                inner_tab[iva] = tabular.predict_tabular(model, star_x.iloc[held])
            # Tabular branch, outer: every labelled KOI except those of the validation stars.
            model, n_tab_train, tab_train_kepids = table.fit_excluding(val_stars, fold_seed)
            assert not np.isin(val_stars, tab_train_kepids).any(), f"repeat {r} fold {k}: validation star in tabular training"
            val_tab = tabular.predict_tabular(model, star_x.iloc[val_idx])
            # Combiner and thresholds from the training stars' inner predictions only.
            combiner = Combiner.fit(inner_pixel, inner_tab, labels[train_idx])
            threshold_tab = f1_optimal_threshold(labels[train_idx], inner_tab)
            threshold = f1_optimal_threshold(labels[train_idx], combiner.predict(inner_pixel, inner_tab))
            val_pixel = result.val_prob
            val_fused = combiner.predict(val_pixel, val_tab)
            probs = {"pixel": val_pixel, "tabular": val_tab, "fused": val_fused}
            thresholds = {"pixel": threshold_pixel, "tabular": threshold_tab, "fused": threshold}
            extra = {}
            for b in BRANCHES:
                extra.update({f"{m}_{b}": v for m, v in binary_metrics(labels[val_idx], probs[b], thresholds[b]).items()})
                extra[f"threshold_{b}"] = thresholds[b]
            extra.update({f"combiner_{key}": v for key, v in combiner.to_dict().items()})
            extra["n_tabular_train_kois"] = float(n_tab_train)
            outcome = FusionFoldOutcome(
                repeat=r, fold=k, train_idx=train_idx, val_idx=val_idx, result=result,
                metrics=binary_metrics(labels[val_idx], val_fused, threshold),
                val_kepids=val_stars, val_labels=labels[val_idx], threshold=threshold, val_inputs=x[val_idx],
                attributions=integrated_gradients(preset, result.state_dict, x[val_idx]) if attributions else None,
                extra_metrics=extra, combiner=combiner, threshold_pixel=threshold_pixel,
                tabular_train_kepids=tab_train_kepids,
            )
            callbacks.fold_end(r, k, outcome)
            outcomes.append(outcome)
            oof_rows.append(pd.DataFrame({
                "kepid": val_stars, "label": labels[val_idx], "repeat": r, "fold": k,
                "probability": val_fused, "threshold": threshold,
                **{f"probability_{b}": probs[b] for b in BRANCHES},
                **{f"threshold_{b}": thresholds[b] for b in BRANCHES},
                "tabular_koi": [star_koi_names[i] for i in val_idx],
            }))
    oof = pd.concat(oof_rows, ignore_index=True).sort_values(["repeat", "kepid"], ignore_index=True)
    summary = summarize(outcomes, oof, seed)
    for b in BRANCHES:
        summary.update(branch_summary(outcomes, oof, b))
    first = [f for f in outcomes if f.repeat == 0]
    combiner = Combiner.mean([f.combiner for f in first])
    threshold_pixel = float(np.mean([f.threshold_pixel for f in first]))
    summary.update({f"combiner_{key}": v for key, v in combiner.to_dict().items()})
    summary["threshold_pixel"] = threshold_pixel
    return FusionCVResult(preset=preset, folds=outcomes, oof=oof, summary=summary, combiner=combiner,
                          threshold_pixel=threshold_pixel, koi_digest=table.digest, koi_table=table.table)
