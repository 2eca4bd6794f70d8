"""The fold ensemble as an ``mlflow.pyfunc`` model: raw stacks in, probabilities out.

The model directory holds ``config.json`` (resolved preset, decision
threshold, provenance) and ``weights.pt`` (one ``state_dict`` per member,
loaded with ``torch.load(weights_only=True)``: a format that cannot run code).
The ``pixel_cnn`` package ships inside the model (``code_paths``), so it loads
and serves from any directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from pixel_cnn.models import FusedPhaseEnsemble, Preset, build_model
from pixel_cnn.representation import StackError, build_inputs

LABELS = {1: "CONFIRMED", 0: "FALSE POSITIVE"}
CONFIG_FILE, WEIGHTS_FILE = "config.json", "weights.pt"
#: Most numbers one served request may carry: 2**21 values (8 MiB as float32), about 113 stacks
#: of 24 x 24 pixels (the dataset README's largest cut-out; the real files reach 12 x 12, about 455
#: stacks a request). Bigger requests get HTTP 400; split them.
MAX_REQUEST_VALUES = 2**21
#: Preset ``arch`` values whose members run fused (:class:`~pixel_cnn.models.FusedPhaseEnsemble`).
FUSABLE_ARCHS = ("phase", "hybrid")


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


def save_members(out_dir: Path, preset: Preset, state_dicts: list[dict], threshold: float, info: dict) -> dict[str, str]:
    """Write ``config.json`` and ``weights.pt`` for a pyfunc model; returns its ``artifacts`` map."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"preset": preset.to_dict(), "threshold": float(threshold), "n_members": len(state_dicts), **info}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    torch.save([dict(sd) for sd in state_dicts], out_dir / WEIGHTS_FILE)
    return {"config": str(out_dir / CONFIG_FILE), "weights": str(out_dir / WEIGHTS_FILE)}


class Ensemble:
    """Mean probability of several fold networks of one preset. Pure torch + numpy.

    Parameters
    ----------
    preset : Preset
    state_dicts : list of dict
        One per member network.
    threshold : float
        ``probability >= threshold`` is called CONFIRMED.
    """

    def __init__(self, preset: Preset, state_dicts: list[dict], threshold: float):
        self.preset, self.threshold = preset, float(threshold)
        self.members = []
        for sd in state_dicts:
            net = build_model(preset)
            net.load_state_dict(sd)
            net.eval()
            self.members.append(net)
        # the members as one grouped network: same probabilities (to ~1e-7), a third of the time
        self.fused = FusedPhaseEnsemble(self.members) if preset.arch in FUSABLE_ARCHS else None

    @classmethod
    def from_files(cls, config_path: str | Path, weights_path: str | Path) -> "Ensemble":
        config = json.loads(Path(config_path).read_text())
        state_dicts = torch.load(weights_path, map_location="cpu", weights_only=True)
        return cls(Preset.from_dict(config["preset"]), state_dicts, config["threshold"])

    @torch.no_grad()
    def predict_inputs(self, x: np.ndarray) -> np.ndarray:
        """Model inputs ``(N, C, S, S)`` float32 -> mean probability float64 ``(N,)``."""
        xt = torch.as_tensor(x, dtype=torch.float32)
        if self.fused is not None:
            return self.fused(xt).double().numpy()
        probs = [torch.sigmoid(net(xt)) for net in self.members]
        return torch.stack(probs).mean(0).double().numpy()

    def predict_stacks(self, stacks) -> pd.DataFrame:
        """Raw stacks (any mix of H x W) -> ``probability, label, threshold`` per stack.

        Raises
        ------
        StackError
            A stack cannot be used (message names its index and the problem);
            NaN values are refused here (a served input must be complete).
        """
        x = build_inputs(stacks, self.preset.representation, self.preset.image_size, nan="reject")
        prob = self.predict_inputs(x)
        return pd.DataFrame({
            "probability": prob,
            "label": [LABELS[int(p >= self.threshold)] for p in prob],
            "threshold": self.threshold,
        })


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
    """``mlflow.pyfunc`` wrapper of :class:`Ensemble`.

    Input: float32 array ``(N, 32, H, W)`` (a served JSON body
    ``{"inputs": [STACK, ...]}``, stacks of one size per request), or in-process
    a 1-D object array of stacks of mixed sizes. Output: DataFrame
    ``probability`` (float64, of CONFIRMED), ``label`` ("CONFIRMED" /
    "FALSE POSITIVE"), ``threshold`` (float64), one row per stack.

    A bad request raises :class:`BadRequestError`, which the scoring server
    answers with HTTP 400 and the short reason. Rule for batches: one bad
    stack rejects the whole request, and the message names its index
    (``bad request: stack 3: contains 1 NaN value(s)``); nothing is scored partially.
    """

    def load_context(self, context):
        self.ensemble = Ensemble.from_files(context.artifacts["config"], context.artifacts["weights"])

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        try:
            return self.ensemble.predict_stacks(_as_stack_list(model_input))
        except StackError as exc:
            raise BadRequestError(f"bad request: {exc}") from None
