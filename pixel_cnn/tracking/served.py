"""How a vetter is logged as an ``mlflow.pyfunc`` model: its files, its code folder, its requirements.

The model is "models from code" (no pickled Python): a small generated ``serving_model.py``
that builds :class:`pixel_cnn.vetter.pyfunc.PixelCNNPyfunc`, the vetter's files
(:meth:`pixel_cnn.vetter.model.Vetter.save`) as artifacts, and as its code the whole
``pixel_cnn/vetter/`` folder, shipped under its own top-level name :data:`SERVED_PACKAGE`
(the folder imports itself by relative import only: ``tests/test_layout.py``). Loading a model
therefore never shadows the installed ``pixel_cnn``, and the model loads and serves from any
directory. The vetter's description (:meth:`~pixel_cnn.vetter.model.Vetter.describe`) is the
model's MLflow metadata (``vetter``), so a loaded model says what it is.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np

from pixel_cnn.vetter.model import Vetter
from pixel_cnn.vetter.pyfunc import INPUT_DOC, signature_of

#: The top-level name the served folder ships under (never ``pixel_cnn``: no shadowing).
SERVED_PACKAGE = "pixel_cnn_vetter"
#: The folder that is the served model's whole code.
SERVED_DIR = Path(__file__).resolve().parents[1] / "vetter"
#: The models-from-code file MLflow runs at load time.
SERVING_MODEL = f'''"""Model code for mlflow.pyfunc "models from code": no pickled Python in the model.

The vetter's code is the folder code/{SERVED_PACKAGE}/ beside this file. It is put on sys.path
here (MLflow does so at load time, not when the model is logged), and a {SERVED_PACKAGE}
imported earlier in this process from another model's folder is dropped first, so each
model runs its own code.
"""

import sys
from pathlib import Path

from mlflow.models import set_model

_code = Path(__file__).resolve().parent / "code"
for _name in [m for m in sys.modules if m.split(".")[0] == "{SERVED_PACKAGE}"]:
    if not str(getattr(sys.modules[_name], "__file__", "") or "").startswith(str(_code)):
        del sys.modules[_name]
if str(_code) not in sys.path:
    sys.path.insert(0, str(_code))

from {SERVED_PACKAGE}.pyfunc import PixelCNNPyfunc  # noqa: E402

set_model(PixelCNNPyfunc())
'''


def pip_requirements() -> list[str]:
    """The model's pip requirements: the whole resolved set it runs on, pinned from ``constraints.txt``.

    The CPU build of torch (PyTorch's CPU index as an extra index), every transitive runtime
    dependency of the shipped folder (:data:`SERVED_DIR`) and of the scoring server (``uvloop``:
    with ``--workers N`` uvicorn's asyncio loop serves without TCP_NODELAY, uvicorn issue #3149,
    +40 ms a keep-alive request; uvloop sets it; not on Windows). Built by
    :func:`pixel_cnn.tracking.requirements.model_requirements`.

    Raises
    ------
    pixel_cnn.tracking.requirements.RequirementsError
        A package the model needs has no pin in ``constraints.txt`` (the message names it).
    """
    from pixel_cnn.tracking.requirements import model_requirements

    return model_requirements(served_files())


def served_files() -> list[Path]:
    """The Python files the model ships: every ``.py`` of :data:`SERVED_DIR`, sorted."""
    return sorted(SERVED_DIR.glob("*.py"))


def served_code(dest: Path) -> Path:
    """Copy the served folder (every ``.py`` of ``pixel_cnn/vetter/``) to ``dest/``:data:`SERVED_PACKAGE`."""
    root = Path(dest) / SERVED_PACKAGE
    root.mkdir(parents=True, exist_ok=True)
    for path in served_files():
        shutil.copyfile(path, root / path.name)
    return root


def log_vetter(run_id: str, config: dict, pixel_state_dicts: list[dict] | None = None, tabular_model=None,
               registered_model_name: str | None = None, input_example: np.ndarray | None = None,
               catalogue: pd.DataFrame | None = None):
    """Log a vetter as ``model`` of run ``run_id``; returns MLflow's ``ModelInfo``.

    ``config`` is the vetter's ``config.json`` (:class:`~pixel_cnn.vetter.model.Vetter`); the
    files are checked by building the vetter before anything is logged. Registers it as
    ``registered_model_name`` when given. The signature takes KOI ``params`` when the vetter
    has a tabular branch (:func:`pixel_cnn.vetter.pyfunc.signature_of`). ``catalogue``: the KOI context
    catalogue a tabular branch computes its context features against, shipped as an artifact.

    Raises
    ------
    ValueError
        ``config`` and the given branches disagree (:class:`~pixel_cnn.vetter.model.Vetter`).
    """
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # predict() takes stacks of any size on purpose: no type-hint validation wanted.
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        artifacts = Vetter.save(Path(tmp) / "artifacts", config, pixel_state_dicts, tabular_model, catalogue)
        description = Vetter.from_files(Path(tmp) / "artifacts").describe()
        code = served_code(Path(tmp) / "code")
        model_file = Path(tmp) / "serving_model.py"
        model_file.write_text(SERVING_MODEL)
        with mlflow.start_run(run_id=run_id, nested=bool(mlflow.active_run())):
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(model_file),
                artifacts=artifacts,
                code_paths=[str(code)],
                pip_requirements=pip_requirements(),
                signature=signature_of(config),
                input_example=input_example,
                registered_model_name=registered_model_name,
                metadata={"vetter": description, "input": INPUT_DOC},
            )
