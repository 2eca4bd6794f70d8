"""End to end on the real data: mlflow run prep + cv, registry, load elsewhere, serve over HTTP.

The model is the session's shared one (``shared_model`` in conftest.py: `mlflow run . -e prep` then
`mlflow run . -e cv -P register=true` with make cv's default vetter, fusion, kept short), served once
for the session (``shared_server``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest

from tests.support import PROJECT, SHARED_CV

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e2e(shared_model):
    """prep + a short registered cv in a fresh store, through `mlflow run` (the session's shared model)."""
    return shared_model


@pytest.fixture(scope="module")
def client(e2e):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=e2e["env"]["MLFLOW_TRACKING_URI"])


def _runs(client, entry):
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`mlflow.project.entryPoint` = '{entry}'",
    )
    assert len(runs) == 1
    return runs[0]


def test_prep_run_logged_dataset_counts_and_skips(e2e, client):
    run = _runs(client, "prep")
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert (m["n_targets"], m["n_confirmed"], m["n_false_positive"], m["n_skipped"]) == (97, 43, 54, 37)
    assert len(run.inputs.dataset_inputs) == 1
    assert run.inputs.dataset_inputs[0].dataset.digest == run.data.tags["dataset_digest"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "dataset")}
    assert {"dataset/manifest.csv", "dataset/skipped.csv", "dataset/stacks.npz"} <= artifacts
    assert "pixdiff_13261401.npy" in e2e["prep"].stdout  # every skipped file reported


def test_cv_parent_and_fold_runs(e2e, client):
    parent = _runs(client, "cv")
    prep = _runs(client, "prep")
    assert parent.info.status == "FINISHED"
    # `mlflow run` without --run-name: named after what it is, headline figures in the description
    assert parent.info.run_name == "cv fusion seed=42 x3 inner=2 dropout=0.3 epochs=2 lr=0.001"
    assert f"{parent.data.metrics['pr_auc_oof']:.3f}" in parent.data.tags["mlflow.note.content"]
    assert parent.data.tags["prep_run_id"] == prep.info.run_id
    assert parent.data.tags["dataset_digest"] == prep.data.tags["dataset_digest"]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == SHARED_CV["n_folds"]
    for child in children:
        assert {"pr_auc", "roc_auc", "accuracy", "f1", "brier"} <= set(child.data.metrics)
        history = client.get_metric_history(child.info.run_id, "train_loss")
        assert [h.step for h in history] == [0, 1]
        assert len(client.get_metric_history(child.info.run_id, "val_loss")) == 2
        paths = {a.path for a in client.list_artifacts(child.info.run_id, "figures")}
        assert "figures/attributions.png" in paths
        model = {a.path for a in client.list_artifacts(child.info.run_id, "model")}
        assert model == {"model/config.json", "model/weights.pt"}
        assert 0 < child.data.metrics["threshold"] < 1
        assert child.data.params["model.lr"] == "0.001" and child.data.params["model.epochs"] == "2"
    from pixel_cnn.tracking.cv import logged_metric_name

    for name in ("pr_auc", "roc_auc", "accuracy", "f1", "brier"):
        for suffix in ("_mean", "_std", "_oof"):
            assert logged_metric_name(name + suffix) in parent.data.metrics
    assert 0 < parent.data.metrics["threshold"] < 1
    # parameters given on the command line are logged once, as given
    assert parent.data.params["lr"] == SHARED_CV["lr"] == "0.0010" and parent.data.params["dropout"] == "0.30"
    assert parent.data.params["model.lr"] == "0.001" and parent.data.params["model.dropout"] == "0.3"
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"oof_predictions.csv", "fold_assignment.csv", "config.json", "figures"} <= top
    oof = client.download_artifacts(parent.info.run_id, "oof_predictions.csv", str(e2e["root"]))
    import pandas as pd

    oof = pd.read_csv(oof)
    assert list(oof.columns)[:6] == ["kepid", "label", "repeat", "fold", "probability", "threshold"]
    assert len(oof) == 97 and oof["kepid"].is_unique
    folds = oof.groupby("kepid")["fold"].nunique()
    assert (folds == 1).all()


def test_registered_champion_loads_from_another_directory(e2e, tmp_path):
    script = (
        "import sys, json, numpy as np, mlflow\n"
        "m = mlflow.pyfunc.load_model('models:/pixel-cnn@champion')\n"
        "s = np.load(sys.argv[1]).astype(np.float32)\n"
        "out = m.predict(s[None])\n"
        "served = sys.modules['pixel_cnn_vetter']\n"  # the vetter's code as the model ships it
        "print(json.dumps({'file': served.__file__, 'p': float(out['probability'][0]), 'label': out['label'][0]}))\n"
    )
    from pixel_cnn.io.dataset import resolve_data_dir

    stack = resolve_data_dir() / "stacks" / "pixdiff_9967771.npy"
    proc = subprocess.run([sys.executable, "-c", script, str(stack)], cwd=tmp_path, env=e2e["env"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert str(PROJECT) not in out["file"]  # the package shipped inside the model was used
    assert 0 <= out["p"] <= 1 and out["label"] in ("CONFIRMED", "FALSE POSITIVE")


def test_predict_cli(e2e, data_dir):
    files = [data_dir / "stacks" / "pixdiff_9967771.npy", data_dir / "stacks" / "pixdiff_13261401.npy"]
    proc = subprocess.run([sys.executable, "-m", "pixel_cnn.predict", *map(str, files)], cwd=PROJECT,
                          env=e2e["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1  # one file could not be scored
    # (what answered follows in brackets: tests/test_fusion.py checks it)
    assert re.fullmatch(r"pixdiff_9967771\.npy -> p=[01]\.\d\d (CONFIRMED|FALSE POSITIVE)( \(.*\))?", proc.stdout.strip())
    assert "pixdiff_13261401.npy: 1 phase bins" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "pixel_cnn.predict", "--model-uri", "models:/pixel-cnn@nope",
                          str(files[0])], cwd=PROJECT, env=e2e["env"], capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


def test_served_model_answers_every_real_stack(server, real_dataset):
    by_shape = {}
    for kepid, stack in real_dataset.stacks.items():
        by_shape.setdefault(stack.shape, []).append(stack)
    for shape, stacks in by_shape.items():
        body = json.dumps({"inputs": [s.astype(np.float64).tolist() for s in stacks]})
        r = httpx.post(f"{server}/invocations", content=body, headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 200, (shape, r.text[:500])
        preds = r.json()["predictions"]
        assert len(preds) == len(stacks)
        for p in preds:
            assert {"probability", "label", "threshold"} <= set(p)
            assert p.get("branch", "pixel") == "pixel"  # no KOI parameters: the pixel branch answers
            assert p["label"] == ("CONFIRMED" if p["probability"] >= p["threshold"] else "FALSE POSITIVE")


# Served probabilities against in-process ones, bad bodies, the size limit: tests/test_hardening_serving.py;
# the README's curl examples: tests/test_fusion.py. Here only what those do not send.
@pytest.mark.parametrize("body,needle", [
    ({"inputs": []}, ""),
])
def test_bad_bodies_get_400_and_server_keeps_serving(server, body, needle, real_dataset):
    r = httpx.post(f"{server}/invocations", json=body, timeout=60)
    assert r.status_code == 400, r.text[:300]
    assert needle in r.json()["message"]
    ok = httpx.post(f"{server}/invocations", json={"inputs": [real_dataset.stacks[9967771].tolist()]}, timeout=60)
    assert ok.status_code == 200


def test_all_nan_body_gets_400(server):
    body = '{"inputs": [' + json.dumps(np.zeros((32, 4, 4)).tolist()).replace("0.0", "NaN") + "]}"
    r = httpx.post(f"{server}/invocations", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 400 and "NaN" in r.json()["message"]
