"""Catalogue context and DV inputs of the tabular branch (issue 20), on real KOI rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pixel_cnn.branches import tabular as TB
from pixel_cnn.io.koi import load_koi_with_dv
from pixel_cnn.vetter import context as C
from pixel_cnn.vetter import tabular as T


@pytest.fixture(scope="module")
def koi(data_dir) -> pd.DataFrame:
    return load_koi_with_dv(data_dir)


@pytest.fixture(scope="module")
def catalogue(koi) -> pd.DataFrame:
    return C.catalogue_of(koi)


def test_dv_join_keeps_every_koi_and_no_answer(koi, data_dir):
    raw = pd.read_csv(data_dir / "koi_cumulative.csv", comment="#", low_memory=False)
    assert len(koi) == len(raw) and (koi["kepoi_name"].to_numpy() == raw["kepoi_name"].to_numpy()).all()
    for name, (desc, low, high) in T.DV_INPUTS.items():
        assert name in koi and "[" in desc and not T.is_banned(name)
        values = koi[name].dropna()
        assert len(values) > 0.8 * len(koi), name
        low_ok = (values > low) if name in T.STRICT_LOW else (values >= low)
        assert low_ok.all() and (values <= high).all(), f"{name}: a real value outside its physical range"
    assert "koi_count" not in koi  # the star's KOI count is a context feature, computed from the catalogue


def test_catalogue_holds_measurements_only(koi, catalogue):
    assert tuple(catalogue.columns) == C.CATALOGUE_COLUMNS and len(catalogue) == len(koi)
    for column in catalogue.columns:
        assert "disposition" not in column and "score" not in column and "fpflag" not in column
    with pytest.raises(C.CatalogueError, match="answer column.*koi_disposition"):
        C.context_features(koi.head(3), catalogue.assign(koi_disposition=koi["koi_disposition"]))
    with pytest.raises(C.CatalogueError, match="lacks catalogue column"):
        C.catalogue_of(koi.drop(columns=["koi_time0bk"]))


def test_star_multiplicity_on_real_multis(koi, catalogue):
    # Star 3231341 hosts K01102.01-.04; counts checked against an independent groupby on kepid.
    counts = koi.groupby("kepid")["kepoi_name"].transform("size")
    rows = koi[koi["kepid"].isin([3231341, 10797460, 11442793])]
    f = C.context_features(rows, catalogue)
    assert (f["ctx_n_koi_star"].to_numpy() == counts[rows.index].to_numpy()).all()
    assert (f.loc[rows["kepid"] == 3231341, "ctx_n_koi_star"] == 4).all()
    sample = koi.sample(400, random_state=0)
    assert (C.context_features(sample, catalogue)["ctx_n_koi_star"].to_numpy() == counts[sample.index].to_numpy()).all()


def test_served_candidate_gets_the_same_context(koi, catalogue):
    # A known KOI served from its parameters (no name) == the same KOI in the catalogue by name.
    rows = koi[koi["kepid"].isin([3231341, 10797460])].head(4)
    by_name = C.context_features(rows, catalogue)
    params = rows[["ra", "dec", "koi_period", "koi_time0bk", "koi_depth", "koi_kepmag"]]
    pd.testing.assert_frame_equal(by_name, C.context_features(params, catalogue))
    # ... and a candidate that is NOT in the catalogue gets the same features too.
    outside = catalogue[catalogue["kepoi_name"] != rows["kepoi_name"].iloc[0]]
    pd.testing.assert_frame_equal(by_name.iloc[[0]], C.context_features(params.iloc[[0]], outside))
    # No catalogue: no context.
    assert C.context_features(params, None).isna().all().all()


def test_labels_never_feed_a_feature(koi, catalogue):
    rows = koi.sample(150, random_state=1)
    shuffled = koi.assign(koi_disposition=np.random.default_rng(0).permutation(koi["koi_disposition"].to_numpy()),
                          koi_score=0.5, koi_fpflag_co=1)
    pd.testing.assert_frame_equal(C.context_features(rows, catalogue),
                                  C.context_features(rows, C.catalogue_of(shuffled)))
    pd.testing.assert_frame_equal(T.build_features(rows, catalogue), T.build_features(
        rows.assign(koi_disposition="CONFIRMED", koi_score=1.0), C.catalogue_of(shuffled)))


def test_ephemeris_match_and_sibling_ratio_by_hand(koi, catalogue):
    parent = koi[koi["kepoi_name"] == "K00752.01"].iloc[0]
    # A "child" 30 arcsec north, 2 mag fainter, shallower, on the parent's ephemeris (period x 1, epoch + 5 P).
    child = pd.DataFrame({"ra": [parent["ra"]], "dec": [parent["dec"] + 30 / 3600], "koi_period": [parent["koi_period"]],
                          "koi_time0bk": [parent["koi_time0bk"] + 5 * parent["koi_period"]],
                          "koi_depth": [parent["koi_depth"] / 10], "koi_kepmag": [parent["koi_kepmag"] + 2]})
    f = C.context_features(child, catalogue).iloc[0]
    assert f["ctx_n_ephem_match"] >= 1 and f["ctx_ephem_sigma_p"] == C.SIGMA_CAP
    assert f["ctx_match_log_sep"] == pytest.approx(math.log10(30), abs=0.01)
    assert f["ctx_match_dmag"] == pytest.approx(2.0) and f["ctx_match_log_depth_ratio"] == pytest.approx(-1.0)
    assert f["ctx_n_koi_star"] == 1  # nobody else at the child's position
    # Twice the period (ratio 2:1 Coughlin allows), epoch shifted by a whole parent period: still a match.
    double = child.assign(koi_period=2 * parent["koi_period"], koi_time0bk=parent["koi_time0bk"] + parent["koi_period"])
    assert C.context_features(double, catalogue).iloc[0]["ctx_n_ephem_match"] >= 1
    # Epoch off by a quarter period: no match.
    off = child.assign(koi_time0bk=parent["koi_time0bk"] + 0.25 * parent["koi_period"])
    g = C.context_features(off, catalogue).iloc[0]
    assert g["ctx_n_ephem_match"] == 0 and np.isnan(g["ctx_match_log_sep"])
    # ON the parent's star at exactly twice its period: a sibling at an exact 2:1 ratio.
    sib = child.assign(dec=parent["dec"], koi_time0bk=parent["koi_time0bk"] + 0.3, koi_period=2 * parent["koi_period"])
    s = C.context_features(sib, catalogue).iloc[0]
    assert s["ctx_n_koi_star"] == 3 and s["ctx_sibling_log_offset"] == C.LOG_FLOOR  # K00752.01, .02 and itself


def test_matched_kois_are_mostly_false_positives(koi, catalogue):
    # Coughlin et al. 2014: an ephemeris match with another star flags contamination.
    rows = TB.koi_labels(koi[koi["kepid"] % 4 == 0])
    f = C.context_features(rows, catalogue)
    matched = f["ctx_n_ephem_match"] > 0
    assert matched.sum() >= 30
    assert (rows.loc[matched, "label"] == 0).mean() > 0.9


def test_served_parameters_and_feature_groups():
    assert T.FEATURE_NAMES == tuple(c for g in T.FEATURE_GROUPS.values() for c in g)
    assert len(set(T.FEATURE_NAMES)) == len(T.FEATURE_NAMES)
    assert set(T.DV_INPUTS) <= set(T.FEATURE_NAMES) and set(C.CONTEXT_FEATURES) <= set(T.FEATURE_NAMES)
    for name in ("ra", "dec", "koi_time0bk"):
        assert T.is_banned(name) and name not in T.FEATURE_NAMES and name in T.SERVED_PARAMETERS
    assert not set(T.PARAMETER_INPUTS) & set(T.FEATURE_NAMES)
    got = T.check_parameters({"koi_period": 3.5, "ra": 290.1, "dec": 44.2, "koi_time0bk": 170.5,
                              "koi_dicco_msky": 0.3, "koi_max_mult_ev": 25.0})
    assert got["ra"] == 290.1 and got["koi_dicco_msky"] == 0.3
    with pytest.raises(T.TabularInputError, match="dec .* out of physical range"):
        T.check_parameters({"dec": 95.0})
    with pytest.raises(T.TabularInputError, match="koi_fwm_stat_sig .* out of physical range"):
        T.check_parameters({"koi_fwm_stat_sig": 3.0})
    with pytest.raises(T.TabularInputError, match="unknown parameter 'koi_fpflag_co'"):
        T.check_parameters({"koi_fpflag_co": 0})
    with pytest.raises(ValueError, match="unknown feature group"):
        T.feature_names(("koi", "pixels"))


def test_guard_checks_the_fitted_model(koi, catalogue):
    from sklearn.ensemble import HistGradientBoostingClassifier

    rows = TB.koi_labels(koi).head(600)
    x = T.build_features(rows, catalogue)
    model = TB.fit_tabular(x, rows["label"], seed=0)
    assert list(model.feature_names_in_) == list(T.FEATURE_NAMES)
    assert not any(T.is_banned(c) for c in model.feature_names_in_)
    with pytest.raises(ValueError, match="not model inputs"):
        TB.fit_tabular(x.assign(ra=rows["ra"]), rows["label"], names=[*T.FEATURE_NAMES, "ra"])
    leaky = HistGradientBoostingClassifier(max_iter=5).fit(x.assign(koi_score=rows["koi_score"]), rows["label"])
    with pytest.raises(ValueError, match="banned column.*koi_score"):
        T.predict_tabular(leaky, x.assign(koi_score=rows["koi_score"]))
    p = T.predict_tabular(model, x)
    assert p.shape == (600,) and np.isfinite(p).all()


def test_imputed_cv_reads_no_missingness(koi):
    small = koi[koi["kepid"] % 8 == 0]
    prepared = TB.koi_table_features(small)
    oof, s = TB.koi_cv(small, n_folds=3, seed=3, n_boot=20, groups=("koi", "dv"), prepared=prepared)
    oof_i, s_i = TB.koi_cv(small, n_folds=3, seed=3, n_boot=20, groups=("koi", "dv"), impute=True, prepared=prepared)
    assert (oof["fold"] == oof_i["fold"]).all() and np.isfinite(oof_i["probability"]).all()
    labelled = prepared[0]
    assert (oof["complete"].to_numpy() == TB.complete_rows(labelled, ("koi", "dv"))).all()
    assert 0 < s["n_complete"] < s["n_kois"] and s["complete_pr_auc"] > 0.9
    # Missing DV values are far more common among false positives (issue 20) ...
    missing = ~oof["complete"]
    assert (oof.loc[missing, "label"] == 0).mean() > (oof["label"] == 0).mean()
    # ... and the same figures with every missing value imputed stay close: the model does not lean on it.
    assert abs(s_i["pr_auc"] - s["pr_auc"]) < 0.02
