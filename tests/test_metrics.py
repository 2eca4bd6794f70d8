"""core/metrics.py: scores, thresholds and the bootstrap interval, hand-checked."""

from __future__ import annotations

import numpy as np
import pytest

from pixel_cnn.evaluation.metrics import (
    binary_metrics,
    bootstrap_pr_auc,
    f1_optimal_threshold,
    thresholded_metrics,
)


def test_binary_metrics_hand_checked():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = binary_metrics(y, p, threshold=0.5)
    # ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = (1/1 + 2/3) / 2
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["roc_auc"] == pytest.approx(0.75)          # 3 of 4 pos/neg pairs ordered
    assert m["accuracy"] == pytest.approx(0.75)         # predicted 0,0,0,1
    assert m["f1"] == pytest.approx(2 / 3)              # P=1, R=0.5
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)


def test_f1_optimal_threshold_hand_checked():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # threshold 0.35 -> predicted {0.4, 0.35, 0.8}: P=2/3, R=1, F1=0.8 (best)
    assert f1_optimal_threshold(y, p) == pytest.approx(0.35)


def test_metrics_need_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics(np.ones(3), np.array([0.1, 0.2, 0.3]))


def test_bootstrap_interval_hand_checked_cases():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    assert bootstrap_pr_auc(y, y.astype(float), n_boot=50) == (1.0, 1.0)
    prob = np.linspace(0, 1, 8)
    low, high = bootstrap_pr_auc(y, np.stack([prob, prob[::-1]]), n_boot=100, seed=1)
    assert 0 < low < high <= 1
    assert bootstrap_pr_auc(y, prob, n_boot=100, seed=1) == bootstrap_pr_auc(y, prob, n_boot=100, seed=1)
    with pytest.raises(ValueError, match="labels"):
        bootstrap_pr_auc(y, prob[:5])


def test_thresholded_metrics_use_each_rows_threshold():
    y = np.array([1, 1, 0, 0])
    prob = np.array([0.6, 0.3, 0.5, 0.1])
    out = thresholded_metrics(y, prob, np.array([0.5, 0.2, 0.7, 0.2]))
    assert out == {"accuracy": 1.0, "f1": 1.0}
    assert thresholded_metrics(y, prob, 0.5)["accuracy"] == 0.5


def test_bootstrap_twins_give_scikit_learns_floats_bit_for_bit():
    """The bootstrap scores with exact numpy twins of average_precision_score / roc_auc_score (speed only):
    equal floats, ties included, and the same interval as with scikit-learn's own functions."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from pixel_cnn.evaluation.metrics import exact_average_precision, exact_roc_auc

    rng = np.random.default_rng(0)
    for trial in range(400):
        y = rng.integers(0, 2, int(rng.integers(3, 120)))
        y[:2] = (0, 1)
        p = rng.random(len(y))
        p = np.round(p, 1) if trial % 3 == 1 else np.where(p < 0.4, 0.5, p) if trial % 3 == 2 else p
        assert exact_average_precision(y, p) == average_precision_score(y, p)
        assert exact_roc_auc(y, p) == roc_auc_score(y, p)
    y = rng.integers(0, 2, 97)
    prob = np.round(rng.random((2, 97)), 2)
    for score in (average_precision_score, roc_auc_score):
        own = bootstrap_pr_auc(y, prob, n_boot=200, seed=3, score=lambda a, b: score(a, b))  # no twin
        assert bootstrap_pr_auc(y, prob, n_boot=200, seed=3, score=score) == own
