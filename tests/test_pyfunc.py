"""tracking/pyfunc.py: the served model ships only the modules it imports, and they are enough."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import torch

from pixel_cnn.vetter.networks import build_model, get_preset
from pixel_cnn.vetter.pyfunc import PACKAGE_DIR, SERVED_MODULES, log_pyfunc
from pixel_cnn.tracking.runs import set_experiment
from tests.support import PROJECT


def _package_imports(path: Path) -> set[str]:
    """Files of the package (relative to it) that ``path`` imports, at any depth."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if not name.startswith("pixel_cnn"):
                continue
            rel = Path(*name.split(".")[1:])
            for candidate in (rel.with_suffix(".py"), rel / "__init__.py"):
                if (PACKAGE_DIR / candidate).is_file():
                    out.add(candidate.as_posix())
    return out


def test_served_modules_hold_every_package_module_they_import():
    shipped = set(SERVED_MODULES)
    for rel in SERVED_MODULES:
        missing = _package_imports(PACKAGE_DIR / rel) - shipped
        assert not missing, f"{rel} imports {sorted(missing)}, not shipped with the model"
    # and every package folder on the way is a package in the model too
    for rel in SERVED_MODULES:
        for parent in Path(rel).parents:
            if parent != Path("."):
                assert (parent / "__init__.py").as_posix() in shipped


def test_logged_model_loads_and_scores_with_its_own_code_only(tracking_store, real_dataset, tmp_path):
    """Load the model in a process where the checkout's package cannot be imported."""
    torch.manual_seed(0)
    preset = get_preset("seed")
    set_experiment("pyfunc-test")  # this store's; never an experiment id left by another test
    with mlflow.start_run() as run:
        info = log_pyfunc(run.info.run_id, preset, [build_model(preset).state_dict()], 0.5, {"test": True})
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model")))
    shipped = sorted(p.relative_to(local / "code" / "pixel_cnn").as_posix()
                     for p in (local / "code" / "pixel_cnn").rglob("*.py"))
    assert shipped == sorted(SERVED_MODULES)
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
import pixel_cnn
out = model.predict(np.load({str(tmp_path / 'stack.npy')!r})[None])
print(json.dumps({{"package": pixel_cnn.__file__, "p": float(out["probability"][0])}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["package"].startswith(str(local))
    expected = mlflow.pyfunc.load_model(str(local)).predict(stack[None])["probability"][0]
    assert abs(answer["p"] - expected) < 1e-6
    # loaded here too: its code folder must not stay on sys.path to shadow the installed package
    assert not [p for p in sys.path if p and Path(p).resolve() == (local / "code").resolve()]
