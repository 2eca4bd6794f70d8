"""The served vetter as an ``mlflow.pyfunc`` model: input checks, signatures, HTTP 400s.

Logged by :mod:`pixel_cnn.tracking.served` as "models from code" (no pickled Python), with
the vetter's files (:meth:`~.model.Vetter.save`) as artifacts and this whole folder as its code.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from . import tabular
from .model import Vetter
from .stack import StackError

#: Most numbers one served request may carry: 2**21 values (8 MiB as float32), about 113 stacks
#: of 24 x 24 pixels (the dataset README's largest cut-out; the real files reach 12 x 12, about 455
#: stacks a request). Bigger requests get HTTP 400; split them.
MAX_REQUEST_VALUES = 2**21
#: Input of the served model: any number of stacks of 32 phase bins, any H x W.
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 32, -1, -1))]),
    outputs=Schema([ColSpec("double", "probability"), ColSpec("string", "label"), ColSpec("double", "threshold")]),
)
#: Input of a served vetter with a tabular branch: the same stacks, plus the KOI parameters of the
#: star as MLflow inference ``params`` (``{"inputs": [STACK], "params": {"koi_period": 9.49, ...}}``),
#: each optional (None = not given; units in :data:`~.tabular.ALLOWED_INPUTS`).
FUSION_SIGNATURE = ModelSignature(
    inputs=SIGNATURE.inputs,
    outputs=Schema([ColSpec("double", "probability"), ColSpec("string", "label"), ColSpec("double", "threshold"),
                    ColSpec("double", "pixel_probability", required=False),
                    ColSpec("double", "tabular_probability", required=False),
                    ColSpec("string", "branch"), ColSpec("string", "inputs_used")]),
    params=ParamSchema([ParamSpec(name, "double", None) for name in tabular.ALLOWED_INPUTS]),
)
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
    """Stacks from what pyfunc hands over: ``(N, 32, H, W)`` array or a 1-D object array/list.

    Raises
    ------
    StackError
        A DataFrame, an array of another rank, or more than
        :data:`MAX_REQUEST_VALUES` numbers in all.
    """
    if isinstance(model_input, pd.DataFrame):
        raise StackError(
            "a DataFrame body is not accepted; send {\"inputs\": [STACK, ...]} with each STACK "
            "the nested lists of one (32, H, W) array"
        )
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        if model_input.ndim != 4:
            raise StackError(f"input of rank {model_input.ndim}; expected (N, 32, H, W)")
        stacks = list(model_input)
    else:
        stacks = list(model_input)
    n_values = sum(int(np.size(s)) for s in stacks)
    if n_values > MAX_REQUEST_VALUES:
        raise StackError(
            f"request of {len(stacks)} stacks holds {n_values} values, over the limit of "
            f"{MAX_REQUEST_VALUES} per request; send fewer stacks per request"
        )
    return stacks


class PixelCNNPyfunc(mlflow.pyfunc.PythonModel):
    """``mlflow.pyfunc`` wrapper of the served :class:`~.model.Vetter`.

    Input: float32 array ``(N, 32, H, W)`` (a served JSON body
    ``{"inputs": [STACK, ...]}``, stacks of one size per request), or in-process
    a 1-D object array of stacks of mixed sizes; with a tabular branch, the star's KOI
    parameters as MLflow inference ``params``. Output: DataFrame ``probability`` (float64, of
    CONFIRMED), ``label`` ("CONFIRMED" / "FALSE POSITIVE"), ``threshold`` (float64), one row per
    stack, and each branch's answer when the vetter has a tabular branch
    (:meth:`~.model.Vetter.predict`).

    A bad request raises :class:`BadRequestError`, which the scoring server
    answers with HTTP 400 and the short reason. Rule for batches: one bad
    stack rejects the whole request, and the message names its index
    (``bad request: stack 3: contains 1 NaN value(s)``); nothing is scored partially.
    """

    def load_context(self, context):
        self.vetter = Vetter.from_files(Path(context.artifacts["config"]).parent)

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        try:
            return self.vetter.predict(_as_stack_list(model_input), params)
        except (StackError, tabular.TabularInputError) as exc:
            raise BadRequestError(f"bad request: {exc}") from None


def signature_of(vetter_config: dict) -> ModelSignature:
    """The signature of a vetter: with KOI ``params`` when it has a tabular branch."""
    return FUSION_SIGNATURE if "tabular" in vetter_config["branches"] else SIGNATURE
