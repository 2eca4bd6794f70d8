"""Cross-validation grouped by star (kepid) of any vetter: splits, the one loop over folds and branches, OOF.

No MLflow here: tracking hooks in through a :class:`CVCallbacks` object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pixel_cnn.branches.base import Branch, Fitted
from pixel_cnn.evaluation.metrics import (METRIC_NAMES, binary_metrics, bootstrap_pr_auc, f1_optimal_threshold,
                                          thresholded_metrics)
from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.vetter.combiner import Combiner

#: Threshold for the per-fold accuracy and F1 when no inner split chooses one
#: (``inner_folds=0``): fixed before seeing any data (class-weighted sampling
#: trains the network on balanced classes).
FOLD_THRESHOLD = 0.5
#: Default inner folds: the decision threshold of each outer fold is F1-optimal on
#: the out-of-fold predictions of an inner grouped k-fold of its training targets.
INNER_FOLDS = 3


class CVError(ValueError):
    """cv cannot run on this dataset with these settings; the message says why."""


def make_folds(kepids: np.ndarray, labels: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds grouped by kepid, so that no star is on both sides of a fold.

    Uses scikit-learn's ``StratifiedGroupKFold(shuffle=True, random_state=seed)``.

    Parameters
    ----------
    kepids : int array ``(N,)``; rows sharing a kepid (several KOIs of one star)
        always land in the same fold.
    labels : int array ``(N,)``, 0/1.
    n_folds : int, >= 2.
    seed : int

    Returns
    -------
    list of ``(train_idx, val_idx)`` int arrays, one pair per fold.

    Raises
    ------
    CVError
        Fewer stars than folds, a class with fewer stars than folds, or a fold
        whose training or validation side lacks a class; checked before any
        training.
    """
    kepids, labels = np.asarray(kepids), np.asarray(labels).astype(int)
    if n_folds < 2:
        raise CVError(f"n_folds={n_folds}; need at least 2")
    n_stars = len(np.unique(kepids))
    if n_stars < n_folds:
        raise CVError(f"{n_stars} targets (distinct kepids) is fewer than n_folds={n_folds}")
    for cls, name in ((1, "CONFIRMED"), (0, "FALSE POSITIVE")):
        n_cls = len(np.unique(kepids[labels == cls]))
        if n_cls < n_folds:
            raise CVError(
                f"{n_cls} {name} target(s) cannot fill {n_folds} folds: every validation fold "
                f"needs both classes; lower n_folds or add labelled targets"
            )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros(len(labels)), labels, groups=kepids))
    for i, (train_idx, val_idx) in enumerate(folds):
        shared = np.intersect1d(kepids[train_idx], kepids[val_idx])
        assert len(shared) == 0, f"fold {i}: kepids on both sides {shared[:5]}"
        for side, idx in (("training", train_idx), ("validation", val_idx)):
            if len(np.unique(labels[idx])) < 2:
                raise CVError(f"fold {i}: the {side} side holds one class only; lower n_folds")
    return folds


class CVCallbacks:
    """Hooks called by :func:`run_cv`; the default does nothing (tracking off)."""

    def fold_start(self, repeat: int, fold: int, info: dict) -> None: ...
    def epoch_end(self, repeat: int, fold: int, epoch: int, losses: dict) -> None: ...
    def fold_end(self, repeat: int, fold: int, outcome: "FoldOutcome") -> None: ...


@dataclass
class FoldOutcome:
    """One outer fold: indices into the dataset, every branch's fit, the vetter's scores.

    ``metrics`` and ``threshold`` are the vetter's (the combiner's with several branches, the
    branch's own with one); ``extra_metrics`` holds each branch's scores side by side when
    there are several (``pr_auc_pixel``, ``pr_auc_tabular``, ``pr_auc_fused`` ...).
    """

    repeat: int
    fold: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    fitted: dict[str, Fitted]
    metrics: dict[str, float]
    val_kepids: np.ndarray
    val_labels: np.ndarray
    prob: np.ndarray
    threshold: float = FOLD_THRESHOLD
    thresholds: dict[str, float] = field(default_factory=dict)
    combiner: Combiner | None = None
    #: The pixel branch's model inputs of the validation targets (attributions, sheets).
    val_inputs: np.ndarray | None = None
    #: Integrated-Gradients maps of the validation inputs, same shape (``run_cv(attributions=True)``).
    attributions: np.ndarray | None = None
    extra_metrics: dict[str, float] | None = None

    @property
    def positive_rate(self) -> float:
        return float(np.mean(self.val_labels))

    @property
    def pixel(self) -> Fitted | None:
        """The pixel branch's fit (None for a vetter without one)."""
        return self.fitted.get("pixel")


@dataclass
class CVResult:
    """Everything a cv produced.

    Attributes
    ----------
    vetter : str, the vetter's name. branches : the :class:`~pixel_cnn.branches.base.Branch`
        objects, in combiner order.
    folds : list of FoldOutcome, repeat-major.
    oof : pandas.DataFrame
        ``kepid, label, repeat, fold, probability, threshold``: every target once per repeat;
        with several branches also ``probability_<b>`` / ``threshold_<b>`` for each branch and
        ``fused``, and the branches' notes (the tabular branch's ``tabular_koi``).
    summary : dict[str, float]
        ``<metric>_mean`` / ``<metric>_std`` over all folds of all repeats and
        ``<metric>_oof`` on pooled out-of-fold predictions (mean over repeats;
        ``<metric>_oof_std`` across repeats when ``repeats > 1``; accuracy and
        F1 with each fold's own threshold), ``pr_auc_oof_ci_low/high`` (95 %
        bootstrap interval over targets, :func:`~pixel_cnn.evaluation.metrics.bootstrap_pr_auc`)
        and ``threshold``: the mean of repeat 0's fold thresholds, each chosen
        on that fold's training targets only (the served vetter's threshold). With several
        branches, the same per branch (``<m>_oof_<b>`` ..., :func:`branch_summary`), the mean
        combiner (``combiner_w_<b>``, ``combiner_intercept``), the share of folds whose combiner
        kept branch ``b`` (``combiner_uses_<b>``) and that refitted it (``combiner_refit``;
        :meth:`~pixel_cnn.vetter.combiner.Combiner.select`) and ``threshold_<b>`` of each
        branch that can answer alone (the pixel branch: the served stack-only threshold).
    combiner : the mean of repeat 0's fold combiners (None with one branch).
    """

    vetter: str
    branches: list[Branch]
    folds: list[FoldOutcome]
    oof: pd.DataFrame
    summary: dict[str, float] = field(default_factory=dict)
    combiner: Combiner | None = None

    def ensemble_folds(self) -> list[FoldOutcome]:
        """The folds of repeat 0: the members of the registered ensemble."""
        return [f for f in self.folds if f.repeat == 0]

    def branch(self, name: str) -> Branch | None:
        return next((b for b in self.branches if b.name == name), None)

    @property
    def preset(self):
        """The pixel branch's preset (None for a vetter without one)."""
        pixel = self.branch("pixel")
        return None if pixel is None else pixel.preset


def repeat_scores(oof: pd.DataFrame, column: str = "probability", threshold: str = "threshold") -> list[dict]:
    """Pooled out-of-fold scores of each repeat: ``[{metric: value}]``, one dict per repeat.

    :data:`~pixel_cnn.evaluation.metrics.METRIC_NAMES` of the predictions ``column`` of one
    repeat pooled over its folds; accuracy and F1 at the threshold that came with each
    prediction from its fold's training side (``threshold`` column): nothing is chosen on the
    out-of-fold predictions. The one place pooled scores are computed (cv, its branches, the
    quality benchmark).
    """
    out = []
    for _, g in oof.groupby("repeat"):
        scores = binary_metrics(g["label"], g[column], FOLD_THRESHOLD)
        scores.update(thresholded_metrics(g["label"], g[column], g[threshold]))
        out.append(scores)
    return out


def summarize(folds: list[FoldOutcome], oof: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Fold mean/std, pooled-OOF scores, bootstrap interval and threshold of the vetter (see CVResult).

    ``oof`` needs ``kepid, label, repeat, probability, threshold``.
    """
    summary: dict[str, float] = {}
    names = list(folds[0].metrics)
    for name in names:
        values = np.array([f.metrics[name] for f in folds])
        summary[f"{name}_mean"] = float(values.mean())
        summary[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    per_repeat = repeat_scores(oof)
    for name in names:
        values = np.array([m[name] for m in per_repeat])
        summary[f"{name}_oof"] = float(values.mean())
        if len(values) > 1:
            summary[f"{name}_oof_std"] = float(values.std(ddof=1))
    low, high = oof_interval(oof, seed)
    summary["pr_auc_oof_ci_low"], summary["pr_auc_oof_ci_high"] = low, high
    summary["threshold"] = float(np.mean([f.threshold for f in folds if f.repeat == 0]))
    return summary


def branch_summary(folds: list[FoldOutcome], oof: pd.DataFrame, branch: str) -> dict[str, float]:
    """``<m>_mean_<b>``, ``<m>_std_<b>`` over folds and ``<m>_oof_<b>`` (``_oof_std_<b>``) pooled, for
    branch ``b`` (or ``fused``) of a vetter with several branches."""
    out = {}
    for name in METRIC_NAMES:
        values = np.array([f.extra_metrics[f"{name}_{branch}"] for f in folds])
        out[f"{name}_mean_{branch}"] = float(values.mean())
        out[f"{name}_std_{branch}"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    per_repeat = repeat_scores(oof, f"probability_{branch}", f"threshold_{branch}")
    for name in METRIC_NAMES:
        values = np.array([m[name] for m in per_repeat])
        out[f"{name}_oof_{branch}"] = float(values.mean())
        if len(values) > 1:
            out[f"{name}_oof_std_{branch}"] = float(values.std(ddof=1))
    return out


def oof_interval(oof: pd.DataFrame, seed: int = 0, score=None, column: str = "probability") -> tuple[float, float]:
    """95 % percentile-bootstrap interval of a pooled-OOF score, resampling targets.

    ``oof``: ``kepid, label, repeat`` and the predictions ``column`` (every target once per repeat).
    ``score``: ``score(y, p)``, average precision (PR-AUC) by default; e.g.
    scikit-learn's ``roc_auc_score`` for ROC-AUC. Same draws as the PR-AUC
    interval of :func:`summarize` for the same ``seed``
    (:func:`~pixel_cnn.evaluation.metrics.bootstrap_pr_auc`).
    """
    wide = oof.pivot(index="kepid", columns="repeat", values=column)
    labels = oof.drop_duplicates("kepid").set_index("kepid").loc[wide.index, "label"]
    kwargs = {} if score is None else {"score": score}
    return bootstrap_pr_auc(labels.to_numpy(), wide.to_numpy().T, seed=seed, **kwargs)


def worst_oof(oof: pd.DataFrame, n: int = 4, repeat: int = 0) -> pd.DataFrame:
    """The worst out-of-fold calls of one repeat: the ``n`` planets scored lowest, the ``n`` FPs scored highest.

    ``oof``: ``kepid, label, repeat, fold, probability, threshold`` (:attr:`CVResult.oof`).
    Returns those rows (planets first, lowest first; then false positives, highest
    first) with ``rank`` (1..n within its class) and ``mistake`` (True when the call at
    the fold's own threshold is wrong). Ties broken by kepid.
    """
    rows = oof[oof["repeat"] == repeat]
    planets = rows[rows["label"] == 1].sort_values(["probability", "kepid"]).head(n)
    fps = rows[rows["label"] == 0].sort_values(["probability", "kepid"], ascending=[False, True]).head(n)
    out = pd.concat([planets.assign(rank=np.arange(1, len(planets) + 1)),
                     fps.assign(rank=np.arange(1, len(fps) + 1))], ignore_index=True)
    out["mistake"] = (out["probability"] >= out["threshold"]).astype(int) != out["label"]
    return out


def cv_run_name(preset: str, seed: int, n_folds: int, repeats: int = 1, overrides: dict | None = None,
                inner_folds: int = INNER_FOLDS) -> str:
    """What a cv run is, as its name: ``cv phase2 seed=42 x5`` (``x5 r3`` with repeats, ``inner=0`` when
    the inner threshold split is not the default, then the preset overrides)."""
    name = f"cv {preset} seed={seed} x{n_folds}" + (f" r{repeats}" if repeats > 1 else "")
    name += f" inner={inner_folds}" if inner_folds != INNER_FOLDS else ""
    extra = " ".join(f"{k}={v}" for k, v in sorted((overrides or {}).items()) if v is not None)
    return f"{name} {extra}" if extra else name


def cv_description(summary: dict, roc_interval: tuple[float, float], n_targets: int, repeats: int) -> str:
    """The headline figures of a cv, as the run's description (Markdown, MLflow ``mlflow.note.content``)."""
    return (
        f"Pooled out-of-fold (OOF) scores of {n_targets} targets"
        + (f", mean over {repeats} repeats" if repeats > 1 else "") + ":\n\n"
        f"- PR-AUC (average precision): **{summary['pr_auc_oof']:.3f}** "
        f"(95 % bootstrap interval {summary['pr_auc_oof_ci_low']:.3f}-{summary['pr_auc_oof_ci_high']:.3f})\n"
        f"- ROC-AUC: **{summary['roc_auc_oof']:.3f}** "
        f"(95 % bootstrap interval {roc_interval[0]:.3f}-{roc_interval[1]:.3f})\n"
        f"- threshold: **{summary['threshold']:.3f}** (the served model's: mean of the repeat-0 folds' "
        f"thresholds, each from its training side)\n"
    )


def inner_oof(branch: Branch, train_idx: np.ndarray, inner_split, exclude_kepids: np.ndarray,
              kepids: np.ndarray, seed: int) -> np.ndarray:
    """Inner out-of-fold probabilities of one outer fold's training targets, float64 ``(len(train_idx),)``.

    ``inner_split``: ``make_folds(kepids[train_idx], labels[train_idx], inner_folds, seed)``
    (positions into ``train_idx``). Inner fold ``j`` fits ``branch`` on the other inner folds
    (seed ``seed + 100 * (j + 1)``), never on the outer validation stars ``exclude_kepids``
    nor on its own held-out stars, and scores its held-out part. The fold's thresholds are
    F1-optimal on these predictions and the combiner is fitted on them.
    """
    prob = np.empty(len(train_idx))
    for j, (tr, va) in enumerate(inner_split):
        held = train_idx[va]
        fitted = branch.fit(train_idx[tr], held, np.concatenate([exclude_kepids, kepids[held]]),
                            seed + 100 * (j + 1))
        prob[va] = fitted.prob
    return prob


def plan_splits(kepids: np.ndarray, labels: np.ndarray, n_folds: int, seed: int, repeats: int,
                inner_folds: int) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """Every repeat's outer folds (``{repeat: folds}``), with their inner splits checked too.

    Repeat ``r`` splits with seed ``seed + r``; the inner split of fold ``k`` with
    ``seed + 1000 * r + k``. Cheap (no training): call it to refuse a cv before anything starts.

    Raises
    ------
    CVError
        ``repeats < 1``, ``inner_folds`` of 1 or negative, or a split that
        :func:`make_folds` refuses (the message names the repeat and fold).
    """
    if repeats < 1:
        raise CVError(f"repeats={repeats}; need at least 1")
    if inner_folds == 1 or inner_folds < 0:
        raise CVError(f"inner_folds={inner_folds}; use 0 (fixed threshold {FOLD_THRESHOLD}) or >= 2")
    splits = {r: make_folds(kepids, labels, n_folds, seed + r) for r in range(repeats)}
    if inner_folds:
        for r in range(repeats):
            for k, (train_idx, _) in enumerate(splits[r]):
                try:
                    make_folds(kepids[train_idx], labels[train_idx], inner_folds, seed + 1000 * r + k)
                except CVError as exc:
                    raise CVError(f"repeat {r} fold {k}, inner split: {exc}; "
                                  "lower inner_folds (0 = fixed threshold 0.5)") from None
    return splits


def fold_info(train_idx: np.ndarray, val_idx: np.ndarray, labels: np.ndarray, inner_folds: int,
              n_extra_train: int = 0) -> dict:
    """What ``CVCallbacks.fold_start`` is told of a fold: sizes, positive rates, inner folds."""
    return {
        "n_train": len(train_idx), "n_val": len(val_idx),
        "val_positive_rate": float(labels[val_idx].mean()),
        "train_positive_rate": float(labels[train_idx].mean()),
        "inner_folds": inner_folds, "n_extra_train": n_extra_train,
    }


def run_cv(
    dataset: Dataset,
    branches: list[Branch],
    n_folds: int = 5,
    seed: int = 42,
    repeats: int = 1,
    callbacks: CVCallbacks | None = None,
    inner_folds: int = INNER_FOLDS,
    attributions: bool = False,
    vetter: str = "",
) -> CVResult:
    """Grouped, stratified k-fold cross-validation of a vetter, optionally repeated; nothing chosen on validation.

    The one cv loop, whatever the branches. Repeat ``r`` splits with seed ``seed + r``; outer fold
    ``k`` of repeat ``r`` fits every branch with seed ``seed + 1000 * r + k`` on its training
    side (a network: the preset's fixed number of epochs, last epoch kept) and scores the
    validation targets. Thresholds come from the training targets alone: each branch's inner
    out-of-fold predictions (:func:`inner_oof`, the inner split seeded by the fold seed) give
    its F1-optimal threshold (``inner_folds=0``: the fixed :data:`FOLD_THRESHOLD`). With two or
    more branches a :class:`~pixel_cnn.vetter.combiner.Combiner` is fitted on those inner
    predictions, keeping only the branches that help there (:meth:`~pixel_cnn.vetter.combiner.Combiner.select`),
    and the vetter's threshold is F1-optimal on its inner fused predictions
    (stacked generalization; Wolpert 1992). The folds depend on ``(kepids, labels, n_folds,
    seed + r)`` only, so two vetters run with the same seed see the same folds. Same seed and
    data give the same result on the same machine.

    Parameters
    ----------
    dataset : the labelled targets.
    branches : the vetter's branches in combiner order (:mod:`pixel_cnn.branches.vetters`);
        each is prepared once (:meth:`~pixel_cnn.branches.base.Branch.prepare`).
    callbacks : hooks per fold and epoch (tracking, pruning); an exception raised by a
        callback (e.g. ``optuna.TrialPruned`` from ``fold_end``) stops the cv and propagates.
    attributions : also compute each outer fit's attribution maps of its validation targets
        (:meth:`~pixel_cnn.branches.base.Branch.explain`: the pixel branch's captum Integrated
        Gradients, ``FoldOutcome.attributions``), after the fit; scores unchanged.
    vetter : the vetter's name, recorded in the result.

    Raises
    ------
    CVError
        See :func:`make_folds`; raised for every repeat's split (and inner split) before any
        training starts, or ``repeats < 1``, ``inner_folds`` of 1 or negative, or several
        branches with ``inner_folds`` < 2 (the combiner is fitted on inner predictions).
    ValueError
        A branch refuses its inputs (e.g. pixel ``inputs`` of the wrong shape).
    """
    callbacks = callbacks or CVCallbacks()
    if not branches:
        raise CVError("a vetter needs at least one branch")
    combined = len(branches) > 1
    if combined and inner_folds < 2:
        raise CVError(f"inner_folds={inner_folds}: a vetter with several branches fits its combiner on inner "
                      "out-of-fold predictions; use inner_folds >= 2")
    kepids, labels = dataset.kepids, dataset.labels
    splits = plan_splits(kepids, labels, n_folds, seed, repeats, inner_folds)
    for branch in branches:
        branch.prepare(dataset)
    pixel = next((b for b in branches if b.name == "pixel"), None)
    n_extra = getattr(pixel, "n_extra", 0)
    names = [b.name for b in branches]

    outcomes, oof_rows = [], []
    for r in range(repeats):
        for k, (train_idx, val_idx) in enumerate(splits[r]):
            fold_seed = seed + 1000 * r + k
            callbacks.fold_start(r, k, fold_info(train_idx, val_idx, labels, inner_folds, n_extra))
            val_stars = kepids[val_idx]
            inner_split = make_folds(kepids[train_idx], labels[train_idx], inner_folds, fold_seed) if inner_folds else []
            inner, fitted, thresholds = {}, {}, {}
            for branch in branches:
                if inner_folds:
                    inner[branch.name] = inner_oof(branch, train_idx, inner_split, val_stars, kepids, fold_seed)
                    thresholds[branch.name] = f1_optimal_threshold(labels[train_idx], inner[branch.name])
                else:
                    thresholds[branch.name] = FOLD_THRESHOLD
                on_epoch = (lambda e, losses, r=r, k=k: callbacks.epoch_end(r, k, e, losses))
                fitted[branch.name] = branch.fit(train_idx, val_idx, val_stars, fold_seed, on_epoch=on_epoch)
                assert not np.isin(val_stars, fitted[branch.name].training_kepids).any(), \
                    f"repeat {r} fold {k}: a validation star trained the {branch.name} branch"
            probs = {n: fitted[n].prob for n in names}
            combiner, chosen = None, {}
            if combined:
                combiner, chosen = Combiner.select([inner[n] for n in names], labels[train_idx], names, fold_seed)
                thresholds["fused"] = f1_optimal_threshold(labels[train_idx], combiner.predict([inner[n] for n in names]))
                probs["fused"] = combiner.predict([probs[n] for n in names])
                prob, threshold = probs["fused"], thresholds["fused"]
            else:
                prob, threshold = probs[names[0]], thresholds[names[0]]
            extra = None
            if combined:
                extra = {}
                for b in [*names, "fused"]:
                    extra.update({f"{m}_{b}": v for m, v in
                                  binary_metrics(labels[val_idx], probs[b], thresholds[b]).items()})
                    extra[f"threshold_{b}"] = thresholds[b]
                extra.update({f"combiner_{key}": v for key, v in combiner.to_dict().items()})
                extra.update(chosen)
                for f in fitted.values():
                    extra.update(f.info)
            outcome = FoldOutcome(
                repeat=r, fold=k, train_idx=train_idx, val_idx=val_idx, fitted=fitted,
                metrics=binary_metrics(labels[val_idx], prob, threshold),
                val_kepids=val_stars, val_labels=labels[val_idx], prob=prob,
                threshold=threshold, thresholds=thresholds, combiner=combiner,
                val_inputs=None if pixel is None else pixel.inputs(val_idx),
                attributions=pixel.explain(fitted["pixel"], val_idx) if attributions and pixel is not None else None,
                extra_metrics=extra,
            )
            callbacks.fold_end(r, k, outcome)
            outcomes.append(outcome)
            columns = {"kepid": val_stars, "label": labels[val_idx], "repeat": r, "fold": k,
                       "probability": prob, "threshold": threshold}
            if combined:
                columns.update({f"probability_{b}": probs[b] for b in [*names, "fused"]})
                columns.update({f"threshold_{b}": thresholds[b] for b in [*names, "fused"]})
                for branch in branches:
                    columns.update(branch.notes(val_idx))
            oof_rows.append(pd.DataFrame(columns))
    oof = pd.concat(oof_rows, ignore_index=True).sort_values(["repeat", "kepid"], ignore_index=True)
    summary = summarize(outcomes, oof, seed)
    combiner = None
    if combined:
        for b in [*names, "fused"]:
            summary.update(branch_summary(outcomes, oof, b))
        first = [f for f in outcomes if f.repeat == 0]
        combiner = Combiner.mean([f.combiner for f in first])
        summary.update({f"combiner_{key}": v for key, v in combiner.to_dict().items()})
        # the share of all folds whose combiner kept each branch (Combiner.select)
        summary.update({f"combiner_{key}": float(np.mean([f.extra_metrics[f"combiner_{key}"] for f in outcomes]))
                        for key in [*(f"uses_{n}" for n in names), "refit"]})
        for branch in branches:
            if branch.answers_alone:
                summary[f"threshold_{branch.name}"] = float(np.mean([f.thresholds[branch.name] for f in first]))
    return CVResult(vetter=vetter or "+".join(names), branches=list(branches), folds=outcomes, oof=oof,
                    summary=summary, combiner=combiner)


def served_vetter(result: CVResult, seed: int, info: dict | None = None) -> tuple[dict, list | None, object, object]:
    """What the registered model of a cv ships: ``(config, pixel state dicts or None, tabular model or None,
    KOI context catalogue or None)`` (the catalogue: the tabular branch's ``served_catalogue()``).

    ``config`` is the vetter's ``config.json`` (:class:`pixel_cnn.vetter.model.Vetter`): its name,
    branches (combiner order), ``threshold`` (the cv's ``summary["threshold"]``), ``thresholds`` of
    each branch that can answer alone (mean of repeat 0's fold thresholds), the mean combiner,
    the pixel preset, every branch's description, the kepids of every cv target (each trained
    some member) and the pooled-OOF scores, plus ``info`` (provenance). Each branch ships
    :meth:`~pixel_cnn.branches.base.Branch.final` of the repeat-0 fits (the pixel branch: those
    networks; the tabular branch: a model trained on every labelled KOI, seed ``seed``).
    """
    first = result.ensemble_folds()
    names = [b.name for b in result.branches]
    finals = {b.name: b.final([f.fitted[b.name] for f in first], seed) for b in result.branches}
    if len(names) == 1:
        thresholds = {names[0]: result.summary["threshold"]}
    else:
        thresholds = {b.name: result.summary[f"threshold_{b.name}"] for b in result.branches if b.answers_alone}
    scores = {k: v for k, v in result.summary.items()
              if k.startswith(("pr_auc_oof", "roc_auc_oof")) and "_std" not in k and "_ci_" not in k}
    config = {
        "vetter": result.vetter, "branches": names, "threshold": float(result.summary["threshold"]),
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        "combiner": result.combiner.to_dict() if result.combiner is not None else None,
        **({"preset": result.preset.to_dict(), "n_members": len(first)} if result.preset is not None else {}),
        "branch_config": {b.name: b.describe() for b in result.branches},
        "scores": scores,
        **(info or {}),
        # every cv target trained some member: scoring marks these stars (their scores are not out of fold)
        "training_kepids": sorted(int(k) for k in result.oof["kepid"].unique()),
    }
    catalogues = [b.served_catalogue() for b in result.branches if hasattr(b, "served_catalogue")]
    return config, finals.get("pixel"), finals.get("tabular"), (catalogues[0] if catalogues else None)
