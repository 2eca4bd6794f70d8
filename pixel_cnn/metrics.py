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
