"""Scores and figures (scikit-learn + matplotlib). No MLflow here.

PR-AUC in this project is the *average precision* (scikit-learn's
``average_precision_score``: the step-wise area under the precision-recall
curve, no interpolation). ROC-AUC is ``roc_auc_score``. Brier score is the
mean squared error of the probabilities (``brier_score_loss``).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import (
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
)

METRIC_NAMES = ("pr_auc", "roc_auc", "accuracy", "f1", "brier")


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """PR-AUC (average precision), ROC-AUC, accuracy, F1 and Brier score.

    Parameters
    ----------
    y_true : int array ``(N,)``, 1 = CONFIRMED (positive class), 0 = FALSE POSITIVE.
    prob : float array ``(N,)``, predicted probability of CONFIRMED.
    threshold : float
        ``prob >= threshold`` is called CONFIRMED for accuracy and F1.

    Raises
    ------
    ValueError
        ``y_true`` lacks a class (the AUCs are undefined), or lengths differ.
    """
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=float)
    if len(y_true) != len(prob):
        raise ValueError(f"{len(y_true)} labels but {len(prob)} probabilities")
    if len(np.unique(y_true)) < 2:
        raise ValueError("both classes are needed to score PR-AUC and ROC-AUC")
    pred = (prob >= threshold).astype(int)
    return {
        "pr_auc": float(average_precision_score(y_true, prob)),
        "roc_auc": float(roc_auc_score(y_true, prob)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "f1": float(f1_score(y_true, pred, zero_division=0)),
        "brier": float(brier_score_loss(y_true, prob)),
    }


def f1_optimal_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """The probability threshold that maximizes F1 on ``(y_true, prob)``.

    Scans the thresholds of ``precision_recall_curve``; ties go to the
    highest threshold. Returns a float in [0, 1].
    """
    precision, recall, thresholds = precision_recall_curve(y_true, prob)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best])


def pr_roc_figure(curves: list[tuple[str, np.ndarray, np.ndarray]], title: str = "") -> plt.Figure:
    """Precision-recall and ROC curves side by side, one line per ``(name, y_true, prob)``.

    The legend gives each curve's AP (= PR-AUC) and ROC-AUC; the dashed line on
    the PR panel is the positive base rate of the first curve.
    """
    fig, (ax_pr, ax_roc) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, y_true, prob in curves:
        PrecisionRecallDisplay.from_predictions(y_true, prob, name=name, ax=ax_pr)
        RocCurveDisplay.from_predictions(y_true, prob, name=name, ax=ax_roc)
    base_rate = float(np.mean(curves[0][1]))
    ax_pr.axhline(base_rate, color="grey", ls="--", lw=1, label=f"base rate {base_rate:.2f}")
    ax_roc.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax_pr.set_title("Precision-recall (positive = CONFIRMED)")
    ax_roc.set_title("ROC")
    for ax in (ax_pr, ax_roc):
        ax.legend(fontsize=7, loc="lower left" if ax is ax_pr else "lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def thresholded_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: np.ndarray | float) -> dict[str, float]:
    """Accuracy and F1 when each prediction has its own threshold.

    Pooled out-of-fold predictions come from several folds, each with the
    threshold chosen on its own training folds; ``threshold`` is then an array
    ``(N,)`` aligned with ``prob`` (a float applies to all). Returns
    ``{"accuracy", "f1"}``; positive = CONFIRMED, ``prob >= threshold``.
    """
    y_true = np.asarray(y_true).astype(int)
    pred = (np.asarray(prob, dtype=float) >= np.asarray(threshold, dtype=float)).astype(int)
    return {"accuracy": float(accuracy_score(y_true, pred)),
            "f1": float(f1_score(y_true, pred, zero_division=0))}


def _clf_counts(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives (float64) at each distinct score, highest score first.

    The arithmetic of scikit-learn 1.9's ``_sort_inputs_and_compute_classification_thresholds`` and
    ``confusion_matrix_at_thresholds`` (no sample weights), without its input validation. The
    counts are exact integers, so the order of tied scores changes nothing.
    """
    order = np.argsort(-prob, kind="stable")
    score, y = prob[order], y_true[order]
    idx = np.concatenate([np.nonzero(np.diff(score))[0], [y.size - 1]])
    tps = np.cumsum(y.astype(np.float64), dtype=np.float64)[idx]
    fps = 1 + idx.astype(np.float64) - tps
    return tps, fps


def exact_average_precision(y_true: np.ndarray, prob: np.ndarray) -> float:
    """``sklearn.metrics.average_precision_score(y_true, prob)``, bit for bit, without its validation.

    For the bootstrap's thousands of calls on inputs already checked: ``y_true`` int array ``(N,)``
    of 0/1 holding both classes, ``prob`` finite float64 ``(N,)``. Same operations in the same order
    as scikit-learn 1.9's ``precision_recall_curve`` and ``_binary_uninterpolated_average_precision``
    (``tests/test_metrics.py`` checks equality on random inputs with ties).
    """
    tps, fps = _clf_counts(y_true, prob)
    ps = tps + fps
    precision = np.where(ps != 0, np.divide(tps, ps), 0.0)
    recall = tps / tps[-1]
    precision = np.concatenate((np.flip(precision), [1.0]))
    recall = np.concatenate((np.flip(recall), [0.0]))
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def exact_roc_auc(y_true: np.ndarray, prob: np.ndarray) -> float:
    """``sklearn.metrics.roc_auc_score(y_true, prob)``, bit for bit, without its validation.

    Inputs as :func:`exact_average_precision`. scikit-learn 1.9's ``roc_curve`` (``drop_intermediate``)
    then ``auc`` (trapezoids, ``scipy.integrate.trapezoid``; the false positive rate rises, so
    ``auc``'s direction is +1).
    """
    from scipy.integrate import trapezoid  # what scikit-learn's auc integrates with

    tps, fps = _clf_counts(y_true, prob)
    if fps.shape[0] > 2:
        keep = np.where(np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]]))[0]
        fps, tps = fps[keep], tps[keep]
    tps = np.concatenate([[0.0], tps])
    fps = np.concatenate([[0.0], fps])
    fpr, tpr = fps / fps[-1], tps / tps[-1]
    return float(trapezoid(tpr, fpr))


#: scikit-learn scores the bootstrap replaces by their exact, unvalidated twins (same floats, ~20x faster).
EXACT_TWINS = {average_precision_score: exact_average_precision, roc_auc_score: exact_roc_auc}


def bootstrap_pr_auc(
    y_true: np.ndarray, prob: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
    score=average_precision_score,
) -> tuple[float, float]:
    """Percentile bootstrap interval of PR-AUC (average precision), resampling targets.

    Parameters
    ----------
    y_true : int array ``(N,)``, one entry per target (0/1).
    prob : float array ``(R, N)`` or ``(N,)``: out-of-fold probabilities of
        each target in each of ``R`` cv repeats (columns aligned with ``y_true``).
    n_boot : int
        Bootstrap resamples; each draws ``N`` targets with replacement (the
        same draw for every repeat) and scores the mean AP over repeats.
        Draws with a single class are redrawn.
    seed : int
        Seeds ``numpy.random.default_rng``.
    level : float
        Coverage; the interval is the ``(1-level)/2`` and ``(1+level)/2``
        percentiles (Efron & Tibshirani 1993, "An Introduction to the
        Bootstrap", ch. 13).
    score : callable
        ``score(y, p) -> float``; scikit-learn's ``average_precision_score``
        unless the caller has an equal, faster one (``bench/feature_study.py``). scikit-learn's
        ``average_precision_score`` and ``roc_auc_score`` are computed by their exact twins
        (:data:`EXACT_TWINS`: the same floats without the per-call input validation that took
        ~40 s of every cv).

    Returns
    -------
    (low, high) : floats in [0, 1].
    """
    y_true = np.asarray(y_true).astype(int)
    prob = np.atleast_2d(np.asarray(prob, dtype=float))
    if prob.shape[1] != len(y_true):
        raise ValueError(f"{len(y_true)} labels but probabilities of shape {prob.shape}")
    if np.isin(y_true, (0, 1)).all() and np.isfinite(prob).all():  # else scikit-learn's own checks speak
        score = EXACT_TWINS.get(score, score)
    rng = np.random.default_rng(seed)
    scores = []
    while len(scores) < n_boot:
        idx = rng.integers(0, len(y_true), len(y_true))
        if y_true[idx].min() == y_true[idx].max():
            continue
        scores.append(np.mean([score(y_true[idx], p[idx]) for p in prob]))
    low, high = np.percentile(scores, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def reliability_figure(curves: list[tuple[str, np.ndarray, np.ndarray]], n_bins: int = 5,
                       title: str = "") -> plt.Figure:
    """Reliability diagram (scikit-learn ``CalibrationDisplay``), one line per ``(name, y_true, prob)``.

    Bins are quantiles of the predicted probability (``strategy="quantile"``)
    so that each of the ``n_bins`` holds about the same number of targets; the
    legend gives each curve's Brier score.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, y_true, prob in curves:
        brier = brier_score_loss(np.asarray(y_true).astype(int), prob)
        CalibrationDisplay.from_predictions(y_true, prob, n_bins=n_bins, strategy="quantile",
                                            name=f"{name} (Brier {brier:.3f})", ax=ax)
    ax.set_xlabel("mean predicted probability of CONFIRMED")
    ax.set_ylabel("fraction CONFIRMED")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title or "Reliability (out-of-fold)")
    fig.tight_layout()
    return fig
