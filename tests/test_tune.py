"""Tuning: search space, seeded/resumable studies, MLflow structure, workers, promote.

Real data (the shared benchmark set), real sqlite Optuna storages and MLflow
stores under pytest's tmp dir, real ``mlflow run`` / entry point / worker processes.
Studies are tiny (2 folds, 1-2 epochs); trainings run with one torch thread
(``OMP_NUM_THREADS=1`` in subprocesses, ``torch.set_num_threads(1)`` in this
process) so that a busy 2-core machine is not oversubscribed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pixel_cnn.branches.pixel import PixelBranch
from pixel_cnn.evaluation.cv import run_cv
from pixel_cnn.vetter.networks import get_preset
from pixel_cnn.vetter.representation import build_inputs
from pixel_cnn.search.storage import StorageError, redact, resolve_storage
from pixel_cnn.search.tuning import (
    OBJECTIVE,
    Objective,
    TuneConfig,
    TuneError,
    TuneHooks,
    load_study,
    n_finished,
    open_study,
    optimize,
    study_inputs,
    suggest_params,
)
from tests.support import PROJECT, VENV_BIN, store_env

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRIAL_PARAMS = {"dropout", "lr", "weight_decay", "base_channels", "batch_size", "epochs"}


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env(root):
    return {**store_env(root), **ONE_THREAD}


def _trial_rows(study):
    return [(t.number, t.state.name, tuple(sorted(t.params.items())), t.value) for t in study.trials]


def run_study(config, dataset):
    """Open (or resume) the study and run ``config.n_trials`` more trials in this process, no MLflow.

    Returns ``(study, trials before)``: what ``tune`` does with one worker, minus the tracking.
    """
    study = open_study(config, dataset)
    n_before = len(study.trials)
    optimize(config, dataset, study_inputs(config, dataset), n_finished(study) + config.n_trials)
    return load_study(config), n_before


def _children(client, parent_id):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)


# ---------------------------------------------------------------- search space, presets, MLproject


def test_seed_preset_lies_in_the_search_space():
    seed = {"dropout": 0.3, "lr": 3e-4, "weight_decay": 5e-4, "base_channels": 16, "batch_size": 32, "epochs": 40}
    params = suggest_params(optuna.trial.FixedTrial(seed), max_epochs=40)
    assert params == seed
    assert get_preset("seed", **params) == get_preset("seed")


def test_search_space_bounds_follow_max_epochs():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        p = suggest_params(trial, max_epochs=8)
        assert set(p) == TRIAL_PARAMS
        assert 2 <= p["epochs"] <= 8 and 0 <= p["dropout"] <= 0.6 and 1e-4 <= p["lr"] <= 3e-3
        get_preset("seed", **p)  # every sample is a valid preset
        study.tell(trial, 0.0)
    with pytest.raises(TuneError, match="max_epochs"):
        suggest_params(optuna.trial.FixedTrial({}), max_epochs=0)


def test_base_channels_override_keeps_seed_default():
    assert get_preset("seed").channels == (16, 32, 64)
    assert get_preset("seed", base_channels=8).channels == (8, 16, 32)
    assert get_preset("seed", base_channels=16) == get_preset("seed")
    with pytest.raises(ValueError, match="base_channels"):
        get_preset("seed", base_channels=0)
    with pytest.raises(ValueError, match="not both"):
        get_preset("seed", base_channels=8, channels=(8, 16, 32))


@pytest.mark.parametrize("entry", ["cv", "tune"])
def test_mlproject_parameters_all_used(entry):
    spec = yaml.safe_load((PROJECT / "MLproject").read_text())["entry_points"][entry]
    used = set(re.findall(r"\{(\w+)\}", spec["command"]))
    assert used == set(spec["parameters"])


def test_tune_config_errors_name_the_field():
    for bad, field in [(dict(n_trials=0), "n_trials"), (dict(n_workers=0), "n_workers"),
                       (dict(pruner="best"), "pruner"), (dict(timeout=-1), "timeout"),
                       (dict(n_folds=1), "n_folds")]:
        with pytest.raises(TuneError, match=field):
            TuneConfig(**bad).check()
    with pytest.raises(StorageError, match="SQLAlchemy URL"):
        resolve_storage("not a url")
    assert resolve_storage("postgresql://u:secret@db.example/optuna").startswith("postgresql://")
    assert "secret" not in redact("postgresql://u:secret@db.example/optuna")


# ---------------------------------------------------------------- cv hook, seeding, resume


def test_run_cv_with_prebuilt_inputs_gives_the_same_result(real_dataset, one_thread):
    preset = get_preset("seed", epochs=1)
    x = build_inputs(real_dataset.stack_list(), preset.representation, preset.image_size)
    a = run_cv(real_dataset, [PixelBranch(preset)], n_folds=2, seed=3)
    b = run_cv(real_dataset, [PixelBranch(preset, inputs=x)], n_folds=2, seed=3)
    np.testing.assert_array_equal(a.oof["probability"], b.oof["probability"])
    assert a.summary == b.summary
    with pytest.raises(ValueError, match="inputs have shape"):
        run_cv(real_dataset, [PixelBranch(preset, inputs=x[:10])], n_folds=2)


def test_same_seed_same_trials_and_resume_continues_the_study(tmp_path, real_dataset, one_thread):
    base = dict(n_folds=2, max_epochs=1, pruner="none", seed=7)
    one_go, _ = run_study(TuneConfig(n_trials=3, storage=f"sqlite:///{tmp_path / 'a.db'}", **base), real_dataset)
    b = f"sqlite:///{tmp_path / 'b.db'}"
    run_study(TuneConfig(n_trials=2, storage=b, **base), real_dataset)
    resumed, n_before = run_study(TuneConfig(n_trials=1, storage=b, **base), real_dataset)
    assert n_before == 2
    assert [t.number for t in resumed.trials] == [0, 1, 2]
    assert len({tuple(sorted(t.params.items())) for t in resumed.trials}) == 3  # nothing repeated
    # Same seed, empty storage -> same trials; 2 + 1 resumed == 3 in one go.
    assert _trial_rows(resumed) == _trial_rows(one_go)
    with pytest.raises(TuneError, match="n_folds=2.*n_folds=3"):
        run_study(TuneConfig(n_trials=1, storage=b, **{**base, "n_folds": 3}), real_dataset)


def test_objective_is_cvs_pooled_oof_pr_auc_and_pruning_sees_the_running_pooled_value(real_dataset, one_thread):
    from pixel_cnn.branches.vetters import get_vetter

    class Record(TuneHooks):
        def __init__(self):
            self.folds = []

        def fold_end(self, trial, step, metrics, running_pr_auc_oof):
            self.folds.append((step, metrics["pr_auc"], running_pr_auc_oof))

    config = TuneConfig(preset="seed", n_folds=2, max_epochs=1, seed=5, storage="sqlite:///:memory:")
    inputs = study_inputs(config, real_dataset)
    hooks = Record()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(Objective(real_dataset, inputs, config, hooks), n_trials=1)
    trial = study.trials[0]
    # The same cv as the `cv` entry point runs with these params: its headline is the objective.
    result = run_cv(real_dataset, [PixelBranch(get_vetter("seed").pixel_preset(**trial.params), inputs=inputs)],
                    n_folds=2, seed=5, inner_folds=0)
    assert OBJECTIVE == "pr_auc_oof"
    assert trial.value == pytest.approx(result.summary["pr_auc_oof"], abs=1e-12)
    assert abs(trial.value - result.summary["pr_auc_mean"]) > 1e-9  # not the mean of the fold PR-AUCs
    assert trial.user_attrs["pr_auc_mean"] == pytest.approx(result.summary["pr_auc_mean"], abs=1e-12)
    # What the pruner saw: after fold 0 that fold's PR-AUC; after the last fold the pooled value.
    assert [step for step, _, _ in hooks.folds] == [0, 1]
    assert hooks.folds[0][2] == pytest.approx(hooks.folds[0][1], abs=1e-12)
    assert hooks.folds[-1][2] == pytest.approx(trial.value, abs=1e-12)
    assert trial.intermediate_values == {step: running for step, _, running in hooks.folds}


def test_mismatched_or_old_objective_study_is_refused_before_any_run(tracking_store, prepared_dir, real_dataset):
    from pixel_cnn.jobs.tune import tune

    storage = f"sqlite:///{tracking_store / 'optuna.db'}"
    attrs = {"dataset_digest": real_dataset.digest, "preset": "phase2", "n_folds": 2, "seed": 42}
    # A study as the earlier version made it (objective: the mean of the fold PR-AUCs), one made on other
    # data, and one of this version with 2 folds.
    for name, extra in (("old", {"objective": "pr_auc_mean"}), ("digest", {"objective": OBJECTIVE,
                                                                            "dataset_digest": "0123abcd"})):
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        for key, value in {**attrs, **extra}.items():
            study.set_user_attr(key, value)
    open_study(TuneConfig(study_name="two", n_folds=2, storage=storage), real_dataset)
    base = dict(storage=storage, n_trials=1, max_epochs=1, n_folds=2)
    cases = [(dict(study_name="old"), "objective 'pr_auc_mean' \\(the mean of the fold PR-AUCs\\).*pooled out-of-fold"),
             (dict(study_name="digest"), "dataset_digest='0123abcd'"),
             (dict(study_name="two", n_folds=3), "n_folds=2.*n_folds=3"),
             (dict(study_name="two", preset="seed"), "preset='phase2'.*preset='seed'")]
    for overrides, match in cases:
        with pytest.raises(TuneError, match=match):
            tune(str(prepared_dir), TuneConfig(**{**base, **overrides}))
    client = MlflowClient()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []  # no FAILED parent
    assert all(not optuna.load_study(study_name=n, storage=storage).trials for n in ("old", "digest", "two"))


def test_figures_not_drawn_are_listed_with_the_reason(tracking_store):
    from pixel_cnn.tracking.tune import MIN_IMPORTANCE_TRIALS, log_study_summary

    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tracking_store / 'o.db'}",
                                study_name="one", sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    suggest_params(trial, max_epochs=4)
    study.tell(trial, 0.5)  # one complete trial (the figures read only params and values)
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    log_study_summary(run_id, study, 1.0)
    skipped = json.loads(Path(client.download_artifacts(run_id, "figures/skipped.json", str(tracking_store))).read_text())
    assert set(skipped) == {"figures/contour_dropout_lr.png", "figures/param_importances.png"}
    assert "1 complete trial" in skipped["figures/contour_dropout_lr.png"]
    assert "at least 2" in skipped["figures/contour_dropout_lr.png"]
    assert f"at least {MIN_IMPORTANCE_TRIALS}" in skipped["figures/param_importances.png"]
    drawn = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert drawn == {"figures/optimization_history.png", "figures/slice_dropout_lr.png", "figures/skipped.json"}


# ---------------------------------------------------------------- MLflow


def test_pruned_trial_is_marked_in_mlflow(tracking_store, real_dataset, one_thread):
    from pixel_cnn.tracking.tune import RUN_ID_ATTR, TrialLogger

    client = MlflowClient()
    parent = client.create_run("0").info.run_id
    logger = TrialLogger(parent, "prune-test")
    config = TuneConfig(preset="seed", n_folds=2, max_epochs=1)
    preset = get_preset("seed")
    inputs = build_inputs(real_dataset.stack_list(), preset.representation, preset.image_size)
    # A real Optuna pruner that stops every trial at its first report (PR-AUC < 1.01).
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    study.optimize(Objective(real_dataset, inputs, config, logger), n_trials=1, callbacks=[logger])
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    run = client.get_run(trial.user_attrs[RUN_ID_ATTR])
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["state"] == "PRUNED" and run.data.tags["pruned_at_fold"] == "0"
    assert run.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pr_auc")] == [0]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "running_pr_auc_oof")] == [0]
    assert "value" not in run.data.metrics
    assert TRIAL_PARAMS <= set(run.data.params)


@pytest.fixture(scope="module")
def e2e_study(prepared_dir, tmp_path_factory):
    """`mlflow run . -e tune` on the real data: 3 trials, 2 folds, 1 epoch (what is checked is the study's
    bookkeeping, figures and the retrain, not the scores), register_best=true."""
    root = tmp_path_factory.mktemp("tune-e2e")
    storage = f"sqlite:///{root / 'optuna.db'}"
    cmd = [str(VENV_BIN / "mlflow"), "run", str(PROJECT), "-e", "tune", "--env-manager", "local",
           "-P", f"dataset={prepared_dir}", "-P", "n_trials=3", "-P", "n_folds=2", "-P", "max_epochs=1",
           "-P", f"storage={storage}", "-P", "study_name=e2e", "-P", "register_best=true"]
    proc = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    return {"root": root, "storage": storage, "client": client, "stdout": proc.stdout}


def _tune_parents(client, study_name):
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`optuna.study_name` = '{study_name}'", max_results=1000)
    return sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)


@pytest.mark.slow
def test_tune_end_to_end_parent_children_figures_challenger(e2e_study):
    client = e2e_study["client"]
    (parent,) = _tune_parents(client, "e2e")
    children = _children(client, parent.info.run_id)
    trials = [r for r in children if r.info.run_name.startswith("trial-")]
    retrain = [r for r in children if not r.info.run_name.startswith("trial-")]
    assert sorted(r.data.tags["number"] for r in trials) == ["0", "1", "2"]
    values = []
    for run in trials:
        assert TRIAL_PARAMS <= set(run.data.params)
        state = run.data.tags["state"]
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[state]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "pr_auc")]
        assert steps == ([0, 1] if state == "COMPLETE" else steps[:1])
        if state == "COMPLETE":
            values.append(run.data.metrics["value"])
            # the objective is the pooled OOF PR-AUC: the running pooled value after the last fold
            running = client.get_metric_history(run.info.run_id, "running_pr_auc_oof")
            assert run.data.metrics["value"] == pytest.approx(max(running, key=lambda m: m.step).value)
            assert run.data.metrics["value"] == pytest.approx(run.data.metrics["pr_auc_oof"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(max(values))
    assert parent.data.metrics["run_trials"] == 3
    best = client.get_run(parent.data.tags["best_trial_run_id"])
    assert {f"best.{k}": v for k, v in best.data.params.items() if k in TRIAL_PARAMS} == \
        {k: v for k, v in parent.data.params.items() if k.startswith("best.")}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"best_params.json", "trials.csv", "figures"} <= artifacts
    assert {"figures/optimization_history.png", "figures/slice_dropout_lr.png",
            "figures/contour_dropout_lr.png", "figures/skipped.json"} <= figures
    dst = e2e_study["root"] / "downloaded"
    dst.mkdir(exist_ok=True)
    skipped = json.loads(Path(client.download_artifacts(parent.info.run_id, "figures/skipped.json",
                                                        str(dst))).read_text())
    assert list(skipped) == ["figures/param_importances.png"] and "3 complete trial" in skipped[
        "figures/param_importances.png"]
    assert "figures/param_importances.png" not in figures
    # register_best: the best params cross-validated again, nested under the tune run, @challenger.
    (cv_run,) = retrain
    mv = client.get_model_version_by_alias("pixel-cnn", "challenger")
    assert mv.tags["cv_run_id"] == cv_run.info.run_id
    assert float(mv.tags["pr_auc_oof"]) == pytest.approx(cv_run.data.metrics["pr_auc_oof"], abs=1e-4)
    # Same params, folds and seeds: the retrain reproduces the best trial's score, cv's headline.
    assert cv_run.data.metrics["pr_auc_oof"] == pytest.approx(parent.data.metrics["best_value"], abs=1e-9)
    for key in ("lr", "dropout", "epochs", "batch_size"):
        assert float(cv_run.data.params[f"model.{key}"]) == pytest.approx(float(parent.data.params[f"best.{key}"]))
    assert "@challenger" in e2e_study["stdout"]
    assert "pooled OOF PR-AUC (average precision)" in e2e_study["stdout"]


@pytest.mark.slow
def test_tune_resume_adds_trials_without_duplicates(e2e_study, prepared_dir):
    root, client = e2e_study["root"], e2e_study["client"]
    cmd = [sys.executable, "-m", "entrypoints.tune", "--dataset", str(prepared_dir), "--n-trials", "1",
           "--n-folds", "2", "--max-epochs", "1", "--storage", e2e_study["storage"], "--study-name", "e2e"]
    env = {**_env(root), "PYTHONPATH": str(PROJECT)}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    study = optuna.load_study(study_name="e2e", storage=e2e_study["storage"])
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state.is_finished() for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4
    parents = _tune_parents(client, "e2e")
    assert len(parents) == 2
    numbers = [r.data.tags["number"] for p in parents for r in _children(client, p.info.run_id)
               if r.info.run_name.startswith("trial-")]
    assert sorted(numbers) == ["0", "1", "2", "3"]
    assert parents[1].data.metrics["run_trials"] == 1 and parents[1].data.metrics["n_trials"] == 4


@pytest.mark.slow
def test_two_invocations_and_two_workers_share_one_sqlite_storage(prepared_dir, tmp_path):
    root = tmp_path
    storage = f"sqlite:///{root / 'optuna.db'}"  # fresh: both processes create it at once
    env = {**_env(root), "PYTHONPATH": str(PROJECT)}
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    client.create_experiment("pixel-cnn-tune", artifact_location=(root / "mlruns").as_uri())  # MLflow's own first-time creation is not race-free

    def launch(n_trials, n_workers):
        cmd = [sys.executable, "-m", "entrypoints.tune", "--dataset", str(prepared_dir),
               "--n-trials", str(n_trials), "--n-workers", str(n_workers), "--n-folds", "2",
               "--max-epochs", "1", "--storage", storage, "--study-name", "par", "--pruner", "none"]
        return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [launch(2, 2), launch(1, 1)]
    outs = [p.communicate(timeout=900) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-4000:]
        assert "database is locked" not in err
    study = optuna.load_study(study_name="par", storage=storage)
    assert sorted(t.number for t in study.trials) == list(range(3))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3
    parents = _tune_parents(client, "par")
    by_size = sorted(len(_children(client, p.info.run_id)) for p in parents)
    assert by_size == [1, 2]
    two = next(p for p in parents if len(_children(client, p.info.run_id)) == 2)
    assert {r.data.tags["optuna.worker"] for r in _children(client, two.info.run_id)} <= {"0", "1"}
    # n_workers=2: two worker processes (the tune-workers command) ran this invocation's 2 trials.
    ran = dict(re.findall(r"^tune-worker (\d+): (\d+) trials$", outs[0][0], flags=re.M))
    assert set(ran) == {"0", "1"} and sum(map(int, ran.values())) == 2
    assert "tune-worker" not in outs[1][0]  # n_workers=1: the worker ran in the tune process


def _child_pids(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


@pytest.mark.slow
def test_tune_with_workers_takes_over_a_killed_workers_trial(prepared_dir, tmp_path):
    """`tune --n-workers 2`: worker 1 is SIGKILLed inside a trial; worker 0 fails it (heartbeat) and runs its copy."""
    from optuna.storages import RetryFailedTrialCallback

    root = tmp_path
    storage = f"sqlite:///{root / 'optuna.db'}"
    env = {**_env(root), "PYTHONPATH": str(PROJECT), "PIXEL_CNN_OPTUNA_HEARTBEAT_S": "1",
           "PIXEL_CNN_OPTUNA_GRACE_S": "4"}
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("pixel-cnn-tune", artifact_location=(root / "mlruns").as_uri())
    cmd = [sys.executable, "-m", "entrypoints.tune", "--dataset", str(prepared_dir), "--n-trials", "3",
           "--n-workers", "2", "--n-folds", "2", "--max-epochs", "2", "--storage", storage, "--study-name", "kill",
           "--pruner", "none"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_run = None
    try:
        deadline = time.monotonic() + 600
        while killed_run is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            running = client.search_runs([exp], "tags.`optuna.worker` = '1' and attributes.status = 'RUNNING'")
            if not running:
                continue
            (worker,) = [pid for pid in _child_pids(proc.pid)
                         if "--worker-index\x001\x00" in Path(f"/proc/{pid}/cmdline").read_text()]
            os.kill(worker, signal.SIGKILL)  # a worker this test started, by PID
            killed_run = running[0]
        assert killed_run is not None, "worker 1 never started a trial"
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-4000:]
    study = optuna.load_study(study_name="kill", storage=storage)
    killed = study.trials[int(killed_run.data.tags["number"])]
    assert killed.state == optuna.trial.TrialState.FAIL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        (copy,) = [t for t in study.trials if RetryFailedTrialCallback.retried_trial_number(t) == killed.number]
    assert copy.state == optuna.trial.TrialState.COMPLETE and copy.params == killed.params
    assert copy.user_attrs["mlflow_run_id"] != killed_run.info.run_id
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 3  # the target, not overshot
    (parent,) = _tune_parents(client, "kill")
    assert parent.info.status == "FINISHED" and parent.data.metrics["run_trials_complete"] == 3
    assert client.get_run(killed_run.info.run_id).info.status == "FAILED"  # closed by tune
    assert "tune-worker 0: " in out


# ---------------------------------------------------------------- promote


def _version(client, run_id, score):
    mv = client.create_model_version("pixel-cnn", f"runs:/{run_id}/model", run_id=run_id)
    client.set_model_version_tag("pixel-cnn", mv.version, "pr_auc_oof", f"{score:.4f}")
    return mv.version


def test_promote_moves_champion_only_when_challenger_is_higher(tracking_store, capsys):
    from entrypoints.promote import main

    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    client.create_registered_model("pixel-cnn")
    assert main([]) == 2
    assert "no @challenger" in capsys.readouterr().err

    v1 = _version(client, run_id, 0.6)
    client.set_registered_model_alias("pixel-cnn", "challenger", v1)
    assert main([]) == 0  # no champion yet: the challenger becomes champion
    assert client.get_model_version_by_alias("pixel-cnn", "champion").version == v1
    capsys.readouterr()

    v2 = _version(client, run_id, 0.55)
    client.set_registered_model_alias("pixel-cnn", "challenger", v2)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "0.5500" in out and "0.6000" in out and "unchanged" in out
    assert client.get_model_version_by_alias("pixel-cnn", "champion").version == v1

    v3 = _version(client, run_id, 0.7)
    client.set_registered_model_alias("pixel-cnn", "challenger", v3)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "0.7000" in out and "0.6000" in out and f"-> v{v3}" in out
    assert client.get_model_version_by_alias("pixel-cnn", "champion").version == v3
