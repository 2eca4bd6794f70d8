"""core/representation.py: stack -> model input (seed median image, phase and phase2 maps and scalars)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pixel_cnn.vetter import networks as models
from pixel_cnn.vetter.representation import (
    PHASE_IMAGE_CHANNELS,
    PHASE_SCALARS,
    REPRESENTATION_CHANNELS,
    build_inputs,
    median_image,
    phase_image,
    phase_maps,
    resize,
)
from pixel_cnn.vetter.stack import StackError, oot_sigma, validate_stack


def stack(h=4, w=5, seed=0):
    return np.random.default_rng(seed).normal(0, 1e-3, (32, h, w)).astype(np.float32)



@pytest.mark.parametrize("h,w", [(3, 5), (4, 4), (10, 12), (24, 24), (3, 24)])
def test_resize_matches_torch_bilinear(h, w):
    images = np.random.default_rng(1).normal(size=(32, h, w)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(images)[None], size=(24, 24), mode="bilinear",
                             align_corners=False)[0].numpy()
    np.testing.assert_allclose(resize(images, 24), expected, atol=1e-5)


def test_resize_hand_checked_2x2_to_4x4():
    image = np.array([[0.0, 1.0], [2.0, 3.0]])
    # half-pixel centres: output rows sample at -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1)
    expected_row0 = [0.0, 0.25, 0.75, 1.0]
    np.testing.assert_allclose(resize(image, 4)[0], expected_row0, atol=1e-6)
    np.testing.assert_allclose(resize(image, 4)[:, 0], [0.0, 0.5, 1.5, 2.0], atol=1e-6)


def test_median_image_is_standardized_and_shaped():
    out = median_image(stack(), 24)
    assert out.shape == (1, 24, 24) and out.dtype == np.float32
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-4


def test_median_image_of_constant_stack_is_zero():
    assert not median_image(np.full((32, 4, 4), 0.01, np.float32)).any()


def test_build_inputs_mixed_sizes_and_error_names_index():
    x = build_inputs([stack(3, 5), stack(10, 12), stack(24, 24)], "median")
    assert x.shape == (3, 1, 24, 24)
    with pytest.raises(StackError, match="stack 1: rank 2"):
        build_inputs([stack(), np.ones((4, 4))], "median")
    with pytest.raises(KeyError, match="unknown representation"):
        build_inputs([stack()], "nope")


def test_batched_phase_inputs_equal_one_stack_at_a_time(real_dataset):
    """build_inputs batches stacks by size; every value equals phase_image on one stack."""
    from pixel_cnn.vetter.representation import BATCH_CHUNK, phase_image

    rng = np.random.default_rng(3)
    synthetic = []
    for h, w in [(3, 3), (5, 4), (24, 24), (7, 3)] * 2:
        s = rng.normal(0, 1e-3, (32, h, w)).astype(np.float32)
        s[:, 0, 0] = np.nan          # a dead pixel (NaN -> 0, SNR 0)
        s[4:12, 1, 1] = 0.0          # no scatter in half the noise bins
        synthetic.append(s)
    stacks = real_dataset.stack_list() + synthetic
    stacks = stacks * (1 + BATCH_CHUNK // len(stacks))  # one size spans more than one chunk
    batched = build_inputs(stacks, "phase", 16)
    single = np.stack([phase_image(validate_stack(s), 16) for s in stacks])
    assert batched.dtype == np.float32 and batched.shape == (len(stacks), 10, 16, 16)
    assert np.array_equal(batched, single)


SCALAR = {name: i for i, name in enumerate(PHASE_SCALARS)}


def noisy_stack(h=5, w=6, sigma=1e-3, seed=0):
    return np.random.default_rng(seed).normal(0, sigma, (32, h, w)).astype(np.float32)


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


def test_phase2_every_stamp_size_with_nan_and_zero_pixels():
    from pixel_cnn.vetter.representation import PHASE2_SCALARS, phase2_image
    from pixel_cnn.vetter.vetting import VETTING_FEATURES

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
