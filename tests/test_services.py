"""The shared stack for real: PostgreSQL + SeaweedFS + mlflow server, started here, stopped by PID.

One stack per module (free loopback ports, data in a temporary folder). The
entry points run unchanged against ``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT``;
boto3 checks what landed in the bucket; each failure mode of the shared stack has a test.
The tracking server authenticates (``--app-name basic-auth``): clients carry the admin's
credentials from the stack's state, and a read-only user is checked against real requests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest

from ops import services
from tests.support import PROJECT, VENV_BIN, free_port, mlflow_run, served_model

pytestmark = pytest.mark.slow

#: Short cv settings for every run here (2 folds x 2 epochs).
CV_PARAMS = {"n_folds": 2, "epochs": 2, "lr": "0.00001"}


def make(*args: str, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=PROJECT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stack():
    """`make server` on free loopback ports, data in a fresh folder under /tmp; `make server-stop` after.

    /tmp, not pytest's tmp dir: PostgreSQL runs unprivileged and must reach its data directory.
    """
    root = Path(tempfile.mkdtemp(prefix="pixel-cnn-stack-"))
    os.chmod(root, 0o755)
    where = f"SERVICES_DIR={root}"
    env = pytest.MonkeyPatch()
    try:
        up = make("server", where, "PG_PORT=0", "S3_PORT=0", "MLFLOW_PORT=0", "WEED_PORTS=free",
                  "S3_BUCKET=pixel-cnn-test", "SERVER_WORKERS=1")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        state = services.read_state(root)
        state["make_stdout"] = up.stdout
        # This process's MlflowClient acts as the stack's owner (MLflow reads the credentials per request).
        env.setenv("MLFLOW_TRACKING_USERNAME", state["tracking_username"])
        env.setenv("MLFLOW_TRACKING_PASSWORD", state["tracking_password"])
        yield state
    finally:
        env.undo()
        recorded = (services.read_state(root) or {}).get("pids", {})
        down = make("server-stop", where)
        shutil.rmtree(root, ignore_errors=True)
    assert down.returncode == 0 and "mlflow (was running), seaweedfs (was running), postgres (was running)" \
        in down.stdout, down.stdout + down.stderr
    assert recorded and not any(services._alive(pid) for pid in recorded.values())


def client_env(state: dict, cwd: Path, s3: bool = False) -> dict:
    """Environment of a client process: only the tracking URI (proxied artifacts), optionally S3 access."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "AWS_")) and k != "OPTUNA_STORAGE"}
    env.update({
        "MLFLOW_TRACKING_URI": state["tracking_uri"], "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # No credentials from elsewhere on this machine, no instance-metadata probing.
        "AWS_SHARED_CREDENTIALS_FILE": str(cwd / "no-aws-credentials"),
        "AWS_CONFIG_FILE": str(cwd / "no-aws-config"), "AWS_EC2_METADATA_DISABLED": "true",
    })
    if state.get("auth") == "basic":  # the writer: the stack's admin, as `. .services/env` sets it
        env.update({"MLFLOW_TRACKING_USERNAME": state["tracking_username"],
                    "MLFLOW_TRACKING_PASSWORD": state["tracking_password"]})
    if s3:
        env.update({k: v for k, v in services.client_env(state).items() if k.startswith(("AWS_", "MLFLOW_S3"))})
    return env


def bucket_keys(state: dict, prefix: str = "") -> list[str]:
    s3 = services.s3_client(state["s3_endpoint"], state["s3_access_key"], state["s3_secret_key"])
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=state["bucket"], Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _client(state):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=state["tracking_uri"])


def test_stack_is_up_on_loopback_and_env_file_points_at_it(stack):
    assert services.status(Path(stack["root"])) == {"postgres": True, "seaweedfs": True, "mlflow": True}
    assert stack["tracking_uri"].startswith("http://127.0.0.1:")
    assert stack["backend_store_uri"].startswith("postgresql+psycopg2://pixelcnn:")
    env_file = (Path(stack["root"]) / "env").read_text()
    assert env_file in stack["make_stdout"]  # `make server` printed the export lines it wrote
    status = make("server-status", f"SERVICES_DIR={stack['root']}")
    assert status.returncode == 0 and "postgres: up\nseaweedfs: up\nmlflow: up" in status.stdout
    assert f"export MLFLOW_TRACKING_URI={stack['tracking_uri']}\n" in env_file
    assert f"export OPTUNA_STORAGE={stack['optuna_storage']}\n" in env_file
    # proxied mode: clients need no S3 credentials, the lines are there commented out
    assert "\n# export AWS_SECRET_ACCESS_KEY=" in env_file
    # sourcing it in a shell gives the URI
    out = subprocess.run(["bash", "-c", f". {Path(stack['root']) / 'env'} && echo $MLFLOW_TRACKING_URI"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == stack["tracking_uri"]
    # the backend really is PostgreSQL: the mlflow tables are in the `mlflow` database
    import sqlalchemy

    engine = sqlalchemy.create_engine(stack["backend_store_uri"])
    with engine.connect() as conn:
        tables = set(sqlalchemy.inspect(conn).get_table_names())
    engine.dispose()
    assert {"experiments", "runs", "registered_models", "model_versions"} <= tables


@pytest.fixture(scope="module")
def remote_e2e(stack, tmp_path_factory):
    """prep + a registered 2-fold cv through `mlflow run`, client knowing only MLFLOW_TRACKING_URI."""
    root = tmp_path_factory.mktemp("remote")
    env = client_env(stack, root)
    prep = mlflow_run("prep", {"out_dir": root / "processed"}, env, root)
    prep_run_id = prep.stdout.strip().rsplit("(run ", 1)[1].split(")")[0]
    # cv reads the dataset back from the artifact store (runs:/): no disk shared with prep needed
    cv = mlflow_run("cv", {"dataset": f"runs:/{prep_run_id}/dataset", "register": "true", **CV_PARAMS}, env, root)
    return {"root": root, "env": env, "prep": prep, "cv": cv}


def test_entry_points_log_to_server_and_artifacts_land_in_bucket(stack, remote_e2e):
    client = _client(stack)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_entry = {r.data.tags.get("mlflow.project.entryPoint"): r for r in runs
                if r.data.tags.get("mlflow.project.entryPoint")}
    prep, cv = by_entry["prep"], by_entry["cv"]
    assert prep.info.status == cv.info.status == "FINISHED"
    assert cv.data.tags["prep_run_id"] == prep.info.run_id
    assert cv.data.tags["dataset_digest"] == prep.data.tags["dataset_digest"]
    assert prep.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied through the server
    mv = client.get_model_version_by_alias("pixel-cnn", "champion")
    assert mv.tags["cv_run_id"] == cv.info.run_id and mv.status == "READY"
    model_id = mv.source.split("/")[-1]
    keys = bucket_keys(stack)
    exp = cv.info.experiment_id
    assert f"mlartifacts/{prep.info.experiment_id}/{prep.info.run_id}/artifacts/dataset/stacks.npz" in keys
    assert f"mlartifacts/{exp}/{cv.info.run_id}/artifacts/oof_predictions.csv" in keys
    assert f"mlartifacts/{exp}/{cv.info.run_id}/artifacts/preflight.json" in keys
    for name in ("MLmodel", "artifacts/weights.pt", "artifacts/config.json"):
        assert f"mlartifacts/{exp}/models/{model_id}/artifacts/{name}" in keys
    # nothing was written next to the client: no ./mlruns
    assert not (remote_e2e["root"] / "mlruns").exists()


def test_champion_served_from_server(stack, remote_e2e, real_dataset):
    with served_model("models:/pixel-cnn@champion", remote_e2e["env"], remote_e2e["root"]) as url:
        stack_ = real_dataset.stacks[9967771]
        r = httpx.post(f"{url}/invocations", json={"inputs": [stack_.tolist()]}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    pred = r.json()["predictions"][0]
    assert 0 <= pred["probability"] <= 1 and pred["label"] in ("CONFIRMED", "FALSE POSITIVE")


def run_cv_module(env: dict, cwd: Path, dataset: Path, timeout: float = 300, **extra) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "entrypoints.cv", "--dataset", str(dataset), "--n-folds", "2", "--epochs", "2"]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.run(args, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=timeout)


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


# ---------------------------------------------------------------- authentication (basic-auth)

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_tracking_server_refuses_requests_without_valid_credentials(stack, tmp_path, prepared_dir):
    from ops import tracking_auth

    url, user, password = stack["tracking_uri"], stack["tracking_username"], stack["tracking_password"]
    assert stack["auth"] == "basic" and user == "admin"
    assert tracking_auth.request_status(url + SEARCH) == 401  # no credentials
    assert tracking_auth.request_status(url + SEARCH, user, password + "x") == 401  # wrong password
    assert tracking_auth.request_status(url + SEARCH, "nobody", password) == 401  # unknown user
    assert tracking_auth.request_status(url + SEARCH, user, password) == 200
    assert tracking_auth.request_status(url + "/health") == 200  # liveness stays open (load balancers)
    # the secrets: generated, beside the others, owner-only
    root = Path(stack["root"])
    secrets_ = json.loads((root / "secrets.json").read_text())
    assert secrets_["mlflow_admin_password"] == password and len(password) >= 24
    for name in ("secrets.json", "state.json", "env", "basic_auth.ini"):
        assert (root / name).stat().st_mode & 0o777 == 0o600, name
    env_file = (root / "env").read_text()
    assert f"export MLFLOW_TRACKING_USERNAME={user}\n" in env_file
    assert f"export MLFLOW_TRACKING_PASSWORD={password}\n" in env_file
    # the user store is the stack's PostgreSQL (database mlflow_auth), not a sqlite file
    import sqlalchemy

    engine = sqlalchemy.create_engine(services.postgres_uri(
        services.Config(root=root, host=stack["host"], pg_port=stack["ports"]["postgres"]),
        secrets_["pg_password"], tracking_auth.AUTH_DATABASE))
    with engine.connect() as conn:
        users = {r[0]: r[1] for r in conn.execute(sqlalchemy.text("select username, is_admin from users"))}
    engine.dispose()
    assert users.get("admin") is True
    assert not list(root.glob("*.db"))
    # rotation (make server-passwd NAME=admin): the server, secrets.json and env change together
    out = make("server-passwd", f"SERVICES_DIR={root}", "NAME=admin")
    assert out.returncode == 0, out.stderr[-2000:]
    new = out.stdout.strip().splitlines()[-1]
    try:
        assert new != password and tracking_auth.request_status(url + SEARCH, user, password) == 401
        assert tracking_auth.request_status(url + SEARCH, user, new) == 200
        assert json.loads((root / "secrets.json").read_text())["mlflow_admin_password"] == new
        assert f"export MLFLOW_TRACKING_PASSWORD={new}\n" in (root / "env").read_text()
        assert services.read_state(root)["tracking_password"] == new
    finally:  # back to the password the other tests hold, through the same path
        services.rotate_admin_password(root, password)
    assert tracking_auth.request_status(url + SEARCH, user, password) == 200
    # a job with a wrong password stops at the preflight, before any run or training
    env = {**client_env(stack, tmp_path), "MLFLOW_TRACKING_PASSWORD": "wrong"}
    proc = run_cv_module(env, tmp_path, prepared_dir)
    assert proc.returncode == 2
    assert f"tracking server {url} (MLFLOW_TRACKING_URI) refused the credentials of MLFLOW_TRACKING_USERNAME=admin" \
        in proc.stderr and "nothing was trained" in proc.stderr


@pytest.fixture(scope="module")
def reader(stack):
    """`make server-user NAME=colleague`: a read-only user; its password is printed once on stdout."""
    out = make("server-user", f"SERVICES_DIR={stack['root']}", "NAME=colleague")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "read-only user 'colleague' created" in out.stderr
    return {"user": "colleague", "password": out.stdout.strip().splitlines()[-1]}


def test_read_only_user_searches_but_cannot_write(stack, remote_e2e, reader, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    from ops import tracking_auth

    url = stack["tracking_uri"]
    assert tracking_auth.request_status(url + SEARCH, reader["user"], reader["password"]) == 200
    client = _client(stack)
    champion = client.get_model_version_by_alias("pixel-cnn", "champion").version
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", reader["user"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", reader["password"])
    experiments = [e.experiment_id for e in client.search_experiments()]  # reading: allowed
    runs = client.search_runs(experiments, "tags.`mlflow.project.entryPoint` = 'cv'")
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    cv_run = runs[0]
    cv_exp = client.get_experiment(cv_run.info.experiment_id)
    assert client.get_model_version_by_alias("pixel-cnn", "champion").version == champion
    with pytest.raises(MlflowException, match="Permission denied") as denied:
        client.create_run(cv_exp.experiment_id)
    assert denied.value.get_http_status_code() == 403
    (tmp_path / "note.txt").write_text("not allowed")
    with pytest.raises(Exception, match="403"):  # proxied upload: PUT mlflow-artifacts/... refused
        client.log_artifact(cv_run.info.run_id, str(tmp_path / "note.txt"))
    with pytest.raises(MlflowException, match="Permission denied") as denied:
        client.set_registered_model_alias("pixel-cnn", "champion", champion)
    assert denied.value.get_http_status_code() == 403
    monkeypatch.undo()  # the admin again
    assert client.get_model_version_by_alias("pixel-cnn", "champion").version == champion
    assert "note.txt" not in {f.path for f in client.list_artifacts(cv_run.info.run_id)}
    assert len(client.search_runs(experiments, "tags.`mlflow.project.entryPoint` = 'cv'")) == len(runs)
    # a new password for the colleague (make server-passwd): the old one stops working at once
    out = make("server-passwd", f"SERVICES_DIR={stack['root']}", "NAME=colleague")
    assert out.returncode == 0, out.stderr[-2000:]
    new = out.stdout.strip().splitlines()[-1]
    assert tracking_auth.request_status(url + SEARCH, reader["user"], reader["password"]) == 401
    assert tracking_auth.request_status(url + SEARCH, reader["user"], new) == 200


def test_tune_and_promote_with_the_writers_credentials(stack, remote_e2e, tmp_path, prepared_dir):
    """tune (1 trial, best retrained and registered as @challenger), then promote, as the stack's owner."""
    client = _client(stack)
    env = client_env(stack, tmp_path)
    tune = subprocess.run(
        [sys.executable, "-m", "entrypoints.tune", "--dataset", str(prepared_dir), "--preset", "phase2",
         "--n-trials", "1", "--n-folds", "2", "--max-epochs", "1", "--pruner", "none", "--register-best", "true",
         "--study-name", "auth-e2e"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(PROJECT)}, capture_output=True, text=True, timeout=900)
    assert tune.returncode == 0, tune.stderr[-3000:]
    challenger = client.get_model_version_by_alias("pixel-cnn", "challenger")
    tune_exp = client.get_experiment_by_name("pixel-cnn-tune")
    parents = client.search_runs([tune_exp.experiment_id], "tags.mlflow.runName LIKE 'tune %'")
    assert parents and parents[0].info.status == "FINISHED" and "best_value" in parents[0].data.metrics
    before = client.get_model_version_by_alias("pixel-cnn", "champion").version
    promote = subprocess.run([sys.executable, "-m", "entrypoints.promote"], cwd=PROJECT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert promote.returncode == 0, promote.stderr[-3000:]
    after = client.get_model_version_by_alias("pixel-cnn", "champion").version
    if "@champion -> v" in promote.stdout:  # moved: only the writer may, and it did
        assert after == challenger.version != before
    else:
        assert "@champion unchanged" in promote.stdout and after == before


@pytest.fixture(scope="module")
def direct_experiment(stack):
    """An experiment whose artifacts go straight to the bucket (the server's direct mode)."""
    name = "pixel-cnn-direct"
    _client(stack).create_experiment(name, artifact_location=f"s3://{stack['bucket']}/direct")
    return name


def test_direct_artifacts_without_s3_credentials_fail_before_training(stack, direct_experiment, tmp_path, prepared_dir):
    env = {**client_env(stack, tmp_path), "MLFLOW_EXPERIMENT_NAME": direct_experiment}
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
    client = _client(stack)
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
    client = _client(stack)
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
    with pytest.raises(Exception, match="killed"):
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
    client = _client(stack)
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
