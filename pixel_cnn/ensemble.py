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

from pixel_cnn.models import Preset, build_model
from pixel_cnn.representation import StackError, build_inputs

LABELS = {1: "CONFIRMED", 0: "FALSE POSITIVE"}
CONFIG_FILE, WEIGHTS_FILE = "config.json", "weights.pt"


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

    @classmethod
    def from_files(cls, config_path: str | Path, weights_path: str | Path) -> "Ensemble":
        config = json.loads(Path(config_path).read_text())
        state_dicts = torch.load(weights_path, map_location="cpu", weights_only=True)
        return cls(Preset.from_dict(config["preset"]), state_dicts, config["threshold"])

    @torch.no_grad()
    def predict_inputs(self, x: np.ndarray) -> np.ndarray:
        """Model inputs ``(N, C, S, S)`` float32 -> mean probability float64 ``(N,)``."""
        xt = torch.as_tensor(x, dtype=torch.float32)
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
    """Stacks from what pyfunc hands over: ``(N, 32, H, W)`` array or a 1-D object array/list."""
    if isinstance(model_input, pd.DataFrame):
        raise StackError(
            "a DataFrame body is not accepted; send {\"inputs\": [STACK, ...]} with each STACK "
            "the nested lists of one (32, H, W) array"
        )
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        if model_input.ndim != 4:
            raise StackError(f"input of rank {model_input.ndim}; expected (N, 32, H, W)")
        return list(model_input)
    return list(model_input)


class PixelCNNPyfunc(mlflow.pyfunc.PythonModel):
    """``mlflow.pyfunc`` wrapper of :class:`Ensemble`.

    Input: float32 array ``(N, 32, H, W)`` (a served JSON body
    ``{"inputs": [STACK, ...]}``, stacks of one size per request), or in-process
    a 1-D object array of stacks of mixed sizes. Output: DataFrame
    ``probability`` (float64, of CONFIRMED), ``label`` ("CONFIRMED" /
    "FALSE POSITIVE"), ``threshold`` (float64), one row per stack. A bad stack
    raises ``MlflowException(INVALID_PARAMETER_VALUE)``, which the scoring
    server answers with HTTP 400 and the message.
    """

    def load_context(self, context):
        self.ensemble = Ensemble.from_files(context.artifacts["config"], context.artifacts["weights"])

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        try:
            return self.ensemble.predict_stacks(_as_stack_list(model_input))
        except StackError as exc:
            raise MlflowException(f"bad input stack: {exc}", error_code=INVALID_PARAMETER_VALUE) from None
