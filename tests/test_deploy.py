"""The registered model deploys anywhere (issue 24, docs/deploy.md).

- Its requirements are the whole resolved set from ``constraints.txt`` (no drift), torch the CPU
  build, uvloop only where it installs; the registered model's files carry exactly them.
- The same stacks give the same answers as float32, float64, lists or pandas in Python, and as
  JSON over HTTP; a refusal names the problem (the field) in a short message, never the data.
- Loading the model never breaks a later import of the project (one process).
- End to end (slow): ``make deploy-check``'s command builds the model's environment from its own
  files OFFLINE (``mlflow models prepare-env --env-manager uv``, wheels and uv's cache from
  ``make wheelhouse`` only, which ``make test`` runs first), scores the README's bodies in it from
  a folder outside the checkout over HTTP and in its Python, and compares with ``make serve``'s
  server; the environment holds the CPU torch and cannot import the checkout's package.

The model is the session's shared one (conftest.py ``shared_model``: make cv's fusion vetter,
3 folds x 2 epochs on the real benchmark set, registered as ``pixel-cnn@champion`` in a throwaway
store), its ``make serve`` the session's ``shared_server``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pixel_cnn.io.koi import load_koi_with_dv
from pixel_cnn.scoring import koi_parameters
from pixel_cnn.tracking import requirements as reqs
from pixel_cnn.tracking.served import SERVED_PACKAGE, pip_requirements, served_files
from pixel_cnn.vetter.pyfunc import INPUT_DOC
from pixel_cnn.vetter.tabular import SERVED_PARAMETERS
from tests.support import PROJECT

WHEELHOUSE = PROJECT / ".wheelhouse"
LINUX = {"sys_platform": "linux", "platform_system": "Linux", "platform_python_implementation": "CPython"}
WINDOWS = {"sys_platform": "win32", "platform_system": "Windows", "platform_python_implementation": "CPython"}
MACOS = {"sys_platform": "darwin", "platform_system": "Darwin", "platform_python_implementation": "CPython"}
#: The README's example star (a benchmark CONFIRMED target, a 4 x 6 stack).
KEPID = 9967771


def _parse(lines: list[str]) -> tuple[list[str], list[Requirement]]:
    options = [line for line in lines if line.startswith("-")]
    return options, [Requirement(line) for line in lines if not line.startswith("-")]


def _applies(req: Requirement, env: dict) -> bool:
    return req.marker is None or req.marker.evaluate(env)


def test_requirements_are_the_constraints_set_with_cpu_torch_and_markers():
    """No drift: every pin is constraints.txt's, the set is closed, and the venv holds those versions."""
    options, parsed = _parse(pip_requirements())
    assert options == [f"--extra-index-url {reqs.CPU_TORCH_INDEX}"]
    pins = reqs.read_constraints(reqs.CONSTRAINTS)
    for req in parsed:
        (spec,) = req.specifier
        assert spec.operator == "=="
        name, pinned = pins[canonicalize_name(req.name)]
        assert spec.version in ((pinned, f"{pinned}+cpu") if req.name == "torch" else (pinned,)), req
    # Closed: every runtime requirement (markers evaluated here) of a pinned distribution is pinned.
    names = {canonicalize_name(r.name) for r in parsed}
    for name in names:
        for dep in reqs._requires(name, frozenset()):
            assert canonicalize_name(dep.name) in names, f"{name} needs {dep}, not pinned"
    # What the served code and the scoring server import is in; nothing of the tracking server or notebooks.
    assert {"torch", "numpy", "pandas", "scikit-learn", "skops", "mlflow-skinny", "uvloop", "scipy", "joblib",
            "threadpoolctl", "uvicorn", "cloudpickle"} <= names
    assert not names & {"mlflow", "matplotlib", "pyarrow", "sqlalchemy", "optuna", "lightkurve", "pytest", "captum"}
    # torch: the +cpu build on Linux and Windows, the plain (CPU-only) wheel on macOS, one line each.
    torches = {env_name: [str(r.specifier) for r in parsed if r.name == "torch" and _applies(r, env)]
               for env_name, env in (("linux", LINUX), ("win32", WINDOWS), ("darwin", MACOS))}
    base = pins["torch"][1].split("+")[0]
    assert torches == {"linux": [f"=={base}+cpu"], "win32": [f"=={base}+cpu"], "darwin": [f"=={base}"]}
    # uvloop: not on Windows (it has no build there), everywhere else.
    (uvloop,) = [r for r in parsed if r.name == "uvloop"]
    assert _applies(uvloop, LINUX) and _applies(uvloop, MACOS) and not _applies(uvloop, WINDOWS)
    # The venv the tests run in is that set.
    for req in parsed:
        if _applies(req, LINUX):
            assert version(req.name) == next(iter(req.specifier)).version, req.name


def test_constraints_missing_a_needed_pin_is_refused_naming_it(tmp_path):
    cut = tmp_path / "constraints.txt"
    cut.write_text("\n".join(line for line in reqs.CONSTRAINTS.read_text().splitlines()
                             if not line.startswith("threadpoolctl==")) + "\n")
    with pytest.raises(reqs.RequirementsError, match="threadpoolctl: needed by the served model but not pinned"):
        reqs.model_requirements(served_files(), cut)


@pytest.fixture(scope="module")
def model_dir(shared_model, tmp_path_factory) -> Path:
    """The shared champion downloaded (what a deployer gets): its folder, outside the checkout."""
    mlflow.set_tracking_uri(shared_model["env"]["MLFLOW_TRACKING_URI"])
    try:
        return Path(mlflow.artifacts.download_artifacts(
            shared_model["uri"], dst_path=str(tmp_path_factory.mktemp("deploy-model"))))
    finally:
        mlflow.set_tracking_uri(None)


def test_registered_model_files_carry_the_requirements_and_no_input_schema(model_dir):
    expected = pip_requirements()
    assert (model_dir / "requirements.txt").read_text().splitlines() == expected
    conda = yaml.safe_load((model_dir / "conda.yaml").read_text())
    assert next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict)) == expected
    assert yaml.safe_load((model_dir / "python_env.yaml").read_text())["dependencies"] == ["-r requirements.txt"]
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert "inputs" not in mlmodel["signature"] or mlmodel["signature"]["inputs"] is None
    assert {p["name"] for p in json.loads(mlmodel["signature"]["params"])} == set(SERVED_PARAMETERS)
    assert mlmodel["metadata"]["input"] == INPUT_DOC


@pytest.fixture(scope="module")
def example(real_dataset, data_dir):
    """The README's example: stacks of the size of pixdiff_9967771 (float32, as on disk) and its KOI params."""
    shape = real_dataset.stacks[KEPID].shape
    stacks = [real_dataset.stacks[int(k)] for k in real_dataset.kepids if real_dataset.stacks[int(k)].shape == shape][:3]
    params, name, reason = koi_parameters(load_koi_with_dv(data_dir), KEPID)
    assert params and not reason, reason
    return {"x32": np.stack(stacks).astype(np.float32), "one": real_dataset.stacks[KEPID][None].astype(np.float32),
            "params": params}


def test_same_answers_for_float32_float64_lists_and_pandas(shared_pyfunc, example):
    x32 = example["x32"]
    reference = shared_pyfunc.predict(x32)
    routes = {
        "float64 array": x32.astype(np.float64),
        "JSON-like nested lists": json.loads(json.dumps(x32.astype(np.float64).tolist())),
        "list of float32 stacks": list(x32),
        "object array of stacks": np.array(list(x32) + [None], dtype=object)[:-1],
        "one-column DataFrame": pd.DataFrame({"stack": list(x32.astype(np.float64))}),
        "Series": pd.Series(list(x32)),
    }
    for name, value in routes.items():
        pd.testing.assert_frame_equal(shared_pyfunc.predict(value), reference, obj=name)
    # With the star's KOI parameters (the fused answer), float32 and float64 agree too.
    fused32 = shared_pyfunc.predict(example["one"], params=example["params"])
    fused64 = shared_pyfunc.predict(example["one"].astype(np.float64), params=example["params"])
    assert fused32["branch"].tolist() == ["fused"]
    pd.testing.assert_frame_equal(fused64, fused32)


def _post(url, body):
    return httpx.post(f"{url}/invocations", content=json.dumps(body), headers={"Content-Type": "application/json"},
                      timeout=120)


def test_python_and_http_give_the_same_answers(shared_pyfunc, shared_server, example):
    for x, params in ((example["x32"], None), (example["one"], example["params"])):
        body = {"inputs": x.astype(np.float64).tolist(), **({"params": params} if params else {})}
        r = _post(shared_server, body)
        assert r.status_code == 200, r.text[:300]
        served = pd.DataFrame(r.json()["predictions"])
        for dtype in (np.float32, np.float64):
            local = shared_pyfunc.predict(x.astype(dtype), params=params)
            assert list(served.columns) == list(local.columns)
            for column in local.columns:
                if local[column].dtype == np.float64:
                    np.testing.assert_allclose(served[column].to_numpy(float), local[column].to_numpy(), rtol=1e-12)
                else:
                    assert served[column].tolist() == local[column].where(local[column].notna(), None).tolist()


#: name -> (bad input from a good (1, 32, H, W) float64 stack, params, the exact short message)
REFUSALS = {
    "one stack without the batch axis": (lambda x: x[0], None, "bad request: input of rank 3 (32x4x6); expected (N, 32, H, W)"),
    "5 phase bins": (lambda x: x[:, :5], None, "bad request: stack 0: 5 phase bins (shape (5, 4, 6)); expected 32"),
    "a NaN": (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), None,
              "bad request: stack 0: contains 1 NaN value(s)"),
    "a negative period": (lambda x: x, {"koi_period": -3.0}, None),
    "a misspelt parameter": (lambda x: x, {"koi_perod": 9.9}, None),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_the_field_without_the_data_in_python_and_over_http(shared_pyfunc, shared_server, example,
                                                                          case):
    make, params, exact = REFUSALS[case]
    x = make(example["one"].astype(np.float64))
    with pytest.raises(MlflowException) as exc:
        shared_pyfunc.predict(x, params=params)
    message = exc.value.message
    assert len(message) < 300, message[:500]  # a reason, never the array (13.7 kB before issue 24)
    if exact is not None:
        assert message == exact
    else:
        (field,) = params
        assert field in message, message
    # The same refusal over HTTP (the scoring server's 400 carries the model's message as it is).
    body = {"inputs": x.tolist(), **({"params": params} if params else {})}  # NaN goes as JSON's NaN token
    r = _post(shared_server, body)
    assert r.status_code == 400 and r.json()["message"] == message, r.text[:500]


def test_loading_the_model_never_breaks_a_later_import_of_the_project(model_dir, tmp_path):
    """One process, outside the checkout: load the model, then import every module of the installed project."""
    modules = sorted(".".join(p.relative_to(PROJECT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (PROJECT / "pixel_cnn").rglob("*.py") if p.name != "__main__.py")
    assert "pixel_cnn.io.dataset" in modules and "pixel_cnn.vetter.pyfunc" in modules
    script = f"""
import importlib, json, sys, mlflow
mlflow.pyfunc.load_model({str(model_dir)!r})
failed = {{}}
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)[:200]
import pixel_cnn.vetter.pyfunc, {SERVED_PACKAGE}.pyfunc
print(json.dumps({{"failed": failed, "project": pixel_cnn.vetter.pyfunc.__file__,
                  "served": {SERVED_PACKAGE}.pyfunc.__file__}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] == {}, out
    assert Path(out["project"]).resolve().is_relative_to(PROJECT)
    assert Path(out["served"]).resolve().is_relative_to(model_dir.resolve())


@pytest.mark.slow
def test_environment_built_offline_from_the_model_answers_like_make_serve(shared_model, shared_server,
                                                                          tmp_path_factory):
    assert (WHEELHOUSE / ".complete").exists(), "no wheelhouse: run `make wheelhouse` (`make test` does)"
    root = tmp_path_factory.mktemp("deploy-env")  # pytest's tmp: outside the checkout
    env = {**shared_model["env"], "MLFLOW_ENV_ROOT": str(root / "envs"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "entrypoints.deploy_check", "--model-uri", shared_model["uri"],
           "--env-manager", "uv", "--wheelhouse", str(WHEELHOUSE), "--workdir", str(root / "outside"),
           "--reference-url", shared_server, "--report", str(root / "report.json")]
    proc = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((root / "report.json").read_text())
    print(json.dumps({"seconds": report["seconds"], "disk_bytes": report["env"]["disk_bytes"]}))
    assert report["ok"] and report["offline"]
    e = report["env"]
    assert e["cuda"] is None and e["torch"] == torch.__version__ and e["torch"].endswith("+cpu")
    assert not e["pixel_cnn_importable"]
    assert Path(e["dir"]).is_relative_to(root / "envs") and Path(e["torch_file"]).is_relative_to(root / "envs")
    assert not Path(report["model_dir"]).is_relative_to(PROJECT)
    rows = report["bodies"]
    assert set(rows) == {"serve-example", "serve-fusion-example"}
    assert rows["serve-example"]["make serve"]["predictions"][0]["branch"] == "pixel"
    assert rows["serve-fusion-example"]["make serve"]["predictions"][0]["branch"] == "fused"
    for row in rows.values():
        assert row["same"]
        routes = [k for k in row if k.startswith("environment")]
        assert routes == ["environment, HTTP", "environment, Python float32", "environment, Python float64"]
        for route in routes:
            assert row[route]["predictions"][0]["probability"] == pytest.approx(
                row["make serve"]["predictions"][0]["probability"], rel=1e-6)
