"""The tabular branch (issue 14): allow-list, banned-column guard, labels, per-star KOI rule, KOI-wide cv."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from pixel_cnn.vetter import tabular as T
from pixel_cnn.branches import tabular as TB
from pixel_cnn.io.dataset import load_koi_table


@pytest.fixture(scope="module")
def koi(data_dir) -> pd.DataFrame:
    return load_koi_table(data_dir / "koi_cumulative.csv")


def test_allow_list_has_units_and_no_banned_name():
    for name, (desc, low, high) in T.ALLOWED_INPUTS.items():
        assert name.startswith("koi_") and "[" in desc and low < high
        assert not T.is_banned(name)
    for name in ("koi_disposition", "koi_pdisposition", "koi_score", "koi_fpflag_nt", "koi_fpflag_ss",
                 "koi_fpflag_co", "koi_fpflag_ec", "kepler_name", "kepoi_name", "kepid",
                 "koi_tce_delivname", "koi_time0bk", "koi_time0bk_err1", "ra", "dec"):
        assert T.is_banned(name), name
    assert len(set(T.FEATURE_NAMES)) == len(T.FEATURE_NAMES) == (
        len(T.ALLOWED_INPUTS) + len(T.DERIVED_FEATURES) + len(T.UNCERTAINTY_FEATURES) + len(T.CONTEXT_FEATURES))


def test_banned_columns_never_reach_the_model(koi):
    labelled = TB.koi_labels(koi)
    # Inject a column that would give the answer away, plus every banned column of the table.
    leaky = labelled.assign(koi_fpflag_leak=1 - labelled["label"], koi_score=labelled["label"].astype(float))
    banned_present = [c for c in leaky.columns if T.is_banned(c)]
    assert {"koi_disposition", "koi_score", "koi_fpflag_co", "kepid", "ra", "koi_fpflag_leak"} <= set(banned_present)
    features = T.build_features(leaky)
    assert list(features.columns) == list(T.FEATURE_NAMES)
    assert not set(features.columns) & set(banned_present)
    # The features do not depend on the banned columns at all.
    pd.testing.assert_frame_equal(features, T.build_features(labelled.drop(columns=banned_present, errors="ignore")))
    model = TB.fit_tabular(features.iloc[:2000], labelled["label"].iloc[:2000], seed=0)
    assert list(model.feature_names_in_) == list(T.FEATURE_NAMES)
    assert not any(T.is_banned(c) for c in model.feature_names_in_)
    # A frame carrying a banned column is refused by fit_tabular.
    with pytest.raises(ValueError, match="exactly"):
        TB.fit_tabular(features.assign(koi_score=1.0).iloc[:100], labelled["label"].iloc[:100])


def test_labels_from_disposition_only(koi):
    labelled = TB.koi_labels(koi)
    counts = koi["koi_disposition"].value_counts()
    assert len(labelled) == counts["CONFIRMED"] + counts["FALSE POSITIVE"]
    assert "CANDIDATE" not in set(labelled["koi_disposition"])
    assert (labelled["label"] == (labelled["koi_disposition"] == "CONFIRMED")).all()
    # koi_pdisposition says CANDIDATE for many confirmed planets: it is not what labels read.
    assert ((labelled["koi_pdisposition"] == "CANDIDATE") & (labelled["label"] == 1)).any()


def test_star_koi_rule_on_a_real_multi_koi_star(koi):
    # Star 3231341 hosts K01102.01-.04; the table lists .02 before .01.
    rows = koi[koi["kepid"] == 3231341]
    assert len(rows) >= 2 and rows["kepoi_name"].iloc[0] != "K01102.01"
    first = TB.star_koi(koi, [3231341])
    assert len(first) == 1 and first["kepoi_name"].iloc[0] == "K01102.01"
    # Independent check over every multi-KOI star: the KOI with the smallest (number, suffix).
    all_first = TB.star_koi(koi).set_index("kepid")["kepoi_name"]
    multi = koi.groupby("kepid").filter(lambda g: len(g) > 1)
    assert multi["kepid"].nunique() > 100
    for kepid, g in list(multi.groupby("kepid"))[:300]:
        expected = min(g["kepoi_name"], key=lambda n: (int(n[1:6]), int(n.split(".")[1])))
        assert all_first[kepid] == expected
    # The rule does not look at the label: same KOI when the dispositions are shuffled.
    shuffled = koi.assign(koi_disposition=np.random.default_rng(0).permutation(koi["koi_disposition"].to_numpy()))
    assert (TB.star_koi(shuffled)["kepoi_name"].to_numpy() == all_first.to_numpy()).all()


def test_koi_number_parses_and_refuses():
    assert TB.koi_number("K00752.01") == (752, 1)
    assert TB.koi_number("K01102.10") == (1102, 10)
    with pytest.raises(ValueError, match="KOI name"):
        TB.koi_number("Kepler-227 b")


def test_derived_features_by_hand():
    # The Sun-Earth system: P = 365.25 d, R* = 1 R_sun, log g = 4.438, Rp = 1 R_earth, depth = k^2 ppm.
    g_sun = 6.67430e-8 * 1.98841e33 / 6.957e10**2
    k = 6.3781e8 / 6.957e10
    row = pd.DataFrame({"koi_period": [365.25], "koi_srad": [1.0], "koi_slogg": [math.log10(g_sun)],
                        "koi_prad": [1.0], "koi_depth": [k**2 * 1e6], "koi_duration": [13.0]})
    f = T.build_features(row).iloc[0]
    assert f["a_over_rstar"] == pytest.approx(215.0, rel=0.01)  # 1 au / R_sun = 215.03
    expected_h = 365.25 * 24 / math.pi * math.asin(1 / 215.03)
    assert expected_h == pytest.approx(12.97, rel=0.01)  # the Earth's central transit lasts ~13 h
    assert f["duration_ratio"] == pytest.approx(13.0 / expected_h, rel=0.01)
    assert f["radius_ratio"] == pytest.approx(k)
    assert f["depth_over_k2"] == pytest.approx(1.0)
    # Missing inputs give NaN, never an error.
    assert T.build_features(pd.DataFrame({"koi_period": [1.0]})).iloc[0].drop("koi_period").isna().all()


@pytest.mark.parametrize("name,value,match", [
    ("koi_period", -3.0, "koi_period .* out of physical range"),
    ("koi_depth", 2e6, "koi_depth .* out of physical range"),
    ("koi_srad", 0.0, "koi_srad .* out of physical range"),
    ("koi_steff", float("nan"), "koi_steff: nan is not a finite number"),
    ("koi_prad", float("inf"), "koi_prad: inf is not a finite number"),
    ("koi_impact", "0.3", "koi_impact: '0.3' is not a number"),
    ("koi_score", 0.9, "unknown parameter 'koi_score'"),
])
def test_check_parameters_names_the_bad_one(name, value, match):
    with pytest.raises(T.TabularInputError, match=match):
        T.check_parameters({"koi_period": 9.48, name: value})


def test_check_parameters_keeps_good_values():
    assert T.check_parameters({"koi_period": 9, "koi_depth": None, "koi_impact": 0.0}) == {
        "koi_period": 9.0, "koi_impact": 0.0}


def test_recall_at_precision_by_hand():
    y = np.array([1, 1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    assert TB.recall_at_precision(y, p, 0.99) == pytest.approx(2 / 3)  # top 2 are both planets
    assert TB.recall_at_precision(y, p, 0.75) == pytest.approx(1.0)    # top 4: 3 planets, precision 0.75
    assert TB.recall_at_precision(np.array([0, 1]), np.array([0.9, 0.1]), 0.99) == 0.0


def test_koi_cv_grouped_and_deterministic(koi):
    small = koi[koi["kepid"] % 4 == 0]  # a quarter of the stars: quick
    prepared = TB.koi_table_features(small)  # the context once for both runs
    oof, summary = TB.koi_cv(small, n_folds=3, seed=1, n_boot=50, prepared=prepared)
    labelled = TB.koi_labels(small)
    assert len(oof) == len(labelled) == summary["n_kois"]
    assert (oof.groupby("kepid")["fold"].nunique() == 1).all()  # every star in one fold
    assert summary["pr_auc"] == pytest.approx(average_precision_score(oof["label"], oof["probability"]))
    for name in ("pr_auc", "roc_auc"):
        assert summary[f"{name}_ci_low"] <= summary[name] <= summary[f"{name}_ci_high"]
    for name in TB.SCORES:
        assert 0 <= summary[f"{name}_ci_low"] <= summary[f"{name}_ci_high"] <= 1
    oof2, summary2 = TB.koi_cv(small, n_folds=3, seed=1, n_boot=50, prepared=TB.koi_table_features(small))
    assert summary2 == summary
    assert summary["roc_auc"] > 0.9  # the transit fit alone separates planets from false positives well


@pytest.mark.slow
def test_bench_tabular_is_its_own_run(tracking_store, data_dir):
    import json

    from mlflow.tracking import MlflowClient

    from pixel_cnn.jobs.bench import bench_tabular

    out = tracking_store / "tabular.json"
    s = bench_tabular(str(data_dir), n_folds=5, seed=42, n_boot=20, out=str(out), variants=("koi", "koi_dv_context"))
    run = MlflowClient().get_run(s["run_id"])
    for name in ("pr_auc", "roc_auc", "recall_at_p99", "recall_at_p95"):
        assert run.data.metrics[name] == pytest.approx(s[name])
        assert run.data.metrics[f"{name}_ci_low"] <= run.data.metrics[f"{name}_ci_high"]
    inputs = {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}
    from pixel_cnn.io.koi import load_koi_with_dv

    koi = load_koi_with_dv(data_dir)  # the KOI table joined with its DV diagnostics (issue 20)
    assert inputs["koi-cumulative"].digest == TB.table_digest(TB.training_table(koi)) == s["koi_table_digest"]
    assert s["n_kois"] == len(TB.koi_labels(koi))
    saved = json.loads(out.read_text())
    assert saved["summary"]["pr_auc"] == s["pr_auc"] and saved["run_id"] == s["run_id"]
    # Each input group is its own set of metrics; the headline also through mlflow.models.evaluate.
    assert run.data.metrics["koi/pr_auc"] == pytest.approx(saved["variants"]["koi"]["pr_auc"])
    assert run.data.metrics["recall_at_precision_99"] == pytest.approx(s["recall_at_p99"])
    assert "complete_recall_at_p99" in s and s["n_complete"] < s["n_kois"]
