"""The fusion vetter (pixel + tabular branches, combiner): cv without leakage, the combiner, what cv logs,
the served endpoint."""

from __future__ import annotations

import json
import re
import subprocess

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pixel_cnn.branches import tabular as koi_branch
from pixel_cnn.tracking.cv import logged_metric_name
from pixel_cnn.branches.pixel import PixelBranch
from pixel_cnn.branches.tabular import TabularBranch
from pixel_cnn.evaluation.cv import run_cv
from pixel_cnn.evaluation.metrics import binary_metrics
from pixel_cnn.io.koi import load_koi_with_dv
from pixel_cnn.scoring import koi_parameters
from pixel_cnn.vetter import tabular
from pixel_cnn.vetter.combiner import Combiner, logit
from pixel_cnn.vetter.networks import get_preset
from pixel_cnn.tracking.registry import description
from tests.support import PROJECT

JSON = {"Content-Type": "application/json"}
#: Every in-process cv here: 1 epoch (the checks compare runs with each other, never a score with a bar).
QUICK = {"epochs": 1}


@pytest.fixture(scope="module")
def koi(data_dir) -> pd.DataFrame:
    return load_koi_with_dv(data_dir / "koi_cumulative.csv")


@pytest.fixture(scope="module")
def table(koi) -> TabularBranch:
    return TabularBranch(koi)


def fusion_branches(table, koi=None):
    return [PixelBranch(get_preset("fusion", **QUICK)), table if koi is None else TabularBranch(koi)]


@pytest.fixture(scope="module")
def fusion_result(real_dataset, table):
    return run_cv(real_dataset, fusion_branches(table), n_folds=3, seed=5, inner_folds=2, vetter="fusion")


BRANCHES = ("pixel", "tabular", "fused")
BY_HAND = Combiner(("pixel", "tabular"), (0.5, 2.0), -1.0)


def test_combiner_formula_by_hand():
    p_pix, p_tab = np.array([0.5, 0.9]), np.array([0.2, 0.7])
    z = 0.5 * np.log(p_pix / (1 - p_pix)) + 2.0 * np.log(p_tab / (1 - p_tab)) - 1.0
    assert np.allclose(BY_HAND.predict([p_pix, p_tab]), 1 / (1 + np.exp(-z)))
    assert np.isfinite(logit([0.0, 1.0])).all()  # clipped, never +-inf
    assert Combiner.from_dict(BY_HAND.to_dict()) == BY_HAND
    assert BY_HAND.to_dict() == {"w_pixel": 0.5, "w_tabular": 2.0, "intercept": -1.0}
    other = Combiner(("pixel", "tabular"), (1.5, 0.0), 1.0)
    assert Combiner.mean([BY_HAND, other]) == Combiner(("pixel", "tabular"), (1.0, 1.0), 0.0)


def test_combiner_fit_weighs_the_informative_branch():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    informative = np.clip(0.5 + 0.4 * (2 * y - 1) + rng.normal(0, 0.1, 400), 0.01, 0.99)
    noise = rng.uniform(0.01, 0.99, 400)
    w_noise, w_informative = Combiner.fit([noise, informative], y, ["pixel", "tabular"]).weights
    assert w_informative > 1.0 and abs(w_noise) < 0.3


def test_combiner_select_keeps_a_calibrated_branch_as_it_is_and_drops_noise():
    """A calibrated branch beside one of pure noise: the branch is kept as it is (nothing fitted), the noise
    gets weight 0; two branches that each see half of the answer are both kept, by a refitted combiner."""
    rng = np.random.default_rng(1)
    truth = rng.beta(0.5, 0.5, 150)  # a calibrated branch: y ~ Bernoulli(truth)
    y = (rng.uniform(size=150) < truth).astype(int)
    noise = rng.uniform(0.01, 0.99, 150)
    combiner, info = Combiner.select([noise, truth], y, ["pixel", "tabular"], seed=3)
    assert combiner == Combiner(("pixel", "tabular"), (0.0, 1.0), 0.0)
    assert np.allclose(combiner.predict([noise, truth]), np.clip(truth, 1e-6, 1 - 1e-6))
    assert info["combiner_uses_pixel"] == 0.0 and info["combiner_uses_tabular"] == 1.0 and info["combiner_refit"] == 0.0
    losses = {k[len("combiner_logloss_"):]: v for k, v in info.items() if k.startswith("combiner_logloss_")}
    assert set(losses) == {"pixel_as_is", "tabular_as_is", "fit_pixel", "fit_tabular", "fit_pixel_tabular"}
    assert losses["tabular_as_is"] == min(losses.values()) and losses["pixel_as_is"] == max(losses.values())
    # each of two branches sees a different half of the targets: a refitted combiner of both wins
    half = rng.integers(0, 2, 150).astype(bool)
    a = np.where(half, truth, rng.uniform(0.3, 0.7, 150))
    b = np.where(~half, truth, rng.uniform(0.3, 0.7, 150))
    both, info = Combiner.select([a, b], y, ["pixel", "tabular"], seed=3)
    assert info["combiner_refit"] == 1.0 and info["combiner_uses_pixel"] == info["combiner_uses_tabular"] == 1.0
    assert both == Combiner.fit([a, b], y, ["pixel", "tabular"]) and min(both.weights) > 0.5
    # same seed, same choice; too few of a class to split: the in-sample fit of both competes with each as is
    assert Combiner.select([a, b], y, ["pixel", "tabular"], seed=3) == (both, info)
    few = np.array([0, 1] + [0] * 10)
    _, info = Combiner.select([noise[:12], truth[:12]], few, ["pixel", "tabular"], seed=3)
    assert {k for k in info if k.startswith("combiner_logloss_")} == {
        "combiner_logloss_pixel_as_is", "combiner_logloss_tabular_as_is", "combiner_logloss_fit_pixel_tabular"}


@pytest.mark.slow
def test_pixel_branch_is_phase2_bit_for_bit(real_dataset, fusion_result):
    """The fusion cv's pixel predictions and thresholds are phase2's run_cv, same seed and folds."""
    base = run_cv(real_dataset, [PixelBranch(get_preset("phase2", **QUICK))], n_folds=3, seed=5, inner_folds=2)
    a = base.oof.sort_values(["repeat", "kepid"]).reset_index(drop=True)
    b = fusion_result.oof.sort_values(["repeat", "kepid"]).reset_index(drop=True)
    assert (a["kepid"] == b["kepid"]).all() and (a["fold"] == b["fold"]).all()
    assert np.array_equal(a["probability"].to_numpy(), b["probability_pixel"].to_numpy())
    assert np.array_equal(a["threshold"].to_numpy(), b["threshold_pixel"].to_numpy())


@pytest.mark.slow
def test_no_validation_star_koi_in_tabular_training(fusion_result, table, koi):
    labelled = koi_branch.koi_labels(koi)
    for fold in fusion_result.folds:
        train = fold.fitted["tabular"].training_kepids
        assert not np.isin(fold.val_kepids, train).any()
        # Independently: every labelled KOI of the other stars is used, none of the validation stars'.
        expected = int((~labelled["kepid"].isin(fold.val_kepids)).sum())
        assert len(train) == expected == fold.extra_metrics["n_tabular_train_kois"]
        assert int(labelled["kepid"].isin(fold.val_kepids).sum()) >= len(fold.val_kepids)


@pytest.mark.slow
def test_validation_stars_dispositions_do_not_move_their_predictions(real_dataset, koi, fusion_result):
    """Flip the KOI-table dispositions of fold 0's validation stars: their fused and tabular
    predictions stay the same (the tabular branch and the combiner never saw them)."""
    val = fusion_result.folds[0].val_kepids
    flip = {"CONFIRMED": "FALSE POSITIVE", "FALSE POSITIVE": "CONFIRMED"}
    changed = koi.copy()
    rows = changed["kepid"].isin(val)
    changed.loc[rows, "koi_disposition"] = changed.loc[rows, "koi_disposition"].map(lambda d: flip.get(d, d))
    assert (changed["koi_disposition"] != koi["koi_disposition"]).sum() >= len(val)
    again = run_cv(real_dataset, fusion_branches(None, changed), n_folds=3, seed=5, inner_folds=2)
    a = fusion_result.oof[fusion_result.oof["fold"] == 0].set_index("kepid").sort_index()
    b = again.oof[again.oof["fold"] == 0].set_index("kepid").sort_index()
    for col in ("probability_tabular", "probability_fused", "threshold_fused"):
        assert np.array_equal(a[col].to_numpy(), b[col].to_numpy()), col
    # ... while the other folds, which trained on those KOIs, do change.
    others = fusion_result.oof["fold"] != 0
    assert not np.array_equal(fusion_result.oof.loc[others, "probability_tabular"].to_numpy(),
                              again.oof.loc[others.to_numpy(), "probability_tabular"].to_numpy())


@pytest.mark.slow
def test_branch_metrics_side_by_side(fusion_result):
    s, oof = fusion_result.summary, fusion_result.oof
    for b in BRANCHES:
        expected = binary_metrics(oof["label"], oof[f"probability_{b}"])
        assert s[f"pr_auc_oof_{b}"] == pytest.approx(expected["pr_auc"])
        assert s[f"roc_auc_oof_{b}"] == pytest.approx(expected["roc_auc"])
        for f in fusion_result.folds:
            assert f"pr_auc_{b}" in f.extra_metrics
    assert s["pr_auc_oof"] == s["pr_auc_oof_fused"]
    assert (oof["probability"] == oof["probability_fused"]).all()
    # Every benchmark star is scored by its first KOI.
    assert oof["tabular_koi"].str.endswith(".01").all()


@pytest.fixture(scope="module")
def fusion_run(shared_model, shared_pyfunc):
    """The session's shared model: `mlflow run . -e cv` of the fusion vetter (3 folds x 2 epochs), registered
    as pixel-cnn@champion in a fresh store; its cv run, the model in process and what it says it is."""
    return {**shared_model, "run": shared_model["cv_run"], "model": shared_pyfunc,
            "vetter": description(shared_pyfunc)}


def _koi_params(koi, kepid) -> dict:
    """What predict/scoring send for a known KOI: its DV-joined row's served parameters (DV diagnostics,
    ra, dec, epoch and uncertainties included)."""
    params, name, _ = koi_parameters(koi, kepid)
    assert name == koi_branch.star_koi(koi, [kepid]).iloc[0]["kepoi_name"]
    return params


@pytest.mark.slow
def test_fusion_cv_run_logs_branches_and_koi_input(fusion_run, table):
    client = MlflowClient(tracking_uri=fusion_run["env"]["MLFLOW_TRACKING_URI"])
    run = fusion_run["run"]
    local = client.download_artifacts(run.info.run_id, "oof_predictions.csv", str(fusion_run["root"]))
    oof = pd.read_csv(local)
    assert {f"probability_{b}" for b in BRANCHES} <= set(oof.columns)
    for b in BRANCHES:  # each branch's pooled OOF scores, recomputed from the logged OOF predictions
        expected = binary_metrics(oof["label"], oof[f"probability_{b}"])
        for m in ("pr_auc", "roc_auc"):
            assert run.data.metrics[f"{m}_oof_{b}"] == pytest.approx(expected[m])
    inputs = {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}
    assert inputs["koi-cumulative"].digest == run.data.tags["koi_table_digest"]
    assert inputs["koi-cumulative"].digest == table.digest == fusion_run["vetter"]["branch_config"]["tabular"][
        "koi_table_digest"]
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(children) == 3
    assert all({"pr_auc_pixel", "pr_auc_tabular", "pr_auc_fused"} <= set(c.data.metrics) for c in children)


@pytest.mark.slow
def test_fusion_model_in_process(fusion_run, real_dataset, koi):
    model, vetter, metrics = fusion_run["model"], fusion_run["vetter"], fusion_run["run"].data.metrics
    assert vetter["vetter"] == "fusion" and vetter["branches"] == ["pixel", "tabular"]
    stack = real_dataset.stacks[9967771][None].astype(np.float32)
    alone = model.predict(stack).iloc[0]
    assert alone["branch"] == "pixel" and alone["tabular_probability"] is None
    assert alone["threshold"] == pytest.approx(vetter["thresholds"]["pixel"])
    assert alone["threshold"] == pytest.approx(metrics[logged_metric_name("threshold_pixel")])  # oof/ since issue 21
    assert alone["probability"] == alone["pixel_probability"]
    params = _koi_params(koi, 9967771)
    fused = model.predict(stack, params=params).iloc[0]
    assert fused["branch"] == "fused" and fused["threshold"] == pytest.approx(metrics["threshold"])
    assert fused["pixel_probability"] == pytest.approx(alone["pixel_probability"])
    # Recompute the fused probability from the parts: the model's combiner on the two branches.
    assert fused["probability"] == pytest.approx(
        float(Combiner.from_dict(vetter["combiner"]).predict([fused["pixel_probability"],
                                                              fused["tabular_probability"]])))
    assert fused["inputs_used"].split(",")[0] == "stack" and "koi_period" in fused["inputs_used"]


@pytest.mark.slow
def test_served_fusion_and_fallback_bodies_over_http(fusion_run, shared_server, real_dataset, koi):
    stack = real_dataset.stacks[9967771].astype(np.float64).tolist()
    params = _koi_params(koi, 9967771)
    expected = fusion_run["model"].predict(np.asarray([stack], dtype=np.float32), params=params).iloc[0]
    url = shared_server

    def post(body):
        return httpx.post(f"{url}/invocations", content=json.dumps(body), headers=JSON, timeout=120)

    old = post({"inputs": [stack]})  # today's body, unchanged
    assert old.status_code == 200, old.text[:300]
    rec = old.json()["predictions"][0]
    assert rec["branch"] == "pixel" and rec["tabular_probability"] is None
    assert rec["probability"] == pytest.approx(rec["pixel_probability"])

    new = post({"inputs": [stack], "params": params})
    assert new.status_code == 200, new.text[:300]
    rec = new.json()["predictions"][0]
    assert rec["branch"] == "fused"
    assert rec["probability"] == pytest.approx(expected["probability"], rel=1e-6)
    assert rec["tabular_probability"] == pytest.approx(expected["tabular_probability"], rel=1e-6)
    assert rec["label"] in ("CONFIRMED", "FALSE POSITIVE") and rec["threshold"] == pytest.approx(expected["threshold"])
    # the answer names the inputs used: DV diagnostics, the context's own ra/dec/epoch, the shipped catalogue
    used = rec["inputs_used"].split(",")
    assert {"stack", "koi_period", "koi_max_mult_ev", "koi_dicco_msky", "ra", "dec", "koi_time0bk",
            "koi_catalogue"} <= set(used), used
    assert set(used) - {"stack", "koi_catalogue"} == set(params)
    vetter = fusion_run["vetter"]
    assert vetter["catalogue_kois"] == len(koi) and "koi_max_mult_ev" in vetter["parameters"]
    # a candidate NOT in the catalogue (moved 0.5 deg on the sky: its own row is not found) still gets its
    # context features from its own values; served and in-process answers agree
    elsewhere = {**params, "ra": params["ra"] + 0.5}
    moved = post({"inputs": [stack], "params": elsewhere})
    assert moved.status_code == 200, moved.text[:300]
    rec = moved.json()["predictions"][0]
    assert "koi_catalogue" in rec["inputs_used"]
    assert rec["tabular_probability"] == pytest.approx(fusion_run["model"].predict(
        np.asarray([stack], dtype=np.float32), params=elsewhere).iloc[0]["tabular_probability"], rel=1e-6)

    partial = post({"inputs": [stack], "params": {"koi_period": params["koi_period"]}})  # one parameter
    assert partial.status_code == 200 and partial.json()["predictions"][0]["inputs_used"] == "stack,koi_period"

    for bad, name in (({"koi_period": -3.0}, "koi_period"), ({"koi_depth": 5e6}, "koi_depth"),
                      ({"koi_srad": 0.0}, "koi_srad")):
        r = post({"inputs": [stack], "params": {**params, **bad}})
        assert r.status_code == 400 and name in r.json()["message"], r.text[:300]
    r = httpx.post(f"{url}/invocations", headers=JSON, timeout=60,
                   content=json.dumps({"inputs": [stack], "params": {"koi_steff": float("nan")}}))
    assert r.status_code == 400 and "koi_steff" in r.json()["message"], r.text[:300]
    r = post({"inputs": [stack], "params": {"koi_impact": "high"}})
    assert r.status_code == 400 and "koi_impact" in r.json()["message"], r.text[:300]
    r = post({"inputs": [stack, stack], "params": params})
    assert r.status_code == 400 and "one star" in r.json()["message"], r.text[:300]
    r = post({"inputs": [stack], "params": {"koi_score": 1.0}})  # an answer column: refused by name (issue 21)
    assert r.status_code == 400 and "unknown parameter 'koi_score'" in r.json()["message"], r.text[:300]
    assert post({"inputs": [stack]}).status_code == 200  # still serving

    # The README's two curl examples, as written, against this server.
    readme = (PROJECT / "README.md").read_text()
    port = url.rsplit(":", 1)[1]
    for marker, branch in (("serve-example", "pixel"), ("serve-fusion-example", "fused")):
        block = re.search(rf"<!-- {marker}:start -->\s*```bash\n(.*?)```", readme, re.S).group(1)
        assert "127.0.0.1:5001" in block
        proc = subprocess.run(["bash", "-c", block.replace("127.0.0.1:5001", f"127.0.0.1:{port}")],
                              cwd=PROJECT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        pred = json.loads(proc.stdout)["predictions"]
        assert len(pred) == 1 and pred[0]["branch"] == branch, proc.stdout[:300]
    assert pred[0]["probability"] == pytest.approx(expected["probability"], rel=1e-6)


@pytest.mark.slow
def test_predict_cli_prints_each_branch(fusion_run, data_dir):
    import sys

    stacks = data_dir / "stacks"
    renamed = fusion_run["root"] / "no_kepid.npy"
    renamed.write_bytes((stacks / "pixdiff_9967771.npy").read_bytes())
    cmd = [sys.executable, "-m", "pixel_cnn.predict", str(stacks / "pixdiff_9967771.npy"), str(renamed)]
    env = {**fusion_run["env"], "PYTHONPATH": str(PROJECT)}
    out = subprocess.run(cmd, env=env, cwd=fusion_run["root"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert "(fused; pixel" in lines[0] and "tabular" in lines[0] and "KOI K01875.01" in lines[0]
    assert lines[1].startswith("no_kepid.npy -> p=") and "pixel only: no kepid in the file name" in lines[1]
    sheets = fusion_run["root"] / "sheets-no-koi"
    alone = subprocess.run(cmd[:4] + ["--no-koi", "--sheets", str(sheets)], env=env, cwd=fusion_run["root"],
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0 and "(pixel only: --no-koi)" in alone.stdout, alone.stderr[-2000:]
    # the sheet of a fusion model's pixel-only answer is drawn (its tabular row says "not used")
    assert [p.name for p in sheets.glob("*.png")] == ["pixdiff_9967771.png"]


@pytest.mark.slow
def test_cv_entry_point_defaults_to_fusion_and_prints_branches(shared_model):
    """`mlflow run . -e cv` with its defaults (preset fusion), short: the branches are printed and logged.

    The session's shared model is that run (no ``preset`` given)."""
    proc, run = shared_model["cv"], shared_model["cv_run"]
    assert "preset" not in proc.args[proc.args.index("cv"):]
    assert "--preset fusion" in proc.stderr + proc.stdout
    assert "cv branches (pooled OOF): pixel PR-AUC" in proc.stdout
    assert run.data.tags["preset"] == "fusion" and "pr_auc_oof_tabular" in run.data.metrics


@pytest.mark.slow
def test_bench_quality_tabular_and_fusion_rows(tracking_store, prepared_dir, monkeypatch):
    """``make bench-quality``'s job with phase2, tabular and fusion: one table on the same folds; the fusion
    cv's pixel branch equals the separately run phase2 row, its tabular branch is the tabular row."""
    from pixel_cnn.jobs.bench import bench_quality
    from pixel_cnn.vetter import networks as models

    for name in ("phase2", "fusion"):
        monkeypatch.setitem(models.PRESETS, name, models.PRESETS[name].replace(epochs=1))
    out = tracking_store / "quality.json"
    bench, table = bench_quality(str(prepared_dir), ("phase2", "tabular", "fusion"), n_folds=3, repeats=1,
                                      inner_folds=2, out=str(out))
    rows = json.loads(out.read_text())["presets"]
    assert list(rows) == ["phase2", "tabular", "fusion"]
    for m in ("pr_auc", "roc_auc", "f1", "brier"):
        assert rows["fusion"]["branch_pixel"][m] == rows["phase2"][m]["mean"]
        assert rows["fusion"]["branch_tabular"][m] == rows["tabular"][m]["mean"]
    assert "| tabular |" in table and "| fusion |" in table
    shares = rows["fusion"]["combiner"]
    assert set(shares) == {"uses_pixel", "uses_tabular", "refit"} and all(0.0 <= v <= 1.0 for v in shares.values())
    assert f"pixel {shares['uses_pixel']:.0%}, tabular {shares['uses_tabular']:.0%}" in table
    assert out.with_suffix(".md").read_text() == f"# Quality benchmark (run {bench['run_id']})\n\n{table}\n"
    run = MlflowClient().get_run(bench["run_id"])
    assert run.data.metrics["tabular.pr_auc_mean"] == pytest.approx(rows["tabular"]["pr_auc"]["mean"])
