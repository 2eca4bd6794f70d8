"""Vetting statistics in physical units, the vetting sheet, cv's worst-call sheets, run names (issue 15)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from pixel_cnn.vetter.stack import KEPLER_PIXEL_SCALE_ARCSEC
from pixel_cnn.vetter.vetting import STATISTICS_COLUMNS, VETTING_FEATURES, vetting_features, vetting_statistics


def _uniform_dimming_stack(depth=1e-3, secondary=5e-4, size=(5, 6)):
    """Every pixel dims by the same fraction: in transit ``depth``, at phase 0.5 ``secondary``.

    Out-of-transit bins alternate +/- a per-pixel amplitude (noise ``sigma`` pattern, brightest in the middle);
    the in-transit and secondary bins hold exactly ``-depth`` / ``-secondary``.
    """
    h, w = size
    rows, cols = np.mgrid[0:h, 0:w]
    amp = 1e-4 * (1 + np.hypot(rows - 2, cols - 3))          # scatter grows away from pixel (2, 3)
    signs = np.where(np.arange(32) % 2 == 0, 1.0, -1.0)[:, None, None]
    stack = signs * amp[None]
    stack[[0, 31]] = -depth
    stack[[15, 16]] = -secondary
    return stack.astype(np.float32)


def test_statistics_of_a_hand_made_stack():
    stats = vetting_statistics(_uniform_dimming_stack())
    # a[b] = sum(w * stack[b]) with sum(w) = 1: the aperture sees exactly the per-pixel dimming
    assert stats.depth_ppm == pytest.approx(1000.0, rel=1e-5)
    assert stats.secondary_depth_ppm == pytest.approx(500.0, rel=1e-5)
    assert stats.secondary_ratio == pytest.approx(0.5, rel=1e-5)
    # the dimming flux w * d is proportional to the flux: its centroid is the flux centroid
    assert stats.centroid_offset_px == pytest.approx(0.0, abs=1e-6)
    assert stats.centroid_offset_arcsec == pytest.approx(0.0, abs=1e-5)
    assert stats.target_rc == pytest.approx((2.0, 3.0), abs=0.3)  # weights peak at the quietest pixel
    # share on target = share of the flux proxy inside the aperture
    sigma = stats.sigma_ppm / 1e6
    flux = sigma ** -2.0
    assert stats.frac_on_target == pytest.approx(flux[stats.aperture].sum() / flux.sum(), rel=1e-4)
    assert stats.centroid_cov.shape == (2, 2) and np.all(np.linalg.eigvalsh(stats.centroid_cov) > 0)
    assert list(stats.row()) == list(STATISTICS_COLUMNS)


def test_statistics_agree_with_the_model_features_on_every_real_stack(real_dataset):
    idx = {name: i for i, name in enumerate(VETTING_FEATURES)}
    for kepid, stack in real_dataset.stacks.items():
        f = vetting_features(stack)
        s = vetting_statistics(stack)
        assert f[idx["ap_depth"]] == pytest.approx(np.arcsinh(s.depth_ppm / 1000.0), abs=1e-5), kepid
        assert f[idx["ap_snr"]] == pytest.approx(np.arcsinh(s.snr), abs=1e-5), kepid
        assert f[idx["ap_secondary_snr"]] == pytest.approx(np.arcsinh(s.secondary_snr), abs=1e-5), kepid
        assert f[idx["ap_sec_ratio"]] == pytest.approx(np.clip(s.secondary_ratio, -1, 2), abs=1e-5), kepid
        if math.isnan(s.frac_on_target):  # the stamp does not dim by 3 sigma: no share (feature 0)
            assert s.snr <= 3 and f[idx["frac_in_aperture"]] == 0.0, kepid
        else:
            assert f[idx["frac_in_aperture"]] == pytest.approx(s.frac_on_target, abs=1e-6), kepid
        if s.centroid_rc is None:
            assert math.isnan(s.centroid_offset_px) and f[idx["centroid_offset"]] == 0.0
        else:
            assert f[idx["centroid_offset"]] == pytest.approx(s.centroid_offset_px, abs=1e-5), kepid
            assert f[idx["centroid_offset_sigma"]] == pytest.approx(np.arcsinh(s.centroid_offset_sigma), rel=1e-4)
            assert s.centroid_offset_arcsec == pytest.approx(s.centroid_offset_px * KEPLER_PIXEL_SCALE_ARCSEC)
        assert s.phase_curve_ppm.shape == (32,)


@pytest.fixture(scope="module")
def small_ensemble(real_dataset):
    """Two phase2 networks trained 2 epochs on the real benchmark targets (pure torch, no MLflow)."""
    from pixel_cnn.vetter.ensemble import Ensemble
    from pixel_cnn.vetter.networks import get_preset
    from pixel_cnn.vetter.representation import build_inputs
    from pixel_cnn.branches.pixel import train_fold

    preset = get_preset("phase2", epochs=2)
    x = build_inputs(real_dataset.stack_list(), preset.representation, preset.image_size)
    sds = [train_fold(x, real_dataset.labels, preset, seed=s).state_dict for s in (0, 1)]
    return Ensemble(preset, sds, 0.5), sds


def _png_pixels(fig):
    import matplotlib.image as mpimg

    from pixel_cnn.drawing.sheet import SHEET_DPI

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=SHEET_DPI)
    buf.seek(0)
    return mpimg.imread(buf, format="png"), buf.getbuffer().nbytes


@pytest.mark.parametrize("kepid", [3557341, 9967771])  # a benchmark FP (deep eclipse) and a planet
def test_sheet_of_a_real_stack(real_dataset, small_ensemble, kepid):
    import matplotlib.pyplot as plt

    from pixel_cnn.drawing.explain import ensemble_attributions
    from pixel_cnn.vetter.representation import build_inputs
    from pixel_cnn.drawing.sheet import SHEET_DPI, SHEET_SIZE_IN, format_statistic, sheet_figure, table_cells

    ens, sds = small_ensemble
    stack = real_dataset.stacks[kepid]
    pred = ens.predict_stacks([stack]).iloc[0].to_dict()
    x = build_inputs([stack], ens.preset.representation, ens.preset.image_size)
    attr = ensemble_attributions(ens.preset, sds, x)[0]
    n_maps = ens.preset.in_channels - ens.preset.n_scalars
    fig = sheet_figure(stack, kepid, pred, attr[:n_maps].sum(0), "test", source=f"pixdiff_{kepid}.npy")
    try:
        pixels, n_bytes = _png_pixels(fig)
        assert pixels.shape[:2] == (round(SHEET_SIZE_IN[1] * SHEET_DPI), round(SHEET_SIZE_IN[0] * SHEET_DPI))
        rgb = pixels[..., :3]
        assert (rgb < 0.95).mean() > 0.05            # not a blank page: ink on more than 5 % of it
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200  # colour maps, not only text
        assert n_bytes < 300_000
        cells = table_cells(fig)
        stats = vetting_statistics(stack)
        from pixel_cnn.drawing.sheet import STATISTIC_LABELS

        for name, value in stats.row().items():
            assert cells[STATISTIC_LABELS[name]] == [format_statistic(name, value)]
        assert cells["P(planet)"] == [f"{pred['probability']:.3f}"]
        assert cells["call"] == [pred["label"]] and cells["threshold"] == ["0.500"]
        title = fig._suptitle.get_text()
        assert f"KIC {kepid}" in title
    finally:
        plt.close(fig)


def test_sheet_lists_every_branch_probability(real_dataset):
    """A fused model's per-branch probabilities (extra ``*_probability`` columns) appear on the sheet."""
    import matplotlib.pyplot as plt

    from pixel_cnn.drawing.sheet import sheet_figure, table_cells

    pred = {"probability": 0.7, "label": "CONFIRMED", "threshold": 0.4,
            "pixel_probability": 0.6, "tabular_probability": 0.8}
    fig = sheet_figure(real_dataset.stacks[3557341], 3557341, pred, None)
    try:
        cells = table_cells(fig)
        assert cells["P(planet)"] == ["0.700"]
        assert cells["P(planet) pixel"] == ["0.600"] and cells["P(planet) tabular"] == ["0.800"]
    finally:
        plt.close(fig)


def test_worst_oof_picks_lowest_planets_and_highest_fps():
    import pandas as pd

    from pixel_cnn.evaluation.cv import worst_oof

    oof = pd.DataFrame({
        "kepid": np.arange(10), "label": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0], "repeat": 0, "fold": 0,
        "probability": [0.9, 0.1, 0.5, 0.2, 0.3, 0.8, 0.05, 0.6, 0.7, 0.4], "threshold": 0.5,
    })
    worst = worst_oof(oof, n=2)
    assert worst["kepid"].tolist() == [1, 3, 5, 8]
    assert worst["rank"].tolist() == [1, 2, 1, 2]
    assert worst["mistake"].tolist() == [True, True, True, True]
    worst = worst_oof(oof, n=4).set_index("kepid")
    assert worst.index.tolist() == [1, 3, 4, 2, 5, 8, 7, 9]
    assert not worst.loc[2, "mistake"] and not worst.loc[9, "mistake"]  # right calls at the threshold


def test_generated_names_are_told_from_user_names():
    from mlflow.utils.name_utils import _generate_random_name

    from pixel_cnn.tracking.runs import is_generated_name

    assert all(is_generated_name(_generate_random_name()) for _ in range(300))
    for name in ("cv phase2 seed=42 x5", "my-run", "baseline", "redolent-pug", "fast-cv-2"):
        assert not is_generated_name(name), name


def test_job_run_names_the_run_unless_the_user_did(tracking_store, monkeypatch):
    """Under `mlflow run` the run exists: a generated name is replaced, a user's name is kept."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from pixel_cnn.tracking.runs import job_run

    client = MlflowClient()
    exp = client.create_experiment("names")
    for given, expected in ((None, "cv phase2 seed=42 x5"), ("my baseline", "my baseline")):
        run = client.create_run(exp, run_name=given)  # what `mlflow run [--run-name]` leaves
        monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
        monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp)
        with job_run("names", "cv phase2 seed=42 x5") as run_id:
            assert run_id == run.info.run_id
        assert client.get_run(run_id).info.run_name == expected
        assert mlflow.active_run() is None
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    with job_run("names", "tune phase2 study=s seed=1 x5 n=3") as run_id:
        pass
    assert client.get_run(run_id).info.run_name == "tune phase2 study=s seed=1 x5 n=3"


def test_run_names_and_descriptions_say_what_the_run_is():
    from pixel_cnn.evaluation.cv import cv_description, cv_run_name
    from pixel_cnn.search.tuning import TuneConfig, tune_description, tune_run_name

    assert cv_run_name("phase2", 42, 5) == "cv phase2 seed=42 x5"
    assert cv_run_name("seed", 7, 3, repeats=5, overrides={"lr": 1e-4, "dropout": None}) == "cv seed seed=7 x3 r5 lr=0.0001"
    assert cv_run_name("phase2", 1, 2, inner_folds=0) == "cv phase2 seed=1 x2 inner=0"
    summary = {"pr_auc_oof": 0.8021, "pr_auc_oof_ci_low": 0.68, "pr_auc_oof_ci_high": 0.9, "roc_auc_oof": 0.839,
               "threshold": 0.4567}
    text = cv_description(summary, (0.75, 0.91), 97, 1)
    assert "PR-AUC (average precision): **0.802** (95 % bootstrap interval 0.680-0.900)" in text
    assert "ROC-AUC: **0.839** (95 % bootstrap interval 0.750-0.910)" in text
    assert "threshold: **0.457**" in text and "97 targets" in text
    config = TuneConfig(preset="phase2", study_name="s1", seed=3, n_folds=4, n_trials=6, storage="sqlite:///:memory:")
    assert tune_run_name(config) == "tune phase2 study=s1 seed=3 x4 n=6"
    counts = {"n_trials": 6, "n_trials_complete": 4, "n_trials_pruned": 2, "n_trials_fail": 0, "run_trials": 6}
    text = tune_description({"best_value": 0.7123, "best_params": {"lr": 0.001, "epochs": 20}, "best_trial": 2,
                             "counts": counts})
    assert "best trial 2: pooled OOF PR-AUC (average precision) **0.712** with epochs=20, lr=0.001" in text
    assert "6 (4 complete, 2 pruned, 0 failed)" in text
    assert "No trial completed." in tune_description({"best_value": None, "counts": counts})
