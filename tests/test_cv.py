"""evaluation/cv.py: grouped folds (no star on both sides), the honest protocol, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from pixel_cnn.branches.pixel import PixelBranch, extra_training_targets
from pixel_cnn.evaluation.cv import (
    FOLD_THRESHOLD,
    CVError,
    make_folds,
    run_cv,
)
from pixel_cnn.vetter import networks as models
from pixel_cnn.vetter.networks import get_preset


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


def test_run_cv_oof_covers_every_target_once_per_repeat(real_dataset):
    result = run_cv(real_dataset, [PixelBranch(get_preset("seed", epochs=1))], n_folds=3, seed=0, repeats=2)
    oof = result.oof
    assert len(oof) == 2 * 97
    for _, g in oof.groupby("repeat"):
        assert sorted(g["kepid"]) == sorted(real_dataset.kepids)
    s = result.summary
    assert {"pr_auc_mean", "pr_auc_std", "pr_auc_oof", "pr_auc_oof_std", "roc_auc_oof", "brier_oof", "threshold"} <= set(s)
    assert 0 <= s["threshold"] <= 1 and len(result.ensemble_folds()) == 3


def test_folds_keep_both_classes_in_proportion_for_many_seeds(real_dataset):
    kepids, labels = real_dataset.kepids, real_dataset.labels
    n_pos, k = labels.sum(), 5
    for seed in range(50):
        folds = make_folds(kepids, labels, k, seed)
        assert sorted(np.concatenate([v for _, v in folds])) == list(range(len(labels)))
        for train_idx, val_idx in folds:
            # stratified: each validation fold holds floor or ceil of n_pos / k positives
            assert np.floor(n_pos / k) <= labels[val_idx].sum() <= np.ceil(n_pos / k), seed
            assert abs(labels[val_idx].mean() - labels.mean()) < 0.05, seed


def test_grouped_folds_keep_proportion_with_multi_koi_stars():
    rng = np.random.default_rng(0)
    kepids = np.repeat(np.arange(60), rng.integers(1, 4, 60))   # 1-3 KOIs per star
    star_label = rng.random(60) < 0.4
    labels = star_label[kepids].astype(int)
    for seed in range(30):
        for train_idx, val_idx in make_folds(kepids, labels, 5, seed):
            assert not set(kepids[train_idx]) & set(kepids[val_idx])
            assert 0 < labels[val_idx].mean() < 1
            assert abs(labels[val_idx].mean() - labels.mean()) < 0.2, seed


def test_threshold_fixed_without_inner_folds(real_dataset):
    result = run_cv(real_dataset, [PixelBranch(models.PHASE.replace(epochs=1))], n_folds=2, inner_folds=0)
    assert [f.threshold for f in result.folds] == [FOLD_THRESHOLD, FOLD_THRESHOLD]


def test_cv_refuses_inner_folds_of_one(real_dataset):
    with pytest.raises(CVError, match="inner_folds=1"):
        run_cv(real_dataset, [PixelBranch(models.PHASE)], n_folds=2, inner_folds=1)


def test_cv_refuses_inner_split_too_small_before_training(real_dataset):
    with pytest.raises(CVError, match="inner split"):
        run_cv(real_dataset, [PixelBranch(models.PHASE)], n_folds=5, inner_folds=60)


def test_short_phase_cv_is_deterministic_and_honest(real_dataset):
    preset = models.PHASE.replace(epochs=2)
    a = run_cv(real_dataset, [PixelBranch(preset)], n_folds=2, seed=7, inner_folds=2)
    b = run_cv(real_dataset, [PixelBranch(preset)], n_folds=2, seed=7, inner_folds=2)
    assert a.summary == b.summary
    assert set(a.oof["kepid"]) == set(real_dataset.kepids) and len(a.oof) == 97
    s = a.summary
    assert 0 <= s["pr_auc_oof_ci_low"] <= s["pr_auc_oof"] + 0.05 and s["pr_auc_oof_ci_high"] <= 1
    # the thresholds came from the training side: one per fold, the ensemble's is their mean
    assert s["threshold"] == pytest.approx(np.mean([f.threshold for f in a.folds]))
    for f in a.folds:
        assert 0 <= f.threshold <= 1 and f.val_inputs.shape == (len(f.val_idx), 10, 16, 16)


def test_extra_train_targets_only_train_and_keep_folds(real_dataset):
    from pixel_cnn.evaluation.quality import fold_digest
    from pixel_cnn.io.dataset import prepare_dataset

    koi = prepare_dataset(None, "koi")
    extra = extra_training_targets(real_dataset, koi)
    assert len(extra.labels) == 16 and not set(extra.kepids) & set(real_dataset.kepids)
    assert extra_training_targets(real_dataset, real_dataset) is None

    class Sizes:
        def __init__(self):
            self.seen = []

        def fold_start(self, r, k, info):
            self.seen.append(info)

        def epoch_end(self, *a): ...
        def fold_end(self, *a): ...

    preset = models.PHASE.replace(epochs=1)
    sizes = Sizes()
    with_extra = run_cv(real_dataset, [PixelBranch(preset, extra_train=koi)], n_folds=2, seed=5, inner_folds=2,
                        callbacks=sizes)
    without = run_cv(real_dataset, [PixelBranch(preset)], n_folds=2, seed=5, inner_folds=0)
    assert fold_digest(with_extra) == fold_digest(without)
    assert len(with_extra.oof) == 97 and set(with_extra.oof["kepid"]) == set(real_dataset.kepids)
    assert [i["n_extra_train"] for i in sizes.seen] == [16, 16]
    assert not np.allclose(with_extra.oof["probability"], without.oof["probability"])


def test_same_seed_same_oof_and_another_seed_differs(real_dataset):
    preset = get_preset("seed", epochs=1)
    a = run_cv(real_dataset, [PixelBranch(preset)], n_folds=2, seed=11).oof
    b = run_cv(real_dataset, [PixelBranch(preset)], n_folds=2, seed=11).oof
    c = run_cv(real_dataset, [PixelBranch(preset)], n_folds=2, seed=12).oof
    assert a[["kepid", "fold"]].equals(b[["kepid", "fold"]])
    np.testing.assert_array_equal(a["probability"].to_numpy(), b["probability"].to_numpy())
    assert not np.allclose(a["probability"].to_numpy(), c["probability"].to_numpy(), atol=1e-6)
