"""tracking/: what a tracked cv logs to a real MLflow store; runs of two stores in one process."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_cv_tracked_logs_protocol_artifacts(shared_model):
    """What the session's shared cv (`mlflow run . -e cv`, fusion, 3 folds) logged: scores with intervals,
    per-fold positive rates, the reliability figure, a child run per fold with its attributions."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from pixel_cnn.evaluation.metrics import binary_metrics

    client = MlflowClient(tracking_uri=shared_model["env"]["MLFLOW_TRACKING_URI"])
    run_id = shared_model["cv_run"].info.run_id
    parent = client.get_run(run_id)
    from pixel_cnn.tracking.cv import logged_metric_name

    for key in ("pr_auc_oof", "pr_auc_oof_ci_low", "pr_auc_oof_ci_high", "brier_oof", "f1_oof", "threshold",
                "val_positive_rate_r0_f0", "val_positive_rate_r0_f1", "val_positive_rate_r0_f2"):
        assert np.isfinite(parent.data.metrics[logged_metric_name(key)]), key
    oof = pd.read_csv(client.download_artifacts(run_id, "oof_predictions.csv", str(shared_model["root"])))
    assert parent.data.metrics["pr_auc_oof"] == pytest.approx(binary_metrics(oof["label"], oof["probability"])["pr_auc"])
    figures = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert "figures/reliability.png" in figures
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 3
    for child in children:
        paths = {a.path for a in client.list_artifacts(child.info.run_id, "figures")}
        assert "figures/attributions.png" in paths
        assert 0 <= child.data.metrics["threshold"] <= 1


def test_regression_experiment_id_does_not_leak_between_stores(tmp_path, monkeypatch):
    """Two jobs in one process, two stores: the second must not reuse the first's experiment id."""
    import mlflow

    from pixel_cnn.tracking import runs as tracking

    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # ./mlruns of these stores lands here, not in the checkout
    ids = []
    for name in ("a", "b"):
        uri = f"sqlite:///{tmp_path / name}.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.create_experiment(f"other-{name}") if name == "b" else None  # shift ids in store b
        with tracking.job_run("pixel-cnn-test", "job") as run_id:
            ids.append(mlflow.get_run(run_id).info.experiment_id)
        assert mlflow.get_experiment(ids[-1]).name == "pixel-cnn-test"
    mlflow.set_tracking_uri(None)
    assert ids[0] != ids[1]
