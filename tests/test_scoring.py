"""Batch scoring (issue 15): a folder of real stacks mixed with bad files -> CSV rows and vetting sheets.

The model is the session's shared one (conftest.py ``shared_model``: make cv's fusion vetter,
3 folds x 2 epochs on the real benchmark set, registered as ``pixel-cnn@champion`` in a
throwaway store); the CLI runs in a subprocess from another directory; the probabilities
are checked against the session's real ``mlflow models serve`` of the same model.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest


pytestmark = pytest.mark.slow

GOOD = (9967771, 3557341, 10419211, 8240861, 6666233, 2720309)  # benchmark stacks of several sizes
#: bad file name -> (how it is made, a phrase its reason must hold)
BAD = {
    "pixdiff_13261401.npy": ("placeholder", "1 phase bins"),
    "pixdiff_1.npy": ("text", "not an .npy file"),
    "pixdiff_2.npy": ("pickle", "pickle"),
    "pixdiff_3.npy": ("all_nan", "every value is NaN"),
    "pixdiff_4.npy": ("truncated", "truncated"),
    "pixdiff_5.npy": ("tiny", "smaller than 3x3"),
    "pixdiff_6.npy": ("ints", "not floating point"),
    "nested/pixdiff_7.npy": ("zeros", "every value is zero"),
}


@pytest.fixture(scope="module")
def registered(shared_model):
    """The session's shared model (fusion, 3 folds x 2 epochs), registered as pixel-cnn@champion in a fresh store."""
    return shared_model


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory, data_dir):
    """Real stacks (one under a name without kepid, one in a subfolder) mixed with bad files."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "nested").mkdir()
    for kepid in GOOD[:-1]:
        shutil.copyfile(data_dir / "stacks" / f"pixdiff_{kepid}.npy", root / f"pixdiff_{kepid}.npy")
    shutil.copyfile(data_dir / "stacks" / f"pixdiff_{GOOD[-1]}.npy", root / "nested" / "candidate_b.npy")
    good = np.load(data_dir / "stacks" / "pixdiff_9967771.npy")
    for name, (kind, _) in BAD.items():
        path = root / name
        if kind == "placeholder":
            shutil.copyfile(data_dir / "stacks" / name, path)
        elif kind == "text":
            path.write_text("not a stack\n")
        elif kind == "pickle":
            path.write_bytes(pickle.dumps({"stack": good}))
        elif kind == "all_nan":
            np.save(path, np.full((32, 4, 4), np.nan, dtype=np.float32))
        elif kind == "truncated":
            buf = (root / "tmp.npy")
            np.save(buf, good)
            path.write_bytes(buf.read_bytes()[:200])
            buf.unlink()
        elif kind == "tiny":
            np.save(path, np.ones((32, 2, 2), dtype=np.float32))
        elif kind == "ints":
            np.save(path, np.ones((32, 4, 4), dtype=np.int32))
        elif kind == "zeros":
            np.save(path, np.zeros((32, 4, 4), dtype=np.float32))
    return root


@pytest.fixture(scope="module")
def cli_run(registered, mixed_dir, tmp_path_factory):
    """``python -m pixel_cnn.predict`` on the mixed folder and a missing path, from an unrelated directory."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    out, sheets = elsewhere / "out" / "results.csv", elsewhere / "sheets"
    proc = subprocess.run(
        [sys.executable, "-m", "pixel_cnn.predict", str(mixed_dir), str(elsewhere / "missing.npy"),
         "--out", str(out), "--sheets", str(sheets)],
        cwd=elsewhere, env=registered["env"], capture_output=True, text=True, timeout=600)
    table = pd.read_csv(out)
    table["reason"] = table["reason"].fillna("")
    return {"proc": proc, "table": table, "sheets": sheets, "out": out}


def test_every_good_file_scored_every_bad_one_named(cli_run, mixed_dir):
    proc, table = cli_run["proc"], cli_run["table"]
    assert proc.returncode == 1, proc.stderr[-2000:]  # something was skipped
    assert len(table) == len(GOOD) + len(BAD) + 1
    by_file = table.set_index("file")
    scored = by_file[by_file["status"] == "scored"]
    assert sorted(scored.index) == sorted([f"pixdiff_{k}.npy" for k in GOOD[:-1]] + ["candidate_b.npy"])
    assert scored["probability"].between(0, 1).all()
    assert (scored["label"] == np.where(scored["probability"] >= scored["threshold"], "CONFIRMED",
                                        "FALSE POSITIVE")).all()
    assert (scored["reason"] == "").all()
    assert pd.isna(by_file.loc["candidate_b.npy", "kepid"])  # no kepid in that name
    assert by_file.loc["pixdiff_9967771.npy", "kepid"] == 9967771
    for name, (_, needle) in BAD.items():
        row = by_file.loc[Path(name).name]
        assert row["status"] == "skipped" and needle in row["reason"], (name, row["reason"])
        assert pd.isna(row["probability"])
        assert f"{Path(name).name}: {row['reason']}" in proc.stderr
    assert by_file.loc["missing.npy", "reason"] == "no such file or folder"
    # every statistic column is there, in the order of the one function that makes them
    from pixel_cnn.vetter.vetting import STATISTICS_COLUMNS

    # (the model's own columns sit between: a fusion model adds its branches' and the KOI used)
    columns = list(table.columns)
    assert columns[:6] == ["kepid", "file", "status", "probability", "label", "threshold"]
    assert columns[-len(STATISTICS_COLUMNS) - 2:] == ["in_training_set", *STATISTICS_COLUMNS, "reason"]
    # 9967771 is a benchmark star: the model trained on it, so its score is in-sample and marked;
    # a file name without a kepid cannot be matched
    assert by_file.loc["pixdiff_9967771.npy", "in_training_set"] == True  # noqa: E712
    assert pd.isna(by_file.loc["candidate_b.npy", "in_training_set"])
    assert len(proc.stdout.strip().splitlines()) == len(GOOD)


def test_csv_statistics_are_those_of_the_stack(cli_run, data_dir):
    from pixel_cnn.vetter.vetting import vetting_statistics
    from pixel_cnn.io.dataset import load_stack

    table = cli_run["table"].set_index("file")
    for kepid in GOOD[:-1]:
        expected = vetting_statistics(load_stack(data_dir / "stacks" / f"pixdiff_{kepid}.npy")).row()
        got = table.loc[f"pixdiff_{kepid}.npy"]
        for name, value in expected.items():
            if np.isnan(value):
                assert pd.isna(got[name])
            else:
                assert float(got[name]) == pytest.approx(value, rel=1e-12), (kepid, name)


def test_csv_probabilities_equal_the_served_models(cli_run, shared_server, data_dir):
    from pixel_cnn import scoring
    from pixel_cnn.predict import load_koi

    table = cli_run["table"]
    scored = table[table["status"] == "scored"]
    koi = load_koi(None)
    url = shared_server
    # each star with the KOI parameters the CLI looked up for it (none: the stack alone)
    for kepid in GOOD[:-1]:
        stack = np.load(data_dir / "stacks" / f"pixdiff_{kepid}.npy")
        params = scoring.koi_parameters(koi, kepid)[0]
        body = {"inputs": [stack.astype(np.float64).tolist()], **({"params": params} if params else {})}
        r = httpx.post(f"{url}/invocations", json=body, timeout=60)
        assert r.status_code == 200, r.text[:300]
        served = r.json()["predictions"][0]
        row = scored[scored["file"] == f"pixdiff_{kepid}.npy"].iloc[0]
        assert abs(float(row["probability"]) - served["probability"]) < 1e-6
        assert row["label"] == served["label"] and float(row["threshold"]) == pytest.approx(served["threshold"])


def test_a_sheet_per_scored_stack(cli_run):
    import matplotlib.image as mpimg

    from pixel_cnn.drawing.sheet import SHEET_DPI, SHEET_SIZE_IN

    sheets = sorted(p.name for p in cli_run["sheets"].iterdir())
    assert sheets == sorted([f"pixdiff_{k}.png" for k in GOOD[:-1]] + ["candidate_b.png"])
    for name in sheets:
        path = cli_run["sheets"] / name
        pixels = mpimg.imread(path)
        assert pixels.shape[:2] == (round(SHEET_SIZE_IN[1] * SHEET_DPI), round(SHEET_SIZE_IN[0] * SHEET_DPI))
        assert (pixels[..., :3] < 0.95).mean() > 0.05  # not blank
        assert path.stat().st_size < 300_000


def test_sheet_numbers_come_from_the_csv_function(registered, cli_run, data_dir):
    """The sheet drawn by scoring shows the CSV row's numbers (one function makes both)."""
    import matplotlib.pyplot as plt

    from pixel_cnn import scoring
    from pixel_cnn.drawing.sheet import STATISTIC_LABELS, format_statistic, sheet_figure, table_cells
    from pixel_cnn.io.dataset import load_stack
    from pixel_cnn.predict import load_koi
    from pixel_cnn.tracking.registry import load

    mlflow.set_tracking_uri(registered["env"]["MLFLOW_TRACKING_URI"])
    try:
        scorer = scoring.ModelScorer(load("models:/pixel-cnn@champion"), load_koi(None))
    finally:
        mlflow.set_tracking_uri(None)
    table = cli_run["table"].set_index("file")
    path = data_dir / "stacks" / "pixdiff_3557341.npy"
    stack = load_stack(path)
    csv_row = table.loc[path.name]
    prediction = scorer.predict([stack], [3557341]).iloc[0].to_dict()
    attribution, note = scorer.attribution(stack)
    assert attribution.shape == (16, 16) and np.abs(attribution).max() > 0
    fig = sheet_figure(stack, 3557341, prediction, attribution, note)
    try:
        cells = table_cells(fig)
        row = scoring.candidate_row(path, prediction, stack)
        for name in STATISTIC_LABELS:
            csv_value = float(csv_row[name]) if not pd.isna(csv_row[name]) else float("nan")
            assert cells[STATISTIC_LABELS[name]] == [format_statistic(name, csv_value)]
            assert cells[STATISTIC_LABELS[name]] == [format_statistic(name, row[name])]
        assert cells["P(planet)"] == [f"{float(csv_row['probability']):.3f}"]
    finally:
        plt.close(fig)


def test_exit_status_all_scored_and_model_missing(registered, data_dir, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "pixel_cnn.predict", "--quiet",
                         str(data_dir / "stacks" / "pixdiff_9967771.npy")],
                        cwd=tmp_path, env=registered["env"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-m", "pixel_cnn.predict", "--model-uri", "models:/pixel-cnn@nope",
                          str(data_dir / "stacks")], cwd=tmp_path, env=registered["env"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nope" in bad.stderr
    # a sheets folder that cannot be made (a file is in the way): the table is still written, exit 1
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    no_sheets = subprocess.run([sys.executable, "-m", "pixel_cnn.predict", "--quiet", "--out", str(tmp_path / "r.csv"),
                                "--sheets", str(blocker / "sheets"), str(data_dir / "stacks" / "pixdiff_9967771.npy")],
                               cwd=tmp_path, env=registered["env"], capture_output=True, text=True, timeout=300)
    assert no_sheets.returncode == 1, no_sheets.stderr[-2000:]
    assert f"1 vetting sheet(s) could not be written to {blocker / 'sheets'}" in no_sheets.stderr
    assert pd.read_csv(tmp_path / "r.csv")["status"].tolist() == ["scored"]


def test_cv_parent_named_described_and_logs_worst_call_sheets(registered):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(registered["env"]["MLFLOW_TRACKING_URI"])
    run = client.get_run(registered["cv_run"].info.run_id)
    assert run.info.run_name == "cv fusion seed=42 x3 inner=2 dropout=0.3 epochs=2 lr=0.001"
    note = run.data.tags["mlflow.note.content"]
    m = run.data.metrics
    from pixel_cnn.tracking.cv import logged_metric_name

    for key in ("pr_auc_oof", "pr_auc_oof_ci_low", "pr_auc_oof_ci_high", "roc_auc_oof", "roc_auc_oof_ci_low",
                "roc_auc_oof_ci_high", "threshold"):
        assert f"{m[logged_metric_name(key)]:.3f}" in note, key
    assert "average precision" in note
    assert run.data.tags["preset"] == "fusion" and run.data.tags["dataset_digest"]
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "figures/mistakes")}
    worst = pd.read_csv(client.download_artifacts(run.info.run_id, "figures/mistakes/mistakes.csv",
                                                  str(registered["root"])))
    oof = pd.read_csv(client.download_artifacts(run.info.run_id, "oof_predictions.csv", str(registered["root"])))
    oof = oof[oof["repeat"] == 0]
    planets = oof[oof["label"] == 1].nsmallest(4, "probability")["kepid"].tolist()
    fps = oof[oof["label"] == 0].nlargest(4, "probability")["kepid"].tolist()
    assert worst["kepid"].tolist() == planets + fps
    expected = {f"figures/mistakes/planet_{i + 1}_{k}.png" for i, k in enumerate(planets)}
    expected |= {f"figures/mistakes/fp_{i + 1}_{k}.png" for i, k in enumerate(fps)}
    assert expected | {"figures/mistakes/mistakes.csv"} == paths
