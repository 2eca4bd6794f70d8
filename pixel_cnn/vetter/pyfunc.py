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
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from . import tabular
from .model import Vetter
from .stack import StackError

#: Most numbers one served request may carry: 2**21 values (8 MiB as float32), about 113 stacks
#: of 24 x 24 pixels (the dataset README's largest cut-out; the real files reach 12 x 12, about 455
#: stacks a request). Bigger requests get HTTP 400; split them.
MAX_REQUEST_VALUES = 2**21
#: The KOI parameters every served model declares as MLflow inference ``params`` (each optional, None =
#: not given; units in :data:`~.tabular.SERVED_PARAMETERS`: the model inputs, DV diagnostics included, and
#: ``ra``, ``dec``, the epoch and uncertainties that feed derived and catalogue-context features): a model with a tabular branch reads them, a
#: model without one says in its answer that it did not use them (``tabular_reason``), so every
#: registered model answers the same request and MLflow never drops them silently.
PARAMS = ParamSchema([ParamSpec(name, "double", None) for name in tabular.SERVED_PARAMETERS])
#: The answer's columns: ``probability``, ``label``, ``threshold``; then (a model with a tabular branch,
#: or any model given KOI parameters) each branch's answer and why the tabular branch did not answer.
OUTPUTS = Schema([ColSpec("double", "probability"), ColSpec("string", "label"), ColSpec("double", "threshold"),
                  ColSpec("double", "pixel_probability", required=False),
                  ColSpec("double", "tabular_probability", required=False),
                  ColSpec("string", "branch", required=False), ColSpec("string", "inputs_used", required=False),
                  ColSpec("string", "tabular_reason", required=False)])
#: Input of the served model (the model checks it itself, :func:`_as_stack_list` and
#: :func:`~.stack.validate_stack`; written in the MLmodel's ``metadata`` as ``input``): any number of
#: stacks of 32 phase bins, any H x W, any real dtype, and the star's KOI parameters as ``params``.
INPUT_DOC = ("stacks of 32 phase bins x H x W pixels (3 <= H, W <= 64), fractional flux change, any real "
             "dtype: an (N, 32, H, W) array, a 1-D object array or list of (32, H, W) arrays, or a "
             "one-column DataFrame/Series of them; JSON {\"inputs\": [STACK, ...], \"params\": {KOI "
             "parameters}}")
#: The signature: outputs and KOI ``params``, no input schema on purpose. MLflow's tensor schema takes
#: one dtype only (a float32 spec refused a float64 array in Python, with the whole array in the
#: message, while JSON was cast to it) and its refusals repeat the input; the model checks the
#: stacks itself, the same for every route (:data:`INPUT_DOC`).
SIGNATURE = ModelSignature(inputs=None, outputs=OUTPUTS, params=PARAMS)
#: The signature of a vetter with a tabular branch (the same: kept as a name for callers).
FUSION_SIGNATURE = SIGNATURE


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
    (:func:`~.stack.validate_stack`): the answers do not depend on the dtype.

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
    """``mlflow.pyfunc`` wrapper of the served :class:`~.model.Vetter`.

    Input: array ``(N, 32, H, W)``, float32 or float64, the same answers (a served JSON body
    ``{"inputs": [STACK, ...]}``, stacks of one size per request), or in-process
    a 1-D object array or list of stacks of mixed sizes, or a one-column DataFrame of stacks; with a tabular branch, the star's KOI
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
        refuse_unknown_params()

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        try:
            return self.vetter.predict(_as_stack_list(model_input), params)
        except (StackError, tabular.TabularInputError) as exc:
            raise BadRequestError(f"bad request: {exc}") from None


def signature_of(vetter_config: dict) -> ModelSignature:
    """The signature of a vetter: stacks in, KOI ``params`` declared whatever its branches (:data:`PARAMS`)."""
    return SIGNATURE


def _is_vetter_schema(schema) -> bool:
    """Whether a params schema is this package's (:data:`PARAMS`: exactly the KOI parameter names)."""
    return isinstance(schema, ParamSchema) and {p.name for p in schema.params} == set(tabular.SERVED_PARAMETERS)


def unknown_params_message(unknown: list[str]) -> str:
    """The refusal of parameter names a model does not read: each name, the served names closest to
    it (``difflib.get_close_matches``), and where the full list is; short whatever the list's length."""
    import difflib

    parts = []
    for name in unknown:
        near = difflib.get_close_matches(name, tabular.SERVED_PARAMETERS, n=3)
        parts.append(repr(name) + (f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""))
    return (f"bad request: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(parts)}; the "
            f"{len(tabular.SERVED_PARAMETERS)} parameters are the model signature's params (KOI table names)")


def refuse_unknown_params() -> None:
    """Make MLflow refuse, with HTTP 400 naming it, a parameter name a pixel-cnn model does not declare.

    MLflow 3.x (``mlflow.models.utils._enforce_params_schema``, called by ``PyFuncModel.predict``
    before the model sees anything) drops a name that is not in the params schema with a log warning
    only, and has no option to refuse it. This wraps that function, as ``mlflow.pyfunc`` calls it,
    for the models whose params schema is :data:`PARAMS` (any other model keeps MLflow's behaviour):
    a request with an unknown name raises :class:`BadRequestError` (``bad request: unknown parameter
    'koi_perod'; ...``). Installed when a model loads (:meth:`PixelCNNPyfunc.load_context`); idempotent.
    """
    import mlflow.pyfunc as pyfunc_module

    original = pyfunc_module._enforce_params_schema
    if getattr(original, "_refuses_unknown", False):
        return

    def enforce(params, schema):
        if isinstance(params, dict) and _is_vetter_schema(schema):
            unknown = sorted(str(k) for k in params if str(k) not in tabular.SERVED_PARAMETERS)
            if unknown:
                raise BadRequestError(unknown_params_message(unknown))
        return original(params, schema)

    enforce._refuses_unknown = True
    pyfunc_module._enforce_params_schema = enforce
