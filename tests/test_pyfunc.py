"""tracking/served.py: the served model ships the ``vetter/`` folder under its own name, and it is enough."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import torch

from pixel_cnn.tracking.runs import set_experiment
from pixel_cnn.tracking.served import SERVED_DIR, SERVED_PACKAGE, log_vetter
from pixel_cnn.vetter.networks import build_model, get_preset
from tests.support import PROJECT


def test_the_served_package_name_is_not_the_project_package():
    assert SERVED_PACKAGE != "pixel_cnn" and not (PROJECT / SERVED_PACKAGE).exists()
    assert SERVED_DIR == PROJECT / "pixel_cnn" / "vetter"


def test_logged_model_loads_and_scores_with_its_own_code_only(tracking_store, real_dataset, tmp_path):
    """Load the model in a process where the checkout's package cannot be imported; then the project's
    package still imports in the same process as the checkout (nothing shadowed)."""
    torch.manual_seed(0)
    preset = get_preset("seed")
    config = {"vetter": "seed", "branches": ["pixel"], "threshold": 0.5, "thresholds": {"pixel": 0.5},
              "combiner": None, "preset": preset.to_dict(), "training_kepids": [1, 2]}
    set_experiment("pyfunc-test")  # this store's; never an experiment id left by another test
    with mlflow.start_run() as run:
        info = log_vetter(run.info.run_id, config, [build_model(preset).state_dict()])
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model")))
    shipped = sorted(p.name for p in (local / "code" / SERVED_PACKAGE).glob("*.py"))
    assert shipped == sorted(p.name for p in SERVED_DIR.glob("*.py"))
    assert not (local / "code" / "pixel_cnn").exists()
    stack = real_dataset.stack_list()[0]
    np.save(tmp_path / "stack.npy", stack)
    script = f"""
import sys
sys.meta_path = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
sys.path = [p for p in sys.path if p not in ("", {str(PROJECT)!r})]
import importlib.util, json
assert importlib.util.find_spec("pixel_cnn") is None, "the checkout's package is importable"
import mlflow, numpy as np
model = mlflow.pyfunc.load_model({str(local)!r})
import {SERVED_PACKAGE}
out = model.predict(np.load({str(tmp_path / 'stack.npy')!r})[None])
print(json.dumps({{"package": {SERVED_PACKAGE}.__file__, "p": float(out["probability"][0]),
                  "vetter": model.metadata.metadata["vetter"]["vetter"]}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["package"].startswith(str(local)) and answer["vetter"] == "seed"
    expected = mlflow.pyfunc.load_model(str(local)).predict(stack[None])["probability"][0]
    assert abs(answer["p"] - expected) < 1e-6

    # Regression (a notebook that loads the champion, then uses the library): load first, then import
    # every module of the project in the same process.
    modules = sorted(".".join(p.relative_to(PROJECT).with_suffix("").parts)
                     for p in (PROJECT / "pixel_cnn").rglob("*.py") if p.name != "__main__.py")
    script = f"""
import importlib, mlflow
mlflow.pyfunc.load_model({str(local)!r})
for name in {modules!r}:
    importlib.import_module(name)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
