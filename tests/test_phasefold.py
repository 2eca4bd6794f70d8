"""The pure science of prep source=tpf (pixel_cnn.stacks.phasefold): phase folding, windows,
normalisation, binning, the missing-data rule, combining quarters, and the time system of an
epoch. Hand-checked tiny inputs; no file is read."""

from __future__ import annotations

import numpy as np
import pytest

from pixel_cnn.stacks import phasefold
from pixel_cnn.stacks.phasefold import BKJD_REF, BTJD_REF, EPOCH_WINDOW_D, EpochSystemError, resolve_epoch


def test_phase_fold_epoch_before_and_after_the_data():
    t = np.array([100.0, 100.5, 101.0, 101.75])
    # P = 1 d: t0 = 100 (first cadence), 37 (63 periods before), 1000.25 (900 after, shifted)
    np.testing.assert_allclose(phasefold.phase_fold(t, 1.0, 100.0), [0.0, 0.5, 0.0, 0.75])
    np.testing.assert_allclose(phasefold.phase_fold(t, 1.0, 37.0), [0.0, 0.5, 0.0, 0.75])
    np.testing.assert_allclose(phasefold.phase_fold(t, 1.0, 1000.25), [0.75, 0.25, 0.75, 0.5])


def test_phase_fold_never_returns_one():
    p = phasefold.phase_fold(np.array([10.0 - 1e-15]), 2.0, 0.0)
    assert 0.0 <= p[0] < 1.0


def test_transit_window_by_duration_not_by_bin():
    period, duration_h = 10.0, 3.0        # half width 1.5 h = 0.00625 in phase, a bin is 0.03125
    phase = np.array([0.0, 0.006, 0.007, 0.03, 0.994, 0.5, 0.505, 0.25])
    in_tr, in_sec = phasefold.transit_windows(phase, period, duration_h)
    assert in_tr.tolist() == [True, True, False, False, True, False, False, False]
    assert in_sec.tolist() == [False, False, False, False, False, True, True, False]


def test_short_transit_not_diluted_by_whole_bin_median():
    """Regression for the benchmark script: a whole-bin median hides a transit shorter
    than half a bin; here bin 0 holds 1 in-transit and 3 out-of-transit cadences."""
    phase = np.array([0.001, 0.01, 0.02, 0.03, 0.5])
    rel = np.array([-0.01, 0.0, 0.0, 0.0, 0.0]).reshape(5, 1, 1)
    window = np.array([True, False, False, False, False])
    stack, counts = phasefold.bin_stack(phase, rel, window, 32)
    assert stack[0, 0, 0] == pytest.approx(-0.01) and counts[0] == 1
    whole_bin, _ = phasefold.bin_stack(phase, rel, np.zeros(5, bool), 32)
    assert whole_bin[0, 0, 0] == 0.0          # what the whole-bin median gave
    assert np.isnan(stack[1]).all() and counts[1] == 0   # an empty bin stays NaN until filled


def test_all_nan_pixel_becomes_no_change_not_full_eclipse():
    flux = np.full((6, 2, 2), 100.0)
    flux[:, 0, 1] = np.nan                    # a pixel NaN throughout
    flux[:, 1, 1] = -5.0                      # background-subtracted, no star light
    flux[3, 0, 0] = 99.0
    rel, ref = phasefold.relative_flux(flux, np.array([True, True, True, False, False, False]))
    assert ref[0, 0] == 100.0 and rel[3, 0, 0] == pytest.approx(-0.01)
    assert np.isnan(rel[:, 0, 1]).all() and np.isnan(rel[:, 1, 1]).all()
    filled, missing = phasefold.fill_missing(rel)
    assert (filled[:, 0, 1] == 0).all() and (filled[:, 1, 1] == 0).all()   # not -1 (100% dimming)
    assert missing[:, 0, 1].all() and not missing[:, 0, 0].any()


def test_reference_windows_exclude_transit_and_follow_the_readme():
    phase = np.array([0.19, 0.2, 0.25, 0.3, 0.7, 0.79, 0.8, 0.5])
    ref = phasefold.reference_mask(phase, np.zeros(8, bool))
    assert ref.tolist() == [False, True, True, False, True, True, False, False]



# ---------------------------------------------------------------- combining quarters


def _segment(time, level=1000.0, grid=("Kepler", "5", 0, 0, 1, 1), dip=None, epoch=0.0):
    flux = np.full((len(time), 1, 1), level)
    if dip is not None:
        flux[dip, 0, 0] *= 0.99
    return phasefold.Segment(np.asarray(time, float), flux, epoch, grid)


def test_each_quarter_normalised_by_its_own_reference():
    """Two quarters on one grid at 1000 and 2000 e-/s, a 1% dip in each: bin 0 is -0.01.

    P = 1 d, D = 2.4 h (half width 0.05 in phase); cadences at phases 0, 0.25, 0.75 (reference)."""
    t = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.25, 2.75, 3.25, 3.75, 4.25, 4.75])
    dip = np.isin(t, [0.0, 1.0, 2.0])
    a = _segment(t, 1000.0, dip=dip)
    b = _segment(np.delete(t, 6) + 10.0, 2000.0, dip=np.delete(dip, 6))   # two transit cadences only
    stack, info = phasefold.fold_segments([a, b], 1.0, 2.4, min_reference=10)
    assert stack[0, 0, 0] == pytest.approx(-0.01) and stack[8, 0, 0] == 0.0    # phase 0.25: bin 8
    assert info["used"] == [0, 1] and info["n_in_transit"] == 5 and info["n_reference"] == 20
    assert info["n_empty_bins"] == 32 - 3
    # one pooled O (median 1500) would give in transit 3 x (990-1500)/1500 = -0.34 and
    # 2 x (1980-1500)/1500 = +0.32: a median of -0.34, not the 1% dip


def test_grid_with_most_in_transit_cadences_is_used_the_other_left_out():
    t = np.concatenate([np.arange(0, 5, 0.05)])
    many = _segment(t, grid=("g1",))
    few = _segment(t[:30], grid=("g2",))           # 0-1.45 d: two transits instead of five
    stack, info = phasefold.fold_segments([few, many], 1.0, 2.4)
    assert info["used"] == [1] and info["left_out"] == [0]
    assert info["n_cadences"] == len(t)


def test_too_few_cadences_raise_fold_error():
    two_in = _segment([-0.01, 0.01, 2.5, 2.6])
    with pytest.raises(phasefold.FoldError, match=r"too few cadences: 2 in transit \(need >= 3\)"):
        phasefold.fold_segments([two_in], 10.0, 2.0)
    with pytest.raises(phasefold.FoldError, match="no in-transit cadences: none of 2 cadences"):
        phasefold.fold_segments([_segment([2.5, 2.6])], 10.0, 2.0)
    with pytest.raises(phasefold.FoldError, match="no quarter"):
        phasefold.fold_segments([], 10.0, 2.0)


# ---------------------------------------------------------------- the time system of an epoch
# A Kepler quarter: 131.5-139.7 BKJD (BJDREFI = 2454833, BJDREFF = 0); a transit at 131.5 BKJD
# is BJD 2454964.5 and BTJD 131.5 + 2454833 - 2457000 = -2035.5.

Q1 = (131.5, 139.7, BKJD_REF)


def test_epoch_in_its_declared_system_is_kept():
    r = resolve_epoch(131.5, "BKJD", *Q1)
    assert (r.system, r.epoch, r.epoch_bjd, r.converted, r.note()) == ("BKJD", 131.5, 2454964.5, False, "")


def test_bjd_epoch_in_a_bkjd_column_is_converted():
    """Issue 13 item 2: koi_time0bk = 2454964.5 (BJD) instead of 131.5 (BKJD)."""
    r = resolve_epoch(2454964.5, "BKJD", *Q1)
    assert (r.system, r.declared, r.epoch, r.epoch_bjd) == ("BJD", "BKJD", 131.5, 2454964.5)
    assert r.converted and r.note() == "epoch 2454964.500000 given as BKJD read as BJD (= BJD 2454964.500000)"


def test_btjd_epoch_in_a_bkjd_column_is_converted():
    r = resolve_epoch(-2035.5, "BKJD", *Q1)          # as BKJD it lies 2167 d before the quarter
    assert (r.system, r.epoch) == ("BTJD", 131.5)


def test_tess_sector_epochs_in_bjd_and_btjd():
    sector = (1325.3, 1333.5, BTJD_REF)
    assert resolve_epoch(2458325.3, "BJD", *sector).epoch == pytest.approx(1325.3)
    r = resolve_epoch(1325.3, "BJD", *sector)          # BTJD written in a BJD column
    # as BKJD: 1325.3 + 2454833 - 2457000 = -841.7, 2167 d before the sector: does not fit
    assert (r.system, r.epoch) == ("BTJD", 1325.3)


def test_window_edge_is_inclusive_and_documented():
    assert EPOCH_WINDOW_D == 2000.0
    assert resolve_epoch(131.5 - 2000.0, "BKJD", *Q1).system == "BKJD"      # 2000 d before: fits
    r = resolve_epoch(131.5 - 2000.5, "BKJD", *Q1)                          # 2000.5 d: does not
    assert r.system == "BTJD" and r.epoch == pytest.approx(131.5 - 2000.5 + 2167.0)


def test_epoch_fitting_two_systems_is_refused_as_ambiguous():
    # quarter 1000-1090 BKJD; 500 in a BJD column: as BKJD 500 d before, as BTJD (2667 BKJD) 1577 d after
    with pytest.raises(EpochSystemError, match=r"epoch 500.0 \(declared BJD.*ambiguous: it fits BKJD and BTJD"):
        resolve_epoch(500.0, "BJD", 1000.0, 1090.0, BKJD_REF)


def test_epoch_fitting_no_system_is_refused_with_the_time_range():
    with pytest.raises(EpochSystemError) as err:
        resolve_epoch(1e9, "BKJD", *Q1)
    msg = str(err.value)
    assert "epoch 1000000000.0 (declared BKJD) fits no time system" in msg
    assert "131.500-139.700 BKJD (BJD 2454964.500-2454972.700)" in msg


def test_unknown_declared_system_or_nan_is_a_value_error():
    with pytest.raises(ValueError, match="declared time system 'MJD'"):
        resolve_epoch(1.0, "MJD", *Q1)
    with pytest.raises(ValueError, match="non-finite"):
        resolve_epoch(float("nan"), "BKJD", *Q1)
