import numpy as np
import pytest
import torch

from pixel_cnn.core.cv import CVError, make_folds, run_cv
from pixel_cnn.core.models import get_preset
from pixel_cnn.core.training import train_fold


def test_no_kepid_on_both_sides_with_multi_koi_stars():
    # 30 stars; stars 0..9 host two KOIs each (two rows with one kepid)
    kepids = np.array(list(range(30)) + list(range(10)))
    labels = np.array([i % 2 for i in range(30)] + [i % 2 for i in range(10)])
    for seed in range(5):
        folds = make_folds(kepids, labels, 5, seed)
        assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(40))
        for train_idx, val_idx in folds:
            assert not set(kepids[train_idx]) & set(kepids[val_idx])


def test_folds_refused_before_training():
    with pytest.raises(CVError, match="fewer than n_folds"):
        make_folds(np.arange(4), np.array([0, 1, 0, 1]), 5, 0)
    with pytest.raises(CVError, match="1 CONFIRMED target"):
        make_folds(np.arange(10), np.array([1] + [0] * 9), 5, 0)
    with pytest.raises(CVError, match="at least 2"):
        make_folds(np.arange(10), np.array([0, 1] * 5), 1, 0)


def test_real_folds_keep_both_classes_in_proportion(real_dataset):
    base = real_dataset.labels.mean()
    for seed in range(20):
        for _, val_idx in make_folds(real_dataset.kepids, real_dataset.labels, 5, seed):
            assert abs(real_dataset.labels[val_idx].mean() - base) < 0.15


def _tiny(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 24, 24)).astype(np.float32)
    y = np.array([0, 1] * (n // 2))
    x[y == 1, :, 10:14, 10:14] -= 2.0  # a learnable dip
    return x, y


def test_train_fold_deterministic_and_seed_sensitive():
    x, y = _tiny()
    preset = get_preset("seed", epochs=3)
    a = train_fold(x, y, preset, seed=1, x_val=x, y_val=y)
    b = train_fold(x, y, preset, seed=1, x_val=x, y_val=y)
    c = train_fold(x, y, preset, seed=2, x_val=x, y_val=y)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    np.testing.assert_array_equal(a.val_prob, b.val_prob)
    assert not np.array_equal(a.val_prob, c.val_prob)
    assert len(a.history["train_loss"]) == len(a.history["val_loss"]) == 3


def test_train_fold_refuses_one_class():
    x, y = _tiny()
    with pytest.raises(ValueError, match="one class"):
        train_fold(x, np.zeros_like(y), get_preset("seed", epochs=1), seed=0)


def test_run_cv_oof_covers_every_target_once_per_repeat(real_dataset):
    result = run_cv(real_dataset, get_preset("seed", epochs=1), n_folds=3, seed=0, repeats=2)
    oof = result.oof
    assert len(oof) == 2 * 97
    for _, g in oof.groupby("repeat"):
        assert sorted(g["kepid"]) == sorted(real_dataset.kepids)
    s = result.summary
    assert {"pr_auc_mean", "pr_auc_std", "pr_auc_oof", "pr_auc_oof_std", "roc_auc_oof", "brier_oof", "threshold"} <= set(s)
    assert 0 <= s["threshold"] <= 1 and len(result.ensemble_folds()) == 3
