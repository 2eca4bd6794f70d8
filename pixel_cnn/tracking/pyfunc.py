"""The fold ensemble as an ``mlflow.pyfunc`` model, and how it is logged.

The model is logged as "models from code" (:mod:`pixel_cnn.tracking.serving_model`,
no pickled Python) with the ensemble's ``config.json`` and ``weights.pt`` as
artifacts. Its code is only the modules serving imports (:data:`SERVED_MODULES`),
copied with the package layout, so it loads and serves from any directory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from pixel_cnn.core import ensemble as ens
from pixel_cnn.core import tabular
from pixel_cnn.core.models import Preset
from pixel_cnn.core.stack import StackError

#: Most numbers one served request may carry: 2**21 values (8 MiB as float32), about 113 stacks
#: of 24 x 24 pixels (the dataset README's largest cut-out; the real files reach 12 x 12, about 455
#: stacks a request). Bigger requests get HTTP 400; split them.
MAX_REQUEST_VALUES = 2**21
#: Input of the served model (the model checks it itself, see :func:`_as_stack_list`; written in
#: the MLmodel's ``metadata``): any number of stacks of 32 phase bins, any H x W, any real dtype.
#: No input schema on purpose: MLflow's tensor schema takes one dtype only (a float32 spec refuses
#: a float64 array in Python while JSON is cast to it) and its refusals repeat the whole input.
INPUT_DOC = ("stacks of 32 phase bins x H x W pixels (3 <= H, W <= 64), fractional flux change, any real "
             "dtype: an (N, 32, H, W) array, a 1-D object array or list of (32, H, W) arrays, or a "
             "one-column DataFrame/Series of them; JSON {\"inputs\": [STACK, ...]}")
SIGNATURE = ModelSignature(
    inputs=None,
    outputs=Schema([ColSpec("double", "probability"), ColSpec("string", "label"), ColSpec("double", "threshold")]),
)
#: Input of the served fusion model: the same stacks, plus the KOI parameters of the star as
#: MLflow inference ``params`` (``{"inputs": [STACK], "params": {"koi_period": 9.49, ...}}``),
#: each optional (None = not given; units in :data:`pixel_cnn.core.tabular.ALLOWED_INPUTS`).
FUSION_SIGNATURE = ModelSignature(
    inputs=SIGNATURE.inputs,
    outputs=Schema([ColSpec("double", "probability"), ColSpec("string", "label"), ColSpec("double", "threshold"),
                    ColSpec("double", "pixel_probability"), ColSpec("double", "tabular_probability", required=False),
                    ColSpec("string", "branch"), ColSpec("string", "inputs_used")]),
    params=ParamSchema([ParamSpec(name, "double", None) for name in tabular.ALLOWED_INPUTS]),
)
#: The package's files that the served model imports (paths inside ``pixel_cnn/``): its whole code.
SERVED_MODULES = (
    "__init__.py",
    "core/__init__.py", "core/stack.py", "core/vetting.py", "core/representation.py", "core/models.py",
    "core/ensemble.py", "core/tabular.py", "core/combiner.py",
    "tracking/__init__.py", "tracking/pyfunc.py", "tracking/serving_model.py", "tracking/requirements.py",
)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


class BadRequestError(MlflowException):
    """A served request that cannot be scored: HTTP 400 with a short, fixed message.

    MLflow's scoring server (``mlflow/pyfunc/scoring_server/__init__.py``,
    ``invocations``) rewrites the message of any ``MlflowException`` raised by
    ``predict`` to ``"Failed to predict data '<repr of the whole input>'. Error: ..."``:
    kilobytes of numbers before the reason. The message of this exception is
    fixed when it is raised, so the client gets the reason alone; the error
    code stays ``INVALID_PARAMETER_VALUE`` (HTTP 400).
    """

    def __init__(self, message: str):
        self._fixed_message = str(message)
        super().__init__(self._fixed_message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._fixed_message

    @message.setter
    def message(self, value: str) -> None:
        """Ignore rewrites (the scoring server's input-repr prefix); keep the reason."""


def _as_stack_list(model_input) -> list:
    """Stacks from what pyfunc hands over: ``(N, 32, H, W)`` array of any real dtype (float32 from a
    file, float64 from JSON), a 1-D object array/list of ``(32, H, W)`` arrays, or a one-column
    DataFrame/Series of them (``dataframe_split`` bodies). Each stack is checked later
    (:func:`pixel_cnn.core.stack.validate_stack`): the answers do not depend on the dtype.

    Raises
    ------
    StackError
        A DataFrame of several columns, an array of another rank, another type, or more than
        :data:`MAX_REQUEST_VALUES` numbers in all; the message names the problem, never the data.
    """
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] != 1:
            raise StackError(
                f"a DataFrame input has one column, each cell one (32, H, W) stack; got "
                f"{model_input.shape[1]} columns"
            )
        model_input = model_input.iloc[:, 0]
    if isinstance(model_input, pd.Series):
        model_input = model_input.tolist()
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        if model_input.ndim != 4:
            shape = "x".join(map(str, model_input.shape)) or "a scalar"
            raise StackError(f"input of rank {model_input.ndim} ({shape}); expected (N, 32, H, W)")
        stacks = list(model_input)
    elif isinstance(model_input, (list, tuple, np.ndarray)):
        stacks = list(model_input)
    else:
        raise StackError(f"input of type {type(model_input).__name__}; expected stacks (N, 32, H, W)")
    n_values = sum(int(np.size(s)) for s in stacks)
    if n_values > MAX_REQUEST_VALUES:
        raise StackError(
            f"request of {len(stacks)} stacks holds {n_values} values, over the limit of "
            f"{MAX_REQUEST_VALUES} per request; send fewer stacks per request"
        )
    return stacks


class PixelCNNPyfunc(mlflow.pyfunc.PythonModel):
    """``mlflow.pyfunc`` wrapper of :class:`Ensemble`.

    Input: array ``(N, 32, H, W)``, float32 or float64 (a served JSON body
    ``{"inputs": [STACK, ...]}``, stacks of one size per request), or in-process
    a 1-D object array of stacks of mixed sizes, or a one-column DataFrame of stacks. Output: DataFrame
    ``probability`` (float64, of CONFIRMED), ``label`` ("CONFIRMED" /
    "FALSE POSITIVE"), ``threshold`` (float64), one row per stack.

    A bad request raises :class:`BadRequestError`, which the scoring server
    answers with HTTP 400 and the short reason. Rule for batches: one bad
    stack rejects the whole request, and the message names its index
    (``bad request: stack 3: contains 1 NaN value(s)``); nothing is scored partially.
    """

    def load_context(self, context):
        self.ensemble = ens.Ensemble.from_files(context.artifacts["config"], context.artifacts["weights"])
        self.fusion = None
        if "tabular" in context.artifacts:  # a fusion model (preset ``fusion``): pixel + tabular + combiner
            from pixel_cnn.core.combiner import Combiner, FusionPredictor, loads_tabular

            config = json.loads(Path(context.artifacts["config"]).read_text())["fusion"]
            self.fusion = FusionPredictor(self.ensemble, loads_tabular(Path(context.artifacts["tabular"]).read_bytes()),
                                          Combiner.from_dict(config["combiner"]), config["threshold"])
        release_code_path(Path(context.artifacts["config"]).resolve().parents[1] / "code")

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        try:
            if self.fusion is not None:
                return self.fusion.predict(_as_stack_list(model_input), params)
            return self.ensemble.predict_stacks(_as_stack_list(model_input))
        except (StackError, tabular.TabularInputError) as exc:
            raise BadRequestError(f"bad request: {exc}") from None


def release_code_path(code_dir: Path) -> None:
    """Take the model's own code folder off ``sys.path`` once the model is loaded.

    MLflow puts ``code_paths`` first on ``sys.path`` before it runs the model's
    code. The model ships only :data:`SERVED_MODULES`, so left there the folder
    would shadow the installed ``pixel_cnn`` for every later import, in this
    process and in the processes it starts (joblib and multiprocessing copy
    ``sys.path``): ``pixel_cnn.io`` would not be found. Everything the model
    needs is imported by now.
    """
    target = os.path.realpath(code_dir)
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != target]


def pip_requirements() -> list[str]:
    """The model's pip requirements: the whole resolved set it runs on, pinned from ``constraints.txt``.

    The CPU build of torch (PyTorch's CPU index as an extra index), every transitive runtime
    dependency of the shipped code and of the scoring server (``uvloop``: with ``--workers N``
    uvicorn's asyncio loop serves without TCP_NODELAY, uvicorn issue #3149, +40 ms a keep-alive
    request; uvloop sets it; not on Windows). Built by
    :func:`pixel_cnn.tracking.requirements.model_requirements`.
    """
    from pixel_cnn.tracking.requirements import model_requirements

    return model_requirements([PACKAGE_DIR / rel for rel in SERVED_MODULES])


def served_code(dest: Path) -> Path:
    """Copy :data:`SERVED_MODULES` into ``dest/pixel_cnn`` (package layout kept); returns that folder."""
    root = Path(dest) / "pixel_cnn"
    for rel in SERVED_MODULES:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR / rel, target)
    return root


def log_pyfunc(run_id: str, preset: Preset, state_dicts: list[dict], threshold: float, info: dict,
               registered_model_name: str | None = None, input_example: np.ndarray | None = None,
               tabular_model=None):
    """Log a :class:`PixelCNNPyfunc` of ``state_dicts`` as ``model`` of ``run_id``; returns the ``ModelInfo``.

    Registers it as ``registered_model_name`` when given. With ``tabular_model`` (a fusion
    model) the tabular branch is saved as ``tabular.skops`` and ``info`` must hold ``fusion``
    = ``{"combiner": Combiner.to_dict(), "threshold": fused threshold, ...}``; ``threshold``
    is then the pixel-only one. The model then takes KOI parameters (:data:`FUSION_SIGNATURE`).
    """
    signature = SIGNATURE
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # predict() takes stacks of any size on purpose: no type-hint validation wanted.
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        artifacts = ens.save_members(Path(tmp) / "artifacts", preset, state_dicts, threshold, info)
        if tabular_model is not None:
            from pixel_cnn.core.combiner import dumps_tabular

            if "fusion" not in info:
                raise ValueError("a fusion model needs info['fusion'] (combiner and fused threshold)")
            path = Path(tmp) / "artifacts" / "tabular.skops"
            path.write_bytes(dumps_tabular(tabular_model))
            artifacts["tabular"], signature = str(path), FUSION_SIGNATURE
        code = served_code(Path(tmp) / "code")
        with mlflow.start_run(run_id=run_id, nested=bool(mlflow.active_run())):
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code / "tracking" / "serving_model.py"),
                artifacts=artifacts,
                code_paths=[str(code)],
                pip_requirements=pip_requirements(),
                signature=signature,
                metadata={"input": INPUT_DOC},
                input_example=input_example,
                registered_model_name=registered_model_name,
            )
