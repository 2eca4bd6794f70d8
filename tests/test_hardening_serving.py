"""The served model under bad requests, load and registry changes.

The model is the session's shared one (conftest.py ``shared_model``: make cv's fusion vetter,
3 folds x 2 epochs on the real benchmark set, registered as ``pixel-cnn@champion`` in a
throwaway store), served by the session's one real ``mlflow models serve`` process on
loopback (``shared_server``). Without KOI parameters it answers from its pixel branch.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pixel_cnn.vetter.pyfunc import MAX_REQUEST_VALUES
from tests.support import PROJECT

pytestmark = pytest.mark.slow
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def trained(shared_model, shared_pyfunc):
    """The session's shared model, registered as pixel-cnn@champion in a fresh store, and loaded in process."""
    return {**shared_model, "model": shared_pyfunc, "prepared_dir": shared_model["dataset"]}


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


def _post(url, body, headers=JSON):
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(f"{url}/invocations", content=content, headers=headers, timeout=120)


def _good_stack(real_dataset, kepid=None):
    return real_dataset.stacks[kepid or int(real_dataset.kepids[0])].astype(np.float64)


def _assert_still_serving(url, real_dataset):
    assert httpx.get(f"{url}/ping", timeout=10).status_code == 200
    ok = _post(url, {"inputs": [_good_stack(real_dataset).tolist()]})
    assert ok.status_code == 200, ok.text[:300]


GOOD = np.random.default_rng(0).normal(0, 1e-3, (32, 4, 4)).round(6)
GOOD_JSON = json.dumps(GOOD.tolist())
ACCEPTED = "{'inputs', 'instances', 'dataframe_split', 'dataframe_records'}"

# name -> (body, needles every one of which must be in the message, exact our-own message or None)
BAD_BODIES = {
    "legacy columns/index/data": ('{"columns": ["a"], "index": [0], "data": [[1.0]]}',
                                  ["exactly one of the input fields"], None),
    "both inputs and instances": ('{"inputs": [%s], "instances": [%s]}' % (GOOD_JSON, GOOD_JSON),
                                  ["exactly one of the input fields", "['inputs', 'instances']"], None),
    "a JSON list, not an object": ("[%s]" % GOOD_JSON, ["exactly one of the input fields", "Received a list"], None),
    "malformed JSON": ('{"inputs": [[1.0, 2.0', ["valid JSON", "JSONDecodeError"], None),
    "not UTF-8": (b'{"inputs": "\xff\xfe"}', ["valid JSON"], None),
    "ragged lists": ('{"inputs": [[[[1.0, 2.0], [3.0]]]]}', ["inhomogeneous shape"], None),
    "strings": (json.dumps({"inputs": [[[["a"] * 4] * 4] * 32]}), [],
                "bad request: stack 0: dtype string is not a real number type"),
    "booleans": (json.dumps({"inputs": [(GOOD > 0).tolist()]}), [],
                 "bad request: stack 0: dtype bool is not a real number type"),
    "a file path": ('{"inputs": "/etc/passwd"}', [],
                    "bad request: input of rank 0 (a scalar); expected (N, 32, H, W)"),
    "wrong rank (one stack, no batch axis)": ('{"inputs": %s}' % GOOD_JSON, [],
                                               "bad request: input of rank 3 (32x4x4); expected (N, 32, H, W)"),
    "wrong rank (rank 5)": ('{"inputs": [[%s]]}' % GOOD_JSON, [],
                            "bad request: input of rank 5 (1x1x32x4x4); expected (N, 32, H, W)"),
    "5 phase bins": (json.dumps({"inputs": [GOOD[:5].tolist()]}), [],
                     "bad request: stack 0: 5 phase bins (shape (5, 4, 4)); expected 32"),
    "NaN": ('{"inputs": [%s]}' % GOOD_JSON.replace(str(GOOD[0, 0, 0]), "NaN", 1), [],
            "bad request: stack 0: contains 1 NaN value(s)"),
    "Infinity": ('{"inputs": [%s]}' % GOOD_JSON.replace(str(GOOD[0, 0, 0]), "-Infinity", 1), [],
                 "bad request: stack 0: contains +/-Inf"),
    "2x2 pixels": (json.dumps({"inputs": [np.ones((32, 2, 2)).tolist()]}), [],
                   "bad request: stack 0: 2x2 pixels is smaller than 3x3"),
    "all zero": (json.dumps({"inputs": [np.zeros((32, 4, 4)).tolist()]}), [],
                 "bad request: stack 0: every value is zero (no signal)"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_body_gets_400_naming_the_problem_and_server_keeps_serving(server, real_dataset, case):
    body, needles, exact = BAD_BODIES[case]
    r = _post(server, body)
    assert r.status_code == 400, (r.status_code, r.text[:500])
    message = r.json()["message"]
    for needle in needles:
        assert needle in message, message[-500:]
    if exact is not None:
        assert message == exact  # our own errors: the reason alone, no repr of the input
    if "exactly one of the input fields" in needles:  # names the accepted keys
        assert all(k in message for k in ("inputs", "instances", "dataframe_split", "dataframe_records"))
    _assert_still_serving(server, real_dataset)


def test_batch_with_one_bad_stack_rejected_whole_naming_its_index(server, real_dataset):
    stacks = [_good_stack(real_dataset, int(k)) for k in real_dataset.kepids if real_dataset.stacks[int(k)].shape == (32, 4, 4)][:4]
    assert len(stacks) >= 3, "need three real 4x4 stacks"
    bad = stacks[2].copy()
    bad[5, 1, 1] = np.nan
    body = json.dumps({"inputs": [stacks[0].tolist(), stacks[1].tolist(), bad.tolist()]})
    r = _post(server, body)
    assert r.status_code == 400
    assert r.json()["message"] == "bad request: stack 2: contains 1 NaN value(s)"
    _assert_still_serving(server, real_dataset)


def test_body_over_the_size_limit_gets_400(server, real_dataset):
    n = MAX_REQUEST_VALUES // (32 * 64 * 64) + 1  # 17 stacks of 64 x 64: just over the limit
    one = "[" + ",".join(["[" + ",".join(["0.001"] * 64) + "]"] * 64) + "]"
    body = '{"inputs": [' + ",".join(["[" + ",".join([one] * 32) + "]"] * n) + "]}"
    r = _post(server, body)
    assert r.status_code == 400
    assert r.json()["message"] == (
        f"bad request: request of {n} stacks holds {n * 32 * 64 * 64} values, over the limit of "
        f"{MAX_REQUEST_VALUES} per request; send fewer stacks per request")
    _assert_still_serving(server, real_dataset)


def test_no_request_reads_a_file_on_the_server(server, real_dataset, data_dir):
    path = str(data_dir / "stacks" / f"pixdiff_{int(real_dataset.kepids[0])}.npy")
    for body, ctype in [(json.dumps({"inputs": [path]}), "application/json"),
                        (json.dumps({"inputs": path}), "application/json"),
                        (f"path\n{path}\n", "text/csv")]:
        r = _post(server, body, {"Content-Type": ctype})
        assert r.status_code == 400, r.text[:300]
        assert "predictions" not in r.text
    # params are not a way in either: the model takes only its KOI parameters and refuses any other by name.
    r = _post(server, {"inputs": [_good_stack(real_dataset).tolist()], "params": {"path": "/etc/passwd"}})
    assert r.status_code == 400 and "unknown parameter 'path'" in r.text and "root:" not in r.text


def test_served_probabilities_match_in_process_predict(server, trained, real_dataset):
    by_shape: dict[tuple, list[int]] = {}
    for k in real_dataset.kepids:
        by_shape.setdefault(real_dataset.stacks[int(k)].shape, []).append(int(k))
    n = 0
    for shape, kepids in by_shape.items():
        batch = np.stack([real_dataset.stacks[k] for k in kepids]).astype(np.float32)
        local = trained["model"].predict(batch)["probability"].to_numpy()
        r = _post(server, {"inputs": batch.astype(np.float64).tolist()})
        assert r.status_code == 200, (shape, r.text[:300])
        served = np.array([p["probability"] for p in r.json()["predictions"]])
        np.testing.assert_allclose(served, local, atol=1e-6, rtol=0)
        n += len(kepids)
    assert n == len(real_dataset.kepids) == 97


def test_load_2000_requests_at_concurrency_8_no_errors(server, real_dataset, tmp_path):
    from ops.loadtest import run_load, stack_bodies

    bodies = stack_bodies(real_dataset.stack_list())
    result = run_load(server, bodies, n_requests=2000, concurrency=8, timeout_s=60, deadline_s=540)
    out = os.environ.get("PIXEL_CNN_LOAD_OUT") or str(tmp_path / "load.json")
    with open(out, "w") as f:
        json.dump(result.to_dict(), f, indent=2)
    print(f"\nload: {json.dumps(result.to_dict())} -> {out}")
    assert result.n_errors == 0, result.errors
    assert result.n_requests == 2000 and result.p50_ms <= result.p99_ms  # recorded, not asserted as timings
    _assert_still_serving(server, real_dataset)


def test_models_are_logged_from_code_without_pickles(trained):
    mlflow.set_tracking_uri(trained["env"]["MLFLOW_TRACKING_URI"])  # resolves models:/ through its registry
    try:
        local = mlflow.artifacts.download_artifacts(trained["uri"])
    finally:
        mlflow.set_tracking_uri(None)
    files = [p for p in Path(local).rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    import yaml

    flavor = yaml.safe_load((Path(local) / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert flavor["model_code_path"].endswith("serving_model.py")
    assert "python_model" not in flavor


# ------------------------------------------------------------------ registry safety


def test_champion_keeps_answering_and_never_moves_while_new_versions_register(server, trained, real_dataset, capsys,
                                                                               monkeypatch):
    """Registers two more versions in the shared store (other tests use @champion, never a version number)."""
    from entrypoints.cv import main as cv_main
    from pixel_cnn.tracking import registry

    uri = trained["env"]["MLFLOW_TRACKING_URI"]
    monkeypatch.chdir(trained["root"])  # the in-process cv below uses the shared store, its ./mlruns there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    champion = client.get_model_version_by_alias("pixel-cnn", "champion")
    before = sorted(int(v.version) for v in client.search_model_versions("name='pixel-cnn'"))
    body = {"inputs": [_good_stack(real_dataset).tolist()]}
    first = _post(server, body).json()["predictions"][0]["probability"]
    answers, stop = [], threading.Event()

    def query():
        while not stop.is_set():
            try:
                r = _post(server, body)
                answers.append((r.status_code, r.json()["predictions"][0]["probability"] if r.status_code == 200 else r.text))
            except httpx.HTTPError as exc:
                answers.append((0, repr(exc)))
            time.sleep(0.05)

    thread = threading.Thread(target=query, daemon=True)
    thread.start()
    try:
        # The cv command with register=true and alias="": a new version, no alias moved.
        rc = cv_main(["--dataset", str(trained["prepared_dir"]), "--n-folds", "2", "--epochs", "1",
                      "--seed", "5", "--register", "true", "--alias", ""])
        assert rc == 0, capsys.readouterr().err[-2000:]
        # Another version (of the champion's logged model) registered with another alias.
        registry.register(mlflow.models.get_model_info(champion.source), {"preset": "test"},
                          "challenger")
    finally:
        time.sleep(0.3)
        stop.set()
        thread.join(timeout=60)
        mlflow.set_tracking_uri(None)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='pixel-cnn'"))
    assert versions == before + [before[-1] + 1, before[-1] + 2]
    assert client.get_model_version_by_alias("pixel-cnn", "champion").version == champion.version
    assert int(client.get_model_version_by_alias("pixel-cnn", "challenger").version) == before[-1] + 2
    assert len(answers) >= 5 and all(code == 200 for code, _ in answers), answers[:5]
    assert all(abs(p - first) < 1e-12 for _, p in answers)  # same champion all along


def test_unknown_alias_or_model_one_line_error_in_predict_cli(trained, real_dataset, data_dir, capsys, monkeypatch):
    from pixel_cnn.predict import main as predict_main

    # predict sets MLFLOW_TRACKING_URI for its process: point it at the shared store, restored after the test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["env"]["MLFLOW_TRACKING_URI"])

    stack_file = str(data_dir / "stacks" / f"pixdiff_{int(real_dataset.kepids[0])}.npy")
    for uri, needle in [("models:/pixel-cnn@nope", "nope"), ("models:/no-such-model@champion", "no-such-model"),
                        ("models:/pixel-cnn/999", "999")]:
        assert predict_main([stack_file, "--model-uri", uri,
                             "--tracking-uri", trained["env"]["MLFLOW_TRACKING_URI"]]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and uri in err and needle in err and "Traceback" not in err


@pytest.mark.parametrize("uri,message", [
    ("models:/pixel-cnn@nope", "model URI 'models:/pixel-cnn@nope': registered model 'pixel-cnn' has no alias 'nope' (known aliases: ["),
    ("models:/no-such-model@champion", "model URI 'models:/no-such-model@champion': no registered model named 'no-such-model'"),
    ("runs:/0123456789abcdef/model", "model URI 'runs:/0123456789abcdef/model': no model there ("),
    ("no/such/folder", "model URI 'no/such/folder': no model there ("),
])
def test_unknown_alias_or_model_one_line_error_in_make_serve(trained, uri, message):
    env = dict(trained["env"])
    proc = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "serve", f"MODEL_URI={uri}"],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("make")]
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "mlflow models serve" not in proc.stdout
