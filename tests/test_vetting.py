"""core/vetting.py: vetting statistics of a stack, on hand-made stacks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pixel_cnn.vetter.stack import validate_stack


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
    from pixel_cnn.vetter.vetting import VETTING_FEATURES, vetting_features

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
    assert v["centroid_offset"] < 0.2 and v["frac_in_aperture"] > 0.7  # the star's light inside its aperture
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
