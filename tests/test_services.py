"""The shared stack for real: PostgreSQL + SeaweedFS + mlflow server, started here, stopped by PID.

One stack per module (free loopback ports, data in a temporary folder): this module runs the
entry points and the served model against it and checks its authentication;
``test_services_failures.py`` (its own stack, on the other xdist worker) the failure modes. The
entry points run unchanged against ``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT``; boto3 checks what
landed in the bucket. The tracking server authenticates (``--app-name basic-auth``): clients carry
the admin's credentials from the stack's state, and a read-only user is checked against real requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ops import services
from tests.services_support import bucket_keys, client_env, run_cv_module, running_stack, tracking_client
from tests.support import PROJECT, make, mlflow_run, served_model

pytestmark = pytest.mark.slow

#: Short cv settings of the registered run here (2 folds x 1 epoch, 2 inner folds for the fusion
#: combiner): what is checked is where runs, artifacts and the model land, not the scores.
CV_PARAMS = {"n_folds": 2, "epochs": 1, "inner_folds": 2, "lr": "0.00001"}


@pytest.fixture(scope="module")
def stack():
    """This module's own stack (:func:`tests.services_support.running_stack`)."""
    with running_stack() as state:
        yield state


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
    client = tracking_client(stack)
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
    client = tracking_client(stack)
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
    client = tracking_client(stack)
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


