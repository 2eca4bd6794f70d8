"""The shared stack's failure modes, for real, on a stack of this module's own (`make server`).

A tracking server that is unreachable, direct S3 artifacts without (or with wrong) credentials, the
server killed in the middle of a cv, a tune worker killed in the middle of a trial. Its own stack
(:func:`tests.services_support.running_stack`), so that it runs beside ``test_services.py`` on the
other pytest-xdist worker, and the server it kills is nobody else's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from ops import services
from tests.services_support import bucket_keys, client_env, run_cv_module, running_stack, tracking_client
from tests.support import PROJECT, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack():
    """This module's own stack (:func:`tests.services_support.running_stack`)."""
    with running_stack() as state:
        yield state


def test_unreachable_tracking_server_fails_before_training(tmp_path, prepared_dir):
    uri = f"http://127.0.0.1:{free_port()}"
    env = client_env({"tracking_uri": uri}, tmp_path)
    proc = run_cv_module(env, tmp_path, prepared_dir)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"cv: tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable")
    assert "nothing was trained" in proc.stderr
    # the make targets check before `mlflow run` (which would retry for minutes)
    make = subprocess.run(["make", "--no-print-directory", "prep"], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert make.returncode != 0 and f"tracking server {uri} (MLFLOW_TRACKING_URI) is unreachable" in make.stderr
    assert "mlflow run" not in make.stdout


def test_tracking_uri_with_an_unknown_scheme_is_refused_by_name(tmp_path):
    """A typo'd scheme (``htp://``) is not taken for a local store: `make` stops before `mlflow run`."""
    from pixel_cnn.tracking.stores import check_tracking

    env = {**os.environ, "MLFLOW_TRACKING_URI": "htp://oops:5000"}
    proc = subprocess.run([sys.executable, "-m", "entrypoints.tracking_check"], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "tracking URI 'htp://oops:5000' (MLFLOW_TRACKING_URI): unknown scheme 'htp'" in proc.stderr
    assert "http:" in proc.stderr and "sqlite:" in proc.stderr and "Traceback" not in proc.stderr
    for ok in ("sqlite:///" + str(tmp_path / "m.db"), "postgresql+psycopg2://u@127.0.0.1/db", str(tmp_path / "mlruns")):
        assert check_tracking(ok) is None, ok


@pytest.fixture(scope="module")
def direct_experiment(stack):
    """An experiment whose artifacts go straight to the bucket (the server's direct mode)."""
    name = "pixel-cnn-direct"
    tracking_client(stack).create_experiment(name, artifact_location=f"s3://{stack['bucket']}/direct")
    return name


def test_direct_artifacts_without_s3_credentials_fail_before_training(stack, direct_experiment, tmp_path, prepared_dir):
    # no internet here: botocore would retry AWS (and the EC2 metadata service) for a minute or more before
    # failing; one attempt fails the same way, sooner
    env = {**client_env(stack, tmp_path), "MLFLOW_EXPERIMENT_NAME": direct_experiment,
           "AWS_MAX_ATTEMPTS": "1", "AWS_EC2_METADATA_DISABLED": "true"}
    proc = run_cv_module(env, tmp_path, prepared_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"artifact store s3://{stack['bucket']}/direct/" in last and "no S3 credentials" in last
    # credentials present but wrong: the test write is refused, still before training
    env.update({k: v for k, v in services.client_env(stack).items() if k.startswith(("AWS_", "MLFLOW_S3"))})
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    proc = run_cv_module(env, tmp_path, prepared_dir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "refused a test write" in last and f"MLFLOW_S3_ENDPOINT_URL={stack['s3_endpoint']}" in last
    # endpoint missing: boto3 would go to AWS; the failure still comes before training
    env.update(services.client_env(stack))
    env.pop("MLFLOW_S3_ENDPOINT_URL")
    proc = run_cv_module(env, tmp_path, prepared_dir)
    assert proc.returncode == 2 and "MLFLOW_S3_ENDPOINT_URL is unset" in proc.stderr, proc.stderr[-2000:]
    client = tracking_client(stack)
    exp = client.get_experiment_by_name(direct_experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FAILED"}
    assert all(r.data.params.get("n_folds") == "2" and not r.data.metrics for r in runs)  # nothing trained


def test_direct_artifacts_with_credentials_go_straight_to_bucket(stack, direct_experiment, tmp_path):
    env = {**client_env(stack, tmp_path, s3=True), "MLFLOW_EXPERIMENT_NAME": direct_experiment}
    proc = subprocess.run([sys.executable, "-m", "entrypoints.prep", "--out-dir", str(tmp_path / "processed")],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = proc.stdout.strip().rsplit("(run ", 1)[1].rstrip(")")
    keys = bucket_keys(stack, "direct/")
    assert f"direct/{run_id}/artifacts/dataset/stacks.npz" in keys
    assert f"direct/{run_id}/artifacts/preflight.json" in keys


class _StderrWatcher:
    """Collects a subprocess' stderr lines in a thread; ``wait_for`` blocks until a line contains a text."""

    def __init__(self, proc):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc):
        for line in proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


def test_server_killed_mid_cv_run_ends_failed_and_nothing_registered(stack, tmp_path, prepared_dir):
    client = tracking_client(stack)
    client.create_experiment("pixel-cnn-kill")
    before = {(v.name, v.version) for v in client.search_model_versions("name='pixel-cnn'")}
    env = client_env(stack, tmp_path)
    # Fail fast on the dead server (MLflow's default retries last ~4 minutes: a restart within them is
    # transparent), then wait up to 240 s for it to come back to record FAILED.
    env.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "PIXEL_CNN_END_RUN_PATIENCE_S": "240",
                "MLFLOW_EXPERIMENT_NAME": "pixel-cnn-kill"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cv", "--dataset", str(prepared_dir), "--n-folds", "2",
         "--epochs", "4", "--register", "true", "--alias", "killed"],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = _StderrWatcher(proc)
    try:
        # mid-cv: the first fold's child run exists, so training has started
        deadline = time.monotonic() + 300
        children = []
        while not children and time.monotonic() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name("pixel-cnn-kill")
            if exp:
                children = client.search_runs([exp.experiment_id], "tags.mlflow.parentRunId != ''")
            time.sleep(0.5)
        assert children, "cv never reached its first fold"
        parent_id = children[0].data.tags["mlflow.parentRunId"]
        assert services.stop_pid(stack["pids"]["mlflow"], sig=9)  # a crash, not a clean stop
        assert watcher.wait_for("retrying for up to 240 s to mark run", timeout=300), "".join(watcher.lines)[-3000:]
        services.restart_mlflow(Path(stack["root"]))
        stack.update(services.read_state(Path(stack["root"])))
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    run = client.get_run(parent_id)
    assert run.info.status == "FAILED"
    after = {(v.name, v.version) for v in client.search_model_versions("name='pixel-cnn'")}
    assert after == before
    # no alias `killed`: on this module's stack nothing else registers, so not even the model exists
    with pytest.raises(Exception, match="alias killed|name=pixel-cnn not found"):
        client.get_model_version_by_alias("pixel-cnn", "killed")


def _trial_runs(client, parent_id):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)


def test_tune_workers_share_one_study_and_parent_and_survive_a_killed_worker(stack, tmp_path, prepared_dir):
    """`make tune-workers N=2`: one worker is killed mid-trial; its trial is failed and retried."""
    from optuna.storages import RetryFailedTrialCallback

    from ops.tune_workers import WORKERS_FILE

    env = {**client_env(stack, tmp_path), "OPTUNA_STORAGE": stack["optuna_storage"],
           "PIXEL_CNN_OPTUNA_HEARTBEAT_S": "2", "PIXEL_CNN_OPTUNA_GRACE_S": "8",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    state_dir = tmp_path / "state"
    study_name = "workers-test"
    make = subprocess.Popen(
        ["make", "--no-print-directory", "tune-workers", "N=2", "TUNE_TRIALS=4",
         f"TUNE_DATASET={prepared_dir}", f"SERVICES_DIR={state_dir}",
         f"TUNE_WORKERS_ARGS=--study-name {study_name} --n-folds 2 --max-epochs 2 --pruner none"],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    client = tracking_client(stack)
    killed_run = None
    try:
        # kill worker 1 once it is inside a trial (its trial run exists and is RUNNING)
        deadline = time.monotonic() + 400
        while killed_run is None and time.monotonic() < deadline and make.poll() is None:
            time.sleep(1)
            if not (state_dir / WORKERS_FILE).exists():
                continue
            info = json.loads((state_dir / WORKERS_FILE).read_text())
            running = [r for r in _trial_runs(client, info["parent_run_id"])
                       if r.data.tags.get("optuna.worker") == "1" and r.info.status == "RUNNING"]
            if running:
                killed_run = running[0]
                assert services.stop_pid(info["pids"][1], sig=9)
        assert killed_run is not None, "worker 1 never started a trial"
        out, _ = make.communicate(timeout=900)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, 9)
            make.wait()
    assert make.returncode == 0, out[-3000:]
    import optuna

    study = optuna.load_study(study_name=study_name, storage=stack["optuna_storage"])
    trials = study.get_trials(deepcopy=False)
    killed_number = int(killed_run.data.tags["number"])
    killed = trials[killed_number]
    assert killed.state == optuna.trial.TrialState.FAIL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retries = [t for t in trials if RetryFailedTrialCallback.retried_trial_number(t) == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params
    # run by the surviving worker if it was still busy after the grace period, else queued for the next launch
    assert retries[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING)
    finished = [t for t in trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) >= 4
    # one parent for the whole study; one MLflow run per started trial, each trial number once
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    runs = _trial_runs(client, parent_id)
    numbers = [int(r.data.tags["number"]) for r in runs]
    assert sorted(numbers) == sorted(set(numbers)) == sorted(t.number for t in trials if t.state != optuna.trial.TrialState.WAITING)
    assert {r.data.tags["optuna.worker"] for r in runs} == {"0", "1"}
    assert client.get_run(killed_run.info.run_id).info.status == "FAILED"  # closed by the launcher
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and "best_value" in parent.data.metrics
    assert "1 runs of failed trials closed" in out
