"""Injections into real pixels (stacks/inject.py, io/injection.py) and the vetting statistics they check.

Physics probes with fixed seeds on real TPFs of ``../shared/data/kepler-tpf``: the partial quarter of
KIC 12644706 (no KOI; 500 cadences) as background, and Kepler-8's whole quarter for the regression of
issue 19 (its real transit's centroid read 0.57 px off target at 8 sigma). Other TPFs are left to the
injection-recovery checks (README, issue 19) and held out of tests.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pixel_cnn.io.injection import fold_injection, injected_stack, load_background
from pixel_cnn.stacks.inject import Injection, known_transit_mask, transit_duration_h
from pixel_cnn.vetter.vetting import vetting_statistics

BACKGROUND_TPF = "partial-quarters/kplr012644706-q12-500cad.fits"
KEPLER8_TPF = "kplr006922244-2009166043257_lpd-targ.fits"


@pytest.fixture(scope="module")
def koi_table(data_dir) -> pd.DataFrame:
    return pd.read_csv(data_dir / "koi_cumulative.csv", comment="#", low_memory=False)


@pytest.fixture(scope="module")
def background(data_dir, koi_table):
    return load_background(data_dir.parent / "kepler-tpf" / BACKGROUND_TPF, koi_table)


def stats(inj):
    return vetting_statistics(inj.stack, flux_image=inj.flux_image, bin_counts=inj.bin_counts)


def test_same_seed_same_injected_stack(background):
    a, b = injected_stack(background, "planet", 7), injected_stack(background, "planet", 7)
    assert a.injection == b.injection and a.stack.tobytes() == b.stack.tobytes()
    c = injected_stack(background, "planet", 8)
    assert c.injection != a.injection
    assert a.stack.shape == (32,) + background.tpf.flux.shape[1:] and a.stack.dtype == np.float32


def test_known_koi_transits_are_masked_first(data_dir, koi_table):
    # Kepler-682 b (K00791.01) transits within the 500 cadences of KIC 12644822
    bg = load_background(data_dir.parent / "kepler-tpf" / "partial-quarters/kplr012644822-q12-500cad.fits",
                         koi_table)
    assert bg.kois == ("K00791.01",) and bg.n_masked > 0
    row = koi_table[koi_table["kepoi_name"] == "K00791.01"].iloc[0]
    eph = [(row["koi_period"], row["koi_time0bk"], row["koi_duration"])]
    assert known_transit_mask(bg.tpf.time, eph).all()  # nothing of the real transit is left


def test_transit_duration_hand_checked():
    # central transit, a/R* = 10, k = 0.1, P = 3 d: T = P/pi * arcsin(1.1 / 10) = 0.1052 d = 2.525 h
    assert transit_duration_h(3.0, 0.1, 10.0, 0.0) == pytest.approx(3.0 / math.pi * math.asin(0.11) * 24, rel=1e-9)
    with pytest.raises(ValueError, match="no transit"):
        transit_duration_h(3.0, 0.1, 10.0, 1.2)


def test_clear_on_target_transit_is_on_target(background):
    """3000 ppm transits of the target (12 seeds): on target by its share, seldom off by its centroid."""
    found = [stats(injected_stack(background, "planet", seed, depth=3e-3)) for seed in range(12)]
    clear = [s for s in found if s.snr > 10]
    assert len(clear) >= 8 and all(s.flux_source == "image" for s in clear)
    assert all(s.frac_on_target > 0.6 for s in clear)                       # most of the dimming on target
    assert sum(s.centroid_offset_sigma < 3 for s in clear) >= 0.75 * len(clear)
    assert all(0.5 * 3000 < s.depth_ppm < 1.2 * 3000 for s in clear)       # limb-darkened, binned, diluted


def test_off_target_eclipse_is_off_target(background):
    """Eclipses of a source 2 px away diluted to 3000 ppm (12 seeds): their share on target is low."""
    found = [stats(injected_stack(background, "offtarget", seed, depth=3e-3, offset_px=2.0)) for seed in range(12)]
    clear = [s for s in found if s.snr > 10]
    assert len(clear) >= 5
    assert all(s.frac_on_target < 0.6 for s in clear)
    assert sum(s.centroid_offset_sigma > 3 for s in clear) >= 0.5 * len(clear)


def test_noise_only_has_no_share_and_no_centroid(background):
    """No signal: the share on target is undefined (NaN), never 1.00; no centroid in most folds."""
    found = [stats(injected_stack(background, "none", seed)) for seed in range(12)]
    shares = [s.frac_on_target for s in found]
    assert sum(math.isnan(x) for x in shares) >= 10
    assert all(math.isnan(x) or x < 1.0 for x in shares)
    for s in found:
        if math.isnan(s.frac_on_target):
            assert "< 3" in s.undefined_reason and math.isnan(s.centroid_offset_px) and s.centroid_rc is None


def test_eclipsing_binary_secondary_shows(background):
    t0 = float(background.tpf.time.min()) + 0.4
    inj = Injection("eb", 1.5, t0, 2.6, rp_rs=0.5, a_rs=5.5, impact=1.2, secondary_depth=0.02, seed=0)
    s = stats(fold_injection(background, inj))
    assert s.snr > 20 and s.secondary_snr > 5 and 0.1 < s.secondary_ratio < 1.0


def test_kepler8b_real_transit_is_not_off_target(data_dir, koi_table, tmp_path):
    """Regression (issue 19): Kepler-8 b's own transit read 0.57 px off target at 8 sigma (flux proxy)."""
    from pixel_cnn.io.ephemeris import load_ephemeris
    from pixel_cnn.io.target import process_target

    koi_table[koi_table["kepid"] == 6922244].to_csv(tmp_path / "koi.csv", index=False)  # its KOI rows, as prep reads them
    eph, _, _ = load_ephemeris(tmp_path / "koi.csv")
    result = process_target(6922244, [str(data_dir.parent / "kepler-tpf" / KEPLER8_TPF)], eph[6922244])
    s = vetting_statistics(result.stack, flux_image=result.flux_image, bin_counts=result.bin_counts)
    assert s.snr > 20 and s.centroid_offset_sigma < 3 and s.frac_on_target > 0.6
    assert result.flux_image.shape == result.stack.shape[1:] and result.bin_counts.sum() > 1000


def test_prep_keeps_the_flux_image_and_bin_counts_beside_each_stack(data_dir, koi_table, tmp_path):
    """prep source=tpf writes flux_images/pixdiff_<id>.npz: the statistics measured with it are the fold's."""
    from pixel_cnn.io.tpf import FLUX_IMAGES, build_stacks
    from pixel_cnn.io.ephemeris import load_ephemeris
    from pixel_cnn.io.target import process_target

    tpfs = tmp_path / "tpfs"
    tpfs.mkdir()
    source = data_dir.parent / "kepler-tpf" / "partial-quarters" / "kplr012644822-q12-500cad.fits"
    (tpfs / source.name).symlink_to(source)  # the shared file, never copied
    ephemeris = tmp_path / "koi.csv"  # the star's KOI rows only: the whole table takes seconds to group
    koi_table[koi_table["kepid"] == 12644822].to_csv(ephemeris, index=False)
    report = build_stacks(tpfs, ephemeris, tmp_path / "out", progress=False)
    assert report["status"].tolist() == ["ok"] and report["flux_image_file"].tolist() == [
        f"{FLUX_IMAGES}/pixdiff_12644822.npz"]
    with np.load(tmp_path / "out" / FLUX_IMAGES / "pixdiff_12644822.npz") as kept:
        image, counts = kept["flux_image"], kept["bin_counts"]
    stack = np.load(tmp_path / "out" / "stacks" / "pixdiff_12644822.npy")
    assert image.shape == stack.shape[1:] and counts.shape == (32,) and counts.sum() > 0
    eph, _, _ = load_ephemeris(ephemeris)
    direct = process_target(12644822, [str(source)], eph[12644822])
    np.testing.assert_array_equal(image, direct.flux_image)
    kept_row = vetting_statistics(stack, flux_image=image, bin_counts=counts).row()
    direct_row = vetting_statistics(direct.stack, flux_image=direct.flux_image, bin_counts=direct.bin_counts).row()
    np.testing.assert_array_equal(list(kept_row.values()), list(direct_row.values()))  # NaN == NaN here
