"""The tabular branch on ExoMiner's DR25 folds (issue 20): mapping, answer guard, protocols, the bench run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pixel_cnn.branches import dr25 as D
from pixel_cnn.io.dataset import DataError
from pixel_cnn.io.koi import DR25_PATTERN, load_dr25, resolve_dr25_dir
from pixel_cnn.vetter import tabular as T


@pytest.fixture(scope="module")
def dr25_dir():
    return resolve_dr25_dir()


@pytest.fixture(scope="module")
def tces(dr25_dir) -> pd.DataFrame:
    return load_dr25(dr25_dir)


@pytest.fixture(scope="module")
def small(tces) -> pd.DataFrame:
    """About 1,000 real TCEs: every star with target_id % 30 == 0 (whole stars, every fold)."""
    return tces[tces["target_id"] % 30 == 0].reset_index(drop=True)


def test_folds_and_labels(tces):
    assert len(tces) == 30612 and sorted(tces["fold"].unique()) == list(range(10))
    y = D.dr25_labels(tces)
    assert y.sum() == 2291 and (tces["label"] == "PC").sum() == y.sum()
    with pytest.raises(ValueError, match="PC/AFP/NTP"):
        D.dr25_labels(tces.head(3).assign(label="CANDIDATE"))


def test_mapping_reads_no_answer_column(tces):
    D.check_mapping()
    for column in ("label", "koi_disposition", "koi_period", "fpwg_disp_status", "kepoi_name", "koi_comment",
                   "tceid", "target_id", "tce_datalink_dvs"):
        assert D.is_answer(column), column
    with pytest.raises(ValueError, match="answer column.*koi_period"):
        D.check_mapping({**D.TCE_TO_BRANCH, "koi_period": "koi_period"})
    inputs = D.branch_inputs(tces.head(50))
    assert set(inputs.columns) <= set(T.SERVED_PARAMETERS) | {"kepid", "kepoi_name"}
    # -1 stands for a missing uncertainty / SNR in the study's filled table.
    raw = tces.head(2000)
    inputs = D.branch_inputs(raw)
    minus_one = (raw["tce_period_err"] == -1).to_numpy()
    assert minus_one.any() and inputs.loc[minus_one, "koi_period_err1"].isna().all()
    assert (inputs.loc[~minus_one, "koi_period_err1"] == raw.loc[~minus_one, "tce_period_err"]).all()


def test_answer_columns_never_reach_the_model(small):
    features = D.dr25_features(small)
    assert list(features.columns) == list(T.FEATURE_NAMES)
    # Scramble every answer column (labels, KOI-table copies, FPWG, names, comments): features unchanged.
    rng = np.random.default_rng(0)
    scrambled = small.copy()
    for column in [c for c in small.columns if D.is_answer(c) and c not in ("tceid", "target_id")]:
        scrambled[column] = rng.permutation(scrambled[column].to_numpy())
    pd.testing.assert_frame_equal(features, D.dr25_features(scrambled))
    # The KOI-table copies exist only for TCEs that became KOIs: reading them would leak the label.
    assert small.loc[small["label"] == "NTP", "koi_period"].isna().mean() > 0.9
    assert features["koi_period"].notna().all()


def test_protocol_splits_and_features(small):
    ex = D.dr25_splits(small, "exominer")
    fold = small["fold"].to_numpy()
    assert len(ex) == 10 and all((fold[te] == fold[te][0]).all() and not (fold[tr] == fold[te][0]).any()
                                 for tr, te in ex)  # test = one of ExoMiner's folds, train = the nine others
    star = small["target_id"].to_numpy()
    grouped = D.dr25_splits(small, "grouped", seed=1)
    assert all(not np.intersect1d(star[tr], star[te]).size for tr, te in grouped)  # a star never on both sides
    assert sorted(np.concatenate([te for _, te in grouped]).tolist()) == list(range(len(small)))
    with pytest.raises(ValueError, match="unknown fold scheme"):
        D.dr25_splits(small, "random")


@pytest.mark.slow
def test_protocols_on_real_tces(small):
    features = D.dr25_features(small)
    oof, s = D.dr25_cv(small, features, "exominer_folds", seed=1, n_boot=20)
    assert len(oof) == len(small) and np.isfinite(oof["probability"]).all()
    assert (oof["fold"].to_numpy() == small["fold"].to_numpy()).all()  # ExoMiner's own folds
    assert s["gap_recall_at_p99"] == pytest.approx(s["recall_at_p99"] - 0.936)
    assert s["roc_auc"] > 0.9
    _, s_again = D.dr25_cv(small, features, "exominer_folds", seed=1, n_boot=20)
    assert s_again == s  # seeded: same data and seed, same figures
    # Without the period features (the study replaced confirmed KOIs' periods): fewer inputs, a prediction.
    oof_np, s_np = D.dr25_cv(small, features, "exominer_folds_no_period", seed=1, n_boot=20)
    assert s_np["n_features"] == s["n_features"] - len(T.PERIOD_FEATURES) and np.isfinite(oof_np["probability"]).all()


def test_bad_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="dr25_tce_exominer_fold0.csv"):
        resolve_dr25_dir(tmp_path)


@pytest.mark.slow
def test_bench_dr25_is_its_own_run(tracking_store, dr25_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    from pixel_cnn.jobs.bench import bench_dr25

    # Real rows, fewer of them: the first 150 TCEs of each of ExoMiner's ten fold files.
    sub = tmp_path / "dr25"
    sub.mkdir()
    for k in range(10):
        name = DR25_PATTERN.format(k=k)
        pd.read_csv(dr25_dir / name).head(150).to_csv(sub / name, index=False)
    out = tmp_path / "dr25.json"
    s = bench_dr25(str(sub), seed=0, n_boot=10, out=str(out), protocols=("exominer_folds", "grouped_by_star"))
    run = MlflowClient().get_run(s["run_id"])
    assert run.data.metrics["recall_at_p99"] == pytest.approx(s["recall_at_p99"])
    assert run.data.metrics["grouped_by_star/pr_auc"] == pytest.approx(s["protocols"]["grouped_by_star"]["pr_auc"])
    assert run.data.metrics["recall_at_precision_99"] == pytest.approx(s["recall_at_p99"])  # mlflow.models.evaluate
    assert s["evaluate"]["average_precision_scores"] == pytest.approx(s["pr_auc"])
    inputs = {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}
    schema = json.loads(inputs["dr25-tce-exominer"].schema)["mlflow_colspec"]
    logged = {c["name"] for c in schema}
    assert logged <= set(T.SERVED_PARAMETERS) | {"kepid", "label", "fold"}  # branch names only, no DR25 answer
    assert not any(c.startswith(("fpwg_", "koi_disposition", "koi_pdisposition", "koi_score", "koi_fpflag_"))
                   or c in ("koi_comment", "kepler_name", "kepoi_name", "tceid") for c in logged)
    saved = json.loads(out.read_text())
    assert saved["run_id"] == s["run_id"] and saved["summary"]["n_tces"] == 1500
    artifacts = {a.path for a in MlflowClient().list_artifacts(s["run_id"])}
    assert {"oof_exominer_folds.csv", "oof_grouped_by_star.csv"} <= artifacts
