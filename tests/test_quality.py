"""Issue 3: phase-aware representation, the phase preset, the honest cv protocol, attributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pixel_cnn.core import models
from pixel_cnn.core.cv import FOLD_THRESHOLD, CVError, inner_threshold, make_folds, run_cv
from pixel_cnn.core.metrics import bootstrap_pr_auc, thresholded_metrics
from pixel_cnn.core.representation import (
    PHASE_IMAGE_CHANNELS,
    PHASE_SCALARS,
    REPRESENTATION_CHANNELS,
    build_inputs,
    median_image,
    phase_image,
    phase_maps,
)
from pixel_cnn.core.stack import oot_sigma, validate_stack

PROJECT = Path(__file__).resolve().parents[1]
SCALAR = {name: i for i, name in enumerate(PHASE_SCALARS)}


def noisy_stack(h=5, w=6, sigma=1e-3, seed=0):
    return np.random.default_rng(seed).normal(0, sigma, (32, h, w)).astype(np.float32)


# ---------------------------------------------------------------- representation


def test_injected_transit_is_deepest_at_its_pixel_and_offsets_are_hand_checked():
    s = noisy_stack(5, 7)
    s[[0, 31], 1, 5] -= 0.02  # 20-sigma dip in one pixel, in the transit bins only
    maps, scalars = phase_maps(validate_stack(s))
    assert np.unravel_index(np.argmin(maps[0]), maps[0].shape) == (1, 5)
    sigma = oot_sigma(s)[1, 5]
    expected = np.arcsinh(s[[0, 31], 1, 5].astype(np.float64).mean() / sigma)
    assert scalars[SCALAR["transit_snr_min"]] == pytest.approx(expected, rel=1e-5)
    assert expected < -np.arcsinh(10)  # the dip is far beyond the noise
    # centre of a 5x7 stamp is (2, 3); half diagonal 0.5 * hypot(4, 6)
    assert scalars[SCALAR["offset_centre"]] == pytest.approx(np.hypot(1, 2) / (0.5 * np.hypot(4, 6)), rel=1e-5)
    assert scalars[SCALAR["transit_depth"]] == pytest.approx(
        np.arcsinh(s[[0, 31], 1, 5].mean() / 1e-3), rel=1e-4)
    # no secondary: the ratio is small next to a 2-to-1 eclipse
    assert abs(scalars[SCALAR["secondary_to_transit"]]) < 0.5


def test_secondary_eclipse_and_shoulders_land_in_their_channels():
    s = noisy_stack(4, 4, seed=1)
    s[[0, 31], 2, 2] -= 0.03
    s[[15, 16], 2, 2] -= 0.015   # secondary half as deep
    s[[1, 30], 2, 2] -= 0.01     # a wide eclipse dims the shoulders
    maps, scalars = phase_maps(validate_stack(s))
    for channel in (0, 1, 2):
        assert np.unravel_index(np.argmin(maps[channel]), (4, 4)) == (2, 2), PHASE_IMAGE_CHANNELS[channel]
    # arcsinh(15 sigma) / arcsinh(30 sigma) is about 0.8: a strong secondary
    assert scalars[SCALAR["secondary_to_transit"]] < -0.6


def test_brightness_proxy_marks_the_quietest_pixel_and_offset_from_it():
    s = noisy_stack(5, 5, sigma=1e-2, seed=2)
    s[:, 3, 1] *= 0.05               # photon noise ~ flux^-1/2: the star is where scatter is least
    s[[0, 31], 0, 4] -= 0.5          # the dip sits on another pixel (background binary)
    maps, scalars = phase_maps(validate_stack(s))
    assert np.unravel_index(np.argmax(maps[3]), (5, 5)) == (3, 1)
    assert scalars[SCALAR["offset_brightest"]] == pytest.approx(np.hypot(3, 3) / (0.5 * np.hypot(4, 4)), rel=1e-5)


def test_nan_and_zero_pixels_read_as_no_signal():
    s = noisy_stack(4, 5, seed=3)
    s[:, 0, 0] = np.nan                  # a pixel NaN in every bin (becomes 0)
    s[:, 3, 4] = 0.0                     # a pixel zero in every bin
    s[[0, 31], 2, 2] -= 0.01
    maps, scalars = phase_maps(validate_stack(s))
    assert np.isfinite(maps).all() and np.isfinite(scalars).all()
    assert maps[0, 0, 0] == 0 and maps[1, 3, 4] == 0 and maps[2, 0, 0] == 0
    assert maps[3, 0, 0] == maps[3].min()  # dead pixel = faintest
    assert np.unravel_index(np.argmin(maps[0]), (4, 5)) == (2, 2)


def test_faint_edge_pixel_with_huge_fractional_values_does_not_dominate():
    s = noisy_stack(4, 4, seed=4)
    s[:, 0, 3] = np.random.default_rng(9).normal(0, 5.0, 32)  # faint pixel: fractional swings of 5
    s[[0, 31], 2, 1] -= 0.02
    maps, _ = phase_maps(validate_stack(s))
    assert np.unravel_index(np.argmin(maps[0]), (4, 4)) == (2, 1)
    assert np.abs(maps[:3]).max() < 10  # arcsinh keeps everything in a few units


def test_every_stamp_size_3_to_24_gives_finite_fixed_shape_inputs():
    size = models.PHASE.image_size
    for h in range(3, 25):
        for w in range(3, 25):
            s = noisy_stack(h, w, seed=h * 31 + w)
            s[[0, 31], h // 2, w // 2] -= 0.01
            out = phase_image(validate_stack(s), size)
            assert out.shape == (REPRESENTATION_CHANNELS["phase"], size, size), (h, w)
            assert out.dtype == np.float32 and np.isfinite(out).all(), (h, w)
            # the scalar planes are constant
            assert np.ptp(out[len(PHASE_IMAGE_CHANNELS):], axis=(1, 2)).max() == 0


def test_phase_keeps_depth_where_median_standardizes_it_away():
    shallow, deep = noisy_stack(seed=5), noisy_stack(seed=5)
    shallow[[0, 31], 2, 2] -= 0.005
    deep[[0, 31], 2, 2] -= 0.5
    a, b = phase_maps(shallow)[1], phase_maps(deep)[1]
    assert b[SCALAR["transit_snr_min"]] < a[SCALAR["transit_snr_min"]] - 3
    assert b[SCALAR["transit_depth"]] < a[SCALAR["transit_depth"]]
    # the whole stack 10x deeper: the seed input cannot tell, the phase depth scalar can
    np.testing.assert_allclose(median_image(10 * shallow), median_image(shallow), atol=1e-5)
    ten = phase_maps(10 * shallow)[1]
    assert ten[SCALAR["transit_snr_min"]] == pytest.approx(a[SCALAR["transit_snr_min"]], rel=1e-4)
    assert ten[SCALAR["transit_depth"]] < a[SCALAR["transit_depth"]] - 1


def test_real_stacks_give_finite_phase_inputs(real_dataset):
    x = build_inputs(real_dataset.stack_list(), "phase", models.PHASE.image_size)
    assert x.shape == (97, 10, 16, 16) and np.isfinite(x).all()


# ---------------------------------------------------------------- presets


def test_default_is_phase2():
    assert models.DEFAULT_PRESET == "phase2" and models.get_preset(models.DEFAULT_PRESET) == models.PHASE2


def test_phase_preset_shape_and_param_count_unchanged():
    preset = models.get_preset("phase")
    assert preset.name == "phase" and preset.arch == "phase" and preset.n_scalars == 6
    net = models.build_model(preset)
    assert isinstance(net, models.PhaseCNN)
    assert models.count_parameters(net) == 16_957
    net.eval()
    out = net(torch.zeros(3, preset.in_channels, preset.image_size, preset.image_size))
    assert out.shape == (3,)


def test_seed_preset_unchanged():
    seed = models.get_preset("seed")
    assert (seed.representation, seed.image_size, seed.channels, seed.hidden, seed.dropout, seed.lr,
            seed.weight_decay, seed.epochs, seed.batch_size, seed.jitter, seed.noise_sigma) == \
        ("median", 24, (16, 32, 64), 32, 0.3, 3e-4, 5e-4, 40, 32, 1, 0.01)
    assert isinstance(models.build_model(seed), models.PixelCNN)
    assert models.count_parameters(models.build_model(seed)) == 25_633


def test_old_model_configs_without_arch_load_as_pixel():
    d = models.SEED.to_dict()
    d.pop("arch")
    assert models.Preset.from_dict(d).arch == "pixel"


def test_unknown_arch_refused():
    with pytest.raises(ValueError, match="arch"):
        models.PHASE.replace(arch="transformer")


def test_mlproject_defaults_and_every_parameter_used():
    import yaml

    project = yaml.safe_load((PROJECT / "MLproject").read_text())
    entry_points = project["entry_points"]
    assert entry_points["cv"]["parameters"]["preset"]["default"] == models.CV_DEFAULT_PRESET
    assert entry_points["bench_quality"]["parameters"]["presets"]["default"] == "seed,phase,phase2,tabular,fusion"
    for name, entry in entry_points.items():
        for param in entry.get("parameters", {}):
            assert "{" + param + "}" in entry["command"], f"{name}: {param} unused"


# ---------------------------------------------------------------- folds and protocol


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


def test_inner_threshold_fixed_without_inner_folds_and_checked():
    x = np.zeros((10, 10, 16, 16), np.float32)
    labels = np.array([0, 1] * 5)
    assert inner_threshold(x, labels, np.arange(10), models.PHASE, 0, 0) == FOLD_THRESHOLD


def test_cv_refuses_inner_folds_of_one(real_dataset):
    with pytest.raises(CVError, match="inner_folds=1"):
        run_cv(real_dataset, models.PHASE, n_folds=2, inner_folds=1)


def test_cv_refuses_inner_split_too_small_before_training(real_dataset):
    with pytest.raises(CVError, match="inner split"):
        run_cv(real_dataset, models.PHASE, n_folds=5, inner_folds=60)


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


def test_short_phase_cv_is_deterministic_and_honest(real_dataset):
    preset = models.PHASE.replace(epochs=2)
    a = run_cv(real_dataset, preset, n_folds=2, seed=7, inner_folds=2)
    b = run_cv(real_dataset, preset, n_folds=2, seed=7, inner_folds=2)
    assert a.summary == b.summary
    assert set(a.oof["kepid"]) == set(real_dataset.kepids) and len(a.oof) == 97
    s = a.summary
    assert 0 <= s["pr_auc_oof_ci_low"] <= s["pr_auc_oof"] + 0.05 and s["pr_auc_oof_ci_high"] <= 1
    # the thresholds came from the training side: one per fold, the ensemble's is their mean
    assert s["threshold"] == pytest.approx(np.mean([f.threshold for f in a.folds]))
    for f in a.folds:
        assert 0 <= f.threshold <= 1 and f.val_inputs.shape == (len(f.val_idx), 10, 16, 16)


# ---------------------------------------------------------------- attributions


def test_integrated_gradients_completeness():
    from pixel_cnn.core.explain import attribution_figure, integrated_gradients

    torch.manual_seed(0)
    preset = models.PHASE
    net = models.build_model(preset).eval()
    x = np.random.default_rng(0).normal(size=(3, 10, 16, 16)).astype(np.float32)
    attr = integrated_gradients(preset, net.state_dict(), x, n_steps=64)
    assert attr.shape == x.shape
    with torch.no_grad():
        gap = (net(torch.from_numpy(x)) - net(torch.zeros_like(torch.from_numpy(x)))).numpy()
    np.testing.assert_allclose(attr.reshape(3, -1).sum(1), gap, atol=0.05 * np.abs(gap).max() + 1e-3)
    fig = attribution_figure(x, attr, np.array([1, 2, 3]), np.array([1, 0, 1]), np.array([0.9, 0.1, 0.5]), 4)
    (ax,) = fig.axes  # one mosaic image: an input tile and an attribution tile per target
    mosaic = ax.get_images()[0].get_array()
    assert mosaic.shape[-1] == 3 and mosaic.shape[1] > 4 * 16 and mosaic.min() >= 0 and mosaic.max() <= 1
    captions = [t.get_text() for t in ax.texts]
    assert len(captions) == 6 and "1 CONF" in captions and "2 FP" in captions
    assert any(c.startswith("p=0.90 IG") for c in captions)


# ---------------------------------------------------------------- tracked cv and bench on real data


@pytest.mark.slow
def test_phase_cv_tracked_logs_protocol_artifacts(tracking_store, prepared_dir):
    from mlflow.tracking import MlflowClient

    from pixel_cnn import jobs

    result, info = jobs.cv(str(prepared_dir), "phase", {"epochs": 3}, n_folds=2, seed=3, inner_folds=2)
    client = MlflowClient()
    parent = client.get_run(info["run_id"])
    for key in ("pr_auc_oof", "pr_auc_oof_ci_low", "pr_auc_oof_ci_high", "brier_oof", "f1_oof", "threshold",
                "val_positive_rate_r0_f0", "val_positive_rate_r0_f1"):
        assert np.isfinite(parent.data.metrics[key]), key
    assert parent.data.metrics["pr_auc_oof"] == pytest.approx(result.summary["pr_auc_oof"])
    figures = {a.path for a in client.list_artifacts(info["run_id"], "figures")}
    assert "figures/reliability.png" in figures
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{info['run_id']}'")
    assert len(children) == 2
    for child in children:
        paths = {a.path for a in client.list_artifacts(child.info.run_id, "figures")}
        assert "figures/attributions.png" in paths
        assert 0 <= child.data.metrics["threshold"] <= 1


@pytest.mark.slow
def test_bench_quality_same_folds_table_and_json(tracking_store, prepared_dir, monkeypatch):
    import json

    from pixel_cnn import jobs

    for name in ("seed", "phase"):
        monkeypatch.setitem(models.PRESETS, name, models.PRESETS[name].replace(epochs=2))
    out = tracking_store / "quality.json"
    bench, table = jobs.bench_quality(str(prepared_dir), ("seed", "phase"), n_folds=2, repeats=2,
                                      inner_folds=2, out=str(out))
    saved = json.loads(out.read_text())
    assert saved["fold_digest"] == bench["fold_digest"] and list(saved["presets"]) == ["seed", "phase"]
    for name, entry in saved["presets"].items():
        assert len(entry["pr_auc"]["per_repeat"]) == 2
        assert entry["pr_auc"]["mean"] == pytest.approx(np.mean(entry["pr_auc"]["per_repeat"]))
        assert f"| {name} | {entry['pr_auc']['mean']:.3f}" in table


def test_merge_benches_requires_same_folds():
    from pixel_cnn.core.quality import merge_benches

    base = {"protocol": {"seed": 42}, "dataset_digest": "d", "fold_digest": "f", "n_targets": 97}
    a = {**base, "presets": {"seed": {"x": 1}}, "run_id": "r1"}
    b = {**base, "presets": {"phase": {"x": 2}}, "run_id": "r2"}
    merged = merge_benches([a, b])
    assert list(merged["presets"]) == ["seed", "phase"] and merged["run_ids"] == ["r1", "r2"]
    with pytest.raises(ValueError, match="fold_digest"):
        merge_benches([a, {**b, "fold_digest": "other"}])


def test_regression_experiment_id_does_not_leak_between_stores(tmp_path, monkeypatch):
    """Two jobs in one process, two stores: the second must not reuse the first's experiment id."""
    import mlflow

    from pixel_cnn.tracking import runs as tracking

    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # ./mlruns of these stores lands here, not in the checkout
    ids = []
    for name in ("a", "b"):
        uri = f"sqlite:///{tmp_path / name}.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.create_experiment(f"other-{name}") if name == "b" else None  # shift ids in store b
        with tracking.job_run("pixel-cnn-test", "job") as run_id:
            ids.append(mlflow.get_run(run_id).info.experiment_id)
        assert mlflow.get_experiment(ids[-1]).name == "pixel-cnn-test"
    mlflow.set_tracking_uri(None)
    assert ids[0] != ids[1]


# ---------------------------------------------------------------- phase2: vetting statistics, hybrid net


def star_stack(h=7, w=7, star=(3, 3), seed=0, sigma_bg=1e-3):
    """Noise whose fractional scatter falls as flux**-0.5 around a star (a Gaussian PSF).

    Returns the stack and the relative flux per pixel (the truth the flux proxy should recover).
    """
    rows, cols = np.mgrid[0:h, 0:w]
    flux = 0.02 + np.exp(-((rows - star[0]) ** 2 + (cols - star[1]) ** 2) / (2 * 0.8 ** 2))
    sigma = sigma_bg * np.sqrt(0.02 / flux)
    s = np.random.default_rng(seed).normal(0, 1, (32, h, w)) * sigma
    return s.astype(np.float32), flux


def vet(stack):
    from pixel_cnn.core.vetting import VETTING_FEATURES, vetting_features

    values = vetting_features(validate_stack(stack))
    assert values.shape == (len(VETTING_FEATURES),) and values.dtype == np.float32
    assert np.isfinite(values).all()
    return dict(zip(VETTING_FEATURES, values.tolist()))


def test_vetting_on_target_transit_hand_checked():
    s, flux = star_stack()
    s[[0, 31]] -= 0.002                      # 2000 ppm on every pixel: the star dims as a whole
    v = vet(s)
    assert v["ap_depth"] == pytest.approx(np.arcsinh(2.0), abs=0.05)       # aperture depth ~ 2000 ppm
    assert v["depth_brightest"] == pytest.approx(np.arcsinh(2.0), abs=0.1)
    assert v["ap_snr"] > np.arcsinh(10)
    assert v["centroid_offset"] < 0.2 and v["frac_in_aperture"] > 0.8
    assert abs(v["ap_sec_ratio"]) < 0.2 and abs(v["ap_shoulder_ratio"]) < 0.2


def test_vetting_background_binary_is_offset_and_outside_the_aperture():
    s, _ = star_stack(star=(2, 2))
    s[[0, 31], 6, 6] -= 0.3                  # a faint corner pixel dims by 30 %
    v = vet(s)
    assert v["centroid_offset"] > 3          # about hypot(4, 4) = 5.7 pixels
    assert v["centroid_offset_sigma"] > np.arcsinh(5)
    assert v["frac_in_3x3"] < 0.2 and v["frac_in_aperture"] < 0.2


def test_vetting_secondary_shoulders_and_variability():
    s, _ = star_stack(seed=1)
    s[[0, 31]] -= 0.004
    s[[15, 16]] -= 0.002                     # secondary half as deep
    s[[1, 30]] -= 0.002                      # shoulders dimmed: a wide eclipse
    v = vet(s)
    assert v["ap_sec_ratio"] == pytest.approx(0.5, abs=0.1)
    assert v["ap_shoulder_ratio"] == pytest.approx(0.5, abs=0.1)
    quiet = vet(star_stack(seed=2)[0])["ap_oot_var"]
    wavy, _ = star_stack(seed=2)
    wavy += (1e-3 * np.cos(4 * np.pi * (np.arange(32) + 0.5) / 32))[:, None, None].astype(np.float32)
    assert vet(wavy)["ap_oot_var"] > quiet + 0.3  # ellipsoidal-like variation: scatter >> point-to-point
    bright, _ = star_stack(seed=3)
    bright[[7, 8]] += 0.01
    assert vet(bright)["ap_brightening"] > np.arcsinh(10)


def test_vetting_without_signal_has_no_centroid_and_full_fractions():
    v = vet(star_stack(seed=4)[0])
    assert v["centroid_offset"] == 0 and v["centroid_offset_sigma"] == 0
    assert abs(v["ap_snr"]) < np.arcsinh(5)


def test_phase2_every_stamp_size_with_nan_and_zero_pixels():
    from pixel_cnn.core.representation import PHASE2_SCALARS, phase2_image
    from pixel_cnn.core.vetting import VETTING_FEATURES

    assert PHASE2_SCALARS == PHASE_SCALARS + VETTING_FEATURES
    size = models.PHASE2.image_size
    for h in range(3, 25):
        for w in range(3, 25):
            s = noisy_stack(h, w, seed=h * 29 + w)
            s[[0, 31], h // 2, w // 2] -= 0.01
            s[:, 0, 0] = np.nan
            s[:, h - 1, w - 1] = 0.0
            clean = validate_stack(s)
            out = phase2_image(clean, size)
            assert out.shape == (REPRESENTATION_CHANNELS["phase2"], size, size) == (24, size, size), (h, w)
            assert out.dtype == np.float32 and np.isfinite(out).all(), (h, w)
            np.testing.assert_array_equal(out[:10], phase_image(clean, size))  # phase part unchanged
            assert np.ptp(out[len(PHASE_IMAGE_CHANNELS):], axis=(1, 2)).max() == 0


def test_real_stacks_give_finite_phase2_inputs_and_keep_phase(real_dataset):
    x2 = build_inputs(real_dataset.stack_list(), "phase2", 16)
    x1 = build_inputs(real_dataset.stack_list(), "phase", 16)
    assert x2.shape == (97, 24, 16, 16) and np.isfinite(x2).all()
    np.testing.assert_array_equal(x2[:, :10], x1)


def test_phase2_preset_hybrid_net_falls_back_on_the_linear_scalar_path():
    preset = models.get_preset("phase2")
    assert (preset.representation, preset.arch, preset.n_scalars) == ("phase2", "hybrid", 20)
    net = models.build_model(preset)
    assert isinstance(net, models.HybridCNN) and models.count_parameters(net) == 17_454
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.zero_()
    net.eval()
    x = torch.randn(4, 24, 16, 16)
    scalars = net.scalar_norm(x[:, 4:].mean((2, 3)))
    torch.testing.assert_close(net(x), net.wide(scalars).squeeze(-1))
    # the phase preset and its network are untouched by phase2
    assert models.count_parameters(models.build_model(models.PHASE)) == 16_957


def test_extra_train_targets_only_train_and_keep_folds(real_dataset):
    from pixel_cnn.core.quality import fold_digest
    from pixel_cnn.core.cv import extra_training_targets
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
    with_extra = run_cv(real_dataset, preset, n_folds=2, seed=5, inner_folds=2, extra_train=koi, callbacks=sizes)
    without = run_cv(real_dataset, preset, n_folds=2, seed=5, inner_folds=0)
    assert fold_digest(with_extra) == fold_digest(without)
    assert len(with_extra.oof) == 97 and set(with_extra.oof["kepid"]) == set(real_dataset.kepids)
    assert [i["n_extra_train"] for i in sizes.seen] == [16, 16]
    assert not np.allclose(with_extra.oof["probability"], without.oof["probability"])


def test_linear_arch_reads_only_the_scalars_and_needs_them():
    preset = models.get_preset("phase2", arch="linear")
    net = models.build_model(preset).eval()
    assert isinstance(net, models.ScalarLogit) and models.count_parameters(net) == 61
    x = torch.randn(3, 24, 16, 16)
    y = x.clone()
    y[:, :4] = torch.randn(3, 4, 16, 16)          # other maps, same scalars
    torch.testing.assert_close(net(x), net(y))
    assert net(x).shape == (3,)
    with pytest.raises(ValueError, match="needs a representation with scalars"):
        models.build_model(models.SEED.replace(arch="linear"))
