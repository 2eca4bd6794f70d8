"""Cross-validation grouped by star (kepid): splits, training loop over folds, OOF.

No MLflow here: tracking hooks in through a :class:`CVCallbacks` object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.drawing.explain import integrated_gradients
from pixel_cnn.evaluation.metrics import binary_metrics, bootstrap_pr_auc, f1_optimal_threshold, thresholded_metrics
from pixel_cnn.vetter.networks import Preset
from pixel_cnn.vetter.representation import build_inputs
from pixel_cnn.branches.pixel import FoldResult, train_fold

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
    """One trained fold: indices into the dataset, the training result, its metrics."""

    repeat: int
    fold: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    result: FoldResult
    metrics: dict[str, float]
    val_kepids: np.ndarray
    val_labels: np.ndarray
    threshold: float = FOLD_THRESHOLD
    val_inputs: np.ndarray | None = None
    #: Integrated-Gradients maps of the validation inputs, same shape (``run_cv(attributions=True)``).
    attributions: np.ndarray | None = None
    #: More metrics of the fold logged beside ``metrics`` (the fusion cv's per-branch scores).
    extra_metrics: dict[str, float] | None = None

    @property
    def positive_rate(self) -> float:
        return float(np.mean(self.val_labels))


@dataclass
class CVResult:
    """Everything a cv produced.

    Attributes
    ----------
    folds : list of FoldOutcome, repeat-major.
    oof : pandas.DataFrame
        ``kepid, label, repeat, fold, probability``: every target once per repeat.
    summary : dict[str, float]
        ``<metric>_mean`` / ``<metric>_std`` over all folds of all repeats and
        ``<metric>_oof`` on pooled out-of-fold predictions (mean over repeats;
        ``<metric>_oof_std`` across repeats when ``repeats > 1``; accuracy and
        F1 with each fold's own threshold), ``pr_auc_oof_ci_low/high`` (95 %
        bootstrap interval over targets, :func:`~pixel_cnn.evaluation.metrics.bootstrap_pr_auc`)
        and ``threshold``: the mean of repeat 0's fold thresholds, each chosen
        on that fold's training targets only (the served ensemble's threshold).
    """

    preset: Preset
    folds: list[FoldOutcome]
    oof: pd.DataFrame
    summary: dict[str, float] = field(default_factory=dict)

    def ensemble_folds(self) -> list[FoldOutcome]:
        """The folds of repeat 0: the members of the registered ensemble."""
        return [f for f in self.folds if f.repeat == 0]


def summarize(folds: list[FoldOutcome], oof: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Fold mean/std, pooled-OOF scores, bootstrap interval and threshold (see CVResult).

    ``oof`` needs ``kepid, label, repeat, probability, threshold``. Nothing here
    is chosen on the out-of-fold predictions: accuracy and F1 use the threshold
    that came with each prediction from its fold's training side.
    """
    summary: dict[str, float] = {}
    names = list(folds[0].metrics)
    for name in names:
        values = np.array([f.metrics[name] for f in folds])
        summary[f"{name}_mean"] = float(values.mean())
        summary[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    per_repeat = []
    for _, g in oof.groupby("repeat"):
        scores = binary_metrics(g["label"], g["probability"], FOLD_THRESHOLD)
        scores.update(thresholded_metrics(g["label"], g["probability"], g["threshold"]))
        per_repeat.append(scores)
    for name in names:
        values = np.array([m[name] for m in per_repeat])
        summary[f"{name}_oof"] = float(values.mean())
        if len(values) > 1:
            summary[f"{name}_oof_std"] = float(values.std(ddof=1))
    low, high = oof_interval(oof, seed)
    summary["pr_auc_oof_ci_low"], summary["pr_auc_oof_ci_high"] = low, high
    summary["threshold"] = float(np.mean([f.threshold for f in folds if f.repeat == 0]))
    return summary


def oof_interval(oof: pd.DataFrame, seed: int = 0, score=None) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of a pooled-OOF score, resampling targets.

    ``oof``: ``kepid, label, repeat, probability`` (every target once per repeat).
    ``score``: ``score(y, p)``, average precision (PR-AUC) by default; e.g.
    scikit-learn's ``roc_auc_score`` for ROC-AUC. Same draws as the PR-AUC
    interval of :func:`summarize` for the same ``seed``
    (:func:`~pixel_cnn.evaluation.metrics.bootstrap_pr_auc`).
    """
    wide = oof.pivot(index="kepid", columns="repeat", values="probability")
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


def with_extra(x: np.ndarray, y: np.ndarray, x_extra: np.ndarray | None, y_extra: np.ndarray | None):
    """``(x, y)`` with the extra training-only rows appended (unchanged when there are none)."""
    if x_extra is None or len(x_extra) == 0:
        return x, y
    return np.concatenate([x, x_extra]), np.concatenate([y, np.asarray(y_extra, dtype=y.dtype)])


def extra_training_targets(dataset: Dataset, extra: Dataset | None) -> Dataset | None:
    """The targets of ``extra`` whose kepid is not in ``dataset`` (None if none or no ``extra``).

    Used to train on labelled stacks beyond the benchmark: they join training
    sides only, so removing every benchmark star from them keeps each star on
    one side of every split.
    """
    if extra is None:
        return None
    keep = ~np.isin(extra.kepids, dataset.kepids)
    if not keep.any():
        return None
    manifest = extra.manifest[keep].reset_index(drop=True)
    return Dataset(stacks={int(k): extra.stacks[int(k)] for k in manifest["kepid"]}, manifest=manifest)


def inner_threshold(
    x: np.ndarray, labels: np.ndarray, kepids: np.ndarray, preset: Preset, inner_folds: int, seed: int,
    x_extra: np.ndarray | None = None, y_extra: np.ndarray | None = None,
) -> float:
    """Decision threshold from training targets only: F1-optimal on inner out-of-fold predictions.

    Parameters
    ----------
    x, labels, kepids : the training side of one outer fold, ``(N, C, S, S)``
        float32 inputs, int 0/1 labels ``(N,)``, int kepids ``(N,)``.
    preset : Preset
        Trained with its fixed schedule, as the outer fold is.
    inner_folds : int
        0: return :data:`FOLD_THRESHOLD`. Otherwise the targets are split into
        ``inner_folds`` grouped, stratified folds (:func:`make_folds` with
        ``seed``), a network per inner fold (seed ``seed + 100 * (j + 1)``)
        scores its held-out part, and the F1-optimal threshold of those
        predictions is returned (:func:`~pixel_cnn.evaluation.metrics.f1_optimal_threshold`).
    x_extra, y_extra : optional
        Extra training-only targets ``(E, C, S, S)`` / ``(E,)``: added to every
        inner network's training side, never scored (see ``run_cv(extra_train=...)``).

    Raises
    ------
    CVError
        The training side is too small for ``inner_folds`` (see :func:`make_folds`).
    """
    if inner_folds == 0:
        return FOLD_THRESHOLD
    return f1_optimal_threshold(labels, inner_oof(x, labels, kepids, preset, inner_folds, seed, x_extra, y_extra))


def inner_oof(
    x: np.ndarray, labels: np.ndarray, kepids: np.ndarray, preset: Preset, inner_folds: int, seed: int,
    x_extra: np.ndarray | None = None, y_extra: np.ndarray | None = None,
) -> np.ndarray:
    """Inner out-of-fold probabilities of one outer fold's training targets, float64 ``(N,)``.

    The split (``make_folds(kepids, labels, inner_folds, seed)``) and the networks (seed
    ``seed + 100 * (j + 1)``) are those of :func:`inner_threshold`, which takes its
    F1-optimal threshold from these predictions; the fusion cv
    (:mod:`pixel_cnn.evaluation.fusion`) also fits its combiner on them. ``inner_folds`` >= 2.
    """
    prob = np.empty(len(labels))
    for j, (tr, va) in enumerate(make_folds(kepids, labels, inner_folds, seed)):
        xt, yt = with_extra(x[tr], labels[tr], x_extra, y_extra)
        prob[va] = train_fold(xt, yt, preset, seed=seed + 100 * (j + 1),
                              x_val=x[va], y_val=labels[va]).val_prob
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
    preset: Preset,
    n_folds: int = 5,
    seed: int = 42,
    repeats: int = 1,
    callbacks: CVCallbacks | None = None,
    inner_folds: int = INNER_FOLDS,
    inputs: np.ndarray | None = None,
    extra_train: Dataset | None = None,
    attributions: bool = False,
) -> CVResult:
    """Grouped, stratified k-fold cross-validation, optionally repeated; nothing chosen on validation.

    Repeat ``r`` splits with seed ``seed + r``; fold ``k`` of repeat ``r``
    trains with seed ``seed + 1000 * r + k`` for the preset's fixed number of
    epochs (the last epoch is kept). Its decision threshold comes from its
    training targets alone (:func:`inner_threshold` with ``inner_folds``,
    inner split seeded by the fold seed). The validation targets are only
    scored. The folds depend on ``(kepids, labels, n_folds, seed + r)`` only,
    so two presets run with the same seed see the same folds. Same seed and
    data give the same result on the same machine.

    ``inputs`` (optional): the model inputs already built, float32
    ``(N, C, S, S)`` equal to ``build_inputs(dataset.stack_list(),
    preset.representation, preset.image_size)``; lets a caller that runs many
    cvs on one dataset (tuning) build them once. Results are the same either way.
    An exception raised by a callback (e.g. ``optuna.TrialPruned`` from
    ``fold_end``) stops the cv and propagates.

    ``extra_train`` (optional): more labelled targets (e.g. ``prepare_dataset(labels="koi")``)
    that join the training side of every fold and inner fold and are never
    scored; those whose kepid is in ``dataset`` are dropped first
    (:func:`extra_training_targets`). Folds, seeds and scored targets are the
    same with or without them.

    ``attributions``: also compute each fold's Integrated-Gradients maps of its
    validation inputs (:func:`pixel_cnn.drawing.explain.integrated_gradients`,
    ``FoldOutcome.attributions``), after the fold is trained; scores unchanged.

    Raises
    ------
    CVError
        See :func:`make_folds`; raised for every repeat's split (and inner
        split) before any training starts, or ``repeats < 1``, ``inner_folds``
        of 1 or negative, or ``inputs`` not holding one row per target.
    """
    callbacks = callbacks or CVCallbacks()
    kepids, labels = dataset.kepids, dataset.labels
    splits = plan_splits(kepids, labels, n_folds, seed, repeats, inner_folds)
    if inputs is None:
        x = build_inputs(dataset.stack_list(), preset.representation, preset.image_size)
    else:
        x = np.asarray(inputs, dtype=np.float32)
        expected = (len(labels), preset.in_channels, preset.image_size, preset.image_size)
        if x.shape != expected:
            raise CVError(f"inputs have shape {x.shape}; preset {preset.name!r} on this dataset needs {expected}")

    extra = extra_training_targets(dataset, extra_train)
    x_extra = y_extra = None
    if extra is not None:
        x_extra = build_inputs(extra.stack_list(), preset.representation, preset.image_size)
        y_extra = extra.labels

    outcomes, oof_rows = [], []
    for r in range(repeats):
        for k, (train_idx, val_idx) in enumerate(splits[r]):
            fold_seed = seed + 1000 * r + k
            callbacks.fold_start(r, k, fold_info(train_idx, val_idx, labels, inner_folds,
                                                 0 if extra is None else len(extra.labels)))
            threshold = inner_threshold(x[train_idx], labels[train_idx], kepids[train_idx], preset,
                                        inner_folds, fold_seed, x_extra, y_extra)
            x_train, y_train = with_extra(x[train_idx], labels[train_idx], x_extra, y_extra)
            result = train_fold(
                x_train, y_train, preset, seed=fold_seed,
                x_val=x[val_idx], y_val=labels[val_idx],
                on_epoch=lambda e, losses, r=r, k=k: callbacks.epoch_end(r, k, e, losses),
            )
            outcome = FoldOutcome(
                repeat=r, fold=k, train_idx=train_idx, val_idx=val_idx, result=result,
                metrics=binary_metrics(labels[val_idx], result.val_prob, threshold),
                val_kepids=kepids[val_idx], val_labels=labels[val_idx],
                threshold=threshold, val_inputs=x[val_idx],
                attributions=integrated_gradients(preset, result.state_dict, x[val_idx]) if attributions else None,
            )
            callbacks.fold_end(r, k, outcome)
            outcomes.append(outcome)
            oof_rows.append(pd.DataFrame({
                "kepid": kepids[val_idx], "label": labels[val_idx], "repeat": r, "fold": k,
                "probability": result.val_prob, "threshold": threshold,
            }))
    oof = pd.concat(oof_rows, ignore_index=True).sort_values(["repeat", "kepid"], ignore_index=True)
    return CVResult(preset=preset, folds=outcomes, oof=oof, summary=summarize(outcomes, oof, seed))
