"""Issue 21.5: sheets that cannot mislead: one sign convention, noise looks like noise, one attribution colour
meaning, a footer saying which model, which KOI and whether the star trained it, each branch on fusion mistake
sheets, a contiguous target aperture. Real stacks from the shared data folder; no model needed."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from pixel_cnn.vetter.vetting import vetting_statistics

PRED = {"probability": 0.3, "label": "FALSE POSITIVE", "threshold": 0.5}


def _texts(fig) -> str:
    return "\n".join([t.get_text() for t in fig.texts]
                     + [t.get_text() for ax in fig.axes for t in ax.texts]
                     + [ax.get_ylabel() for ax in fig.axes] + [ax.get_xlabel() for ax in fig.axes])


def test_one_sign_convention_dimming_positive(real_dataset):
    from pixel_cnn.drawing.sheet import STATISTIC_LABELS, sheet_figure

    kepid = 9451096  # a benchmark eclipsing binary: a deep dimming in transit
    stack = real_dataset.stacks[kepid]
    stats = vetting_statistics(stack)
    fig = sheet_figure(stack, kepid, PRED)
    try:
        curve = fig.axes[-2]  # the light-curve axes (then the table)
        assert "+ = fainter" in curve.get_ylabel()
        y = np.concatenate([line.get_ydata() for line in curve.lines if len(line.get_ydata()) == 32])
        assert y.max() == pytest.approx(-stats.phase_curve_ppm.min())  # the transit plotted upward
        assert stats.depth_ppm > 0 and y.max() > 0  # the table's depth and the curve agree in sign
        assert "+ = dimming" in STATISTIC_LABELS["depth_ppm"] and "+ = dimming" in STATISTIC_LABELS["secondary_depth_ppm"]
        bars = [ax for ax in fig.axes if "dimming" in ax.get_ylabel() and ax is not curve]
        assert len(bars) == 2 and all("+ = fainter" in ax.get_ylabel() for ax in bars)  # both colour bars
    finally:
        plt.close(fig)


def test_noise_only_stack_stays_pale(real_dataset):
    """The colour scale reaches at least 5 sigma of the image's noise: noise alone never saturates."""
    from pixel_cnn.drawing.sheet import NOISE_FLOOR_SIGMA, difference_noise_ppm, sheet_figure
    from pixel_cnn.vetter.stack import IN_TRANSIT_BINS

    real = real_dataset.stacks[9967771]
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(real.shape) * 3e-4).astype(np.float32)  # 300 ppm per bin, no signal
    stats = vetting_statistics(noise)
    fig = sheet_figure(noise, "noise", PRED)
    try:
        image = fig.axes[0].images[0]
        lim = image.norm.vmax
        data = np.ma.getdata(image.get_array())
        sigma = difference_noise_ppm(stats, IN_TRANSIT_BINS)
        assert lim >= NOISE_FLOOR_SIGMA * sigma * (1 - 1e-9)
        assert np.abs(data).max() < 0.9 * lim  # no pixel of pure noise at the colour map's end
    finally:
        plt.close(fig)
    # a real eclipse still fills the scale (the floor does not hide signal)
    stack = real_dataset.stacks[9451096]
    fig = sheet_figure(stack, 9451096, PRED)
    try:
        image = fig.axes[0].images[0]
        assert np.abs(np.ma.getdata(image.get_array())).max() == pytest.approx(image.norm.vmax)
    finally:
        plt.close(fig)


def test_attribution_colours_mean_the_same_everywhere(real_dataset):
    from pixel_cnn.drawing import colours, explain
    from pixel_cnn.drawing.sheet import sheet_figure

    attr = np.linspace(-1, 1, 16 * 16).reshape(16, 16)
    fig = sheet_figure(real_dataset.stacks[9967771], 9967771, PRED, attr, "test")
    try:
        panel = fig.axes[2]  # in-transit difference, its colour bar, then the attribution panel
        assert panel.images[0].get_cmap().name == colours.ATTRIBUTION_CMAP
        assert colours.ATTRIBUTION_MEANING in _texts(fig)
    finally:
        plt.close(fig)
    n = 2
    x = np.zeros((n, 1, 8, 8), np.float32)
    a = np.ones((n, 1, 8, 8), np.float32)  # every pixel pushes toward CONFIRMED
    fig = explain.attribution_figure(x, a, np.array([1, 2]), np.array([1, 0]), np.array([0.9, 0.1]), n_maps=1)
    try:
        mosaic = fig.axes[0].images[0].get_array()
        green = plt.get_cmap(colours.ATTRIBUTION_CMAP)(1.0)[:3]  # the + end of the sheets' colour map
        assert np.isclose(mosaic[..., :3], green, atol=1e-6).all(axis=-1).any()
        assert colours.ATTRIBUTION_MEANING in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_footer_names_model_koi_and_training_set(real_dataset):
    from pixel_cnn.drawing.sheet import footer_text, sheet_figure

    fig = sheet_figure(real_dataset.stacks[9967771], 9967771, PRED, model="models:/pixel-cnn@champion = pixel-cnn "
                       "version 3", koi="K01875.01", in_training=True)
    try:
        footer = [t for t in fig.texts if t.get_gid() == "sheet-footer"][0].get_text()
        assert "pixel-cnn version 3" in footer and "K01875.01" in footer and "IN TRAINING SET" in footer
    finally:
        plt.close(fig)
    assert "none (stack only)" in footer_text("m", "", False) and "not in the model's training set" in footer_text("m")\
        .replace("training set not recorded", "not in the model's training set")
    assert "not recorded" in footer_text()


def test_drawn_target_aperture_is_one_contiguous_region(real_dataset):
    from scipy import ndimage

    from pixel_cnn.drawing.sheet import contiguous_aperture

    for kepid, stack in real_dataset.stacks.items():
        stats = vetting_statistics(stack)
        region = contiguous_aperture(stats.aperture, stats.weight)
        assert ndimage.label(region)[1] == 1, kepid
        assert (region <= stats.aperture).all() and region[np.unravel_index(np.argmax(stats.weight), region.shape)]
        # issue 19: the statistics' aperture is itself the region joined to the brightest pixel
        assert (region == stats.aperture).all(), kepid


def test_fusion_mistake_sheets_show_each_branch(real_dataset):
    from pixel_cnn.drawing.sheet import mistake_sheet_specs, table_cells, sheet_figure

    class Fold:  # what mistake_sheet_specs reads of a fold
        repeat, fold, attributions, val_kepids = 0, 1, None, np.array([9967771])

    worst = pd.DataFrame({"kepid": [9967771], "label": [1], "repeat": [0], "fold": [1], "probability": [0.2],
                          "threshold": [0.4], "rank": [1], "mistake": [True], "probability_pixel": [0.35],
                          "probability_tabular": [0.1], "probability_fused": [0.2], "tabular_koi": ["K01875.01"]})
    ((path, kwargs),) = mistake_sheet_specs(worst, [Fold()], real_dataset.stacks, 4, model="cv fusion seed=42 x5")
    assert kwargs["in_training"] is False and kwargs["koi"] == "K01875.01"
    fig = sheet_figure(**kwargs)
    try:
        cells = table_cells(fig)
        assert cells["P(planet) pixel"] == ["0.350"] and cells["P(planet) tabular"] == ["0.100"]
        assert cells["P(planet)"] == ["0.200"]
        footer = [t for t in fig.texts if t.get_gid() == "sheet-footer"][0].get_text()
        assert "cv fusion seed=42 x5: fold 1" in footer and "K01875.01" in footer
    finally:
        plt.close(fig)


@pytest.mark.parametrize("kepid", [9967771, 9451096])
def test_light_curve_legend_covers_no_point(real_dataset, kepid):
    """The legend sits in headroom above the curve: no plotted point (nor its error bar) is under it."""
    from pixel_cnn.drawing.sheet import sheet_figure

    fig = sheet_figure(real_dataset.stacks[kepid], kepid, PRED)
    try:
        fig.canvas.draw()
        curve = fig.axes[-2]
        box = curve.get_legend().get_window_extent()
        line = next(line for line in curve.lines if len(line.get_ydata()) == 32)
        points = curve.transData.transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
        assert not any(box.contains(x, y) for x, y in points)
        stats = vetting_statistics(real_dataset.stacks[kepid])
        top = curve.transData.transform((0.0, float(np.max(-stats.phase_curve_ppm + stats.noise_ppm))))[1]
        assert top < box.y0  # the highest error bar ends below the legend
    finally:
        plt.close(fig)
