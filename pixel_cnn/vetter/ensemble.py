"""The fold ensemble: raw stacks in, probabilities out. Pure torch + numpy.

The pixel branch of a served vetter (:class:`~.model.Vetter`). A cv fold's network is saved
on its own as ``config.json`` (resolved preset, threshold, provenance) and ``weights.pt``
(:func:`save_members`; ``torch.load(weights_only=True)``: a format that cannot run code).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .networks import FusedPhaseEnsemble, Preset, build_model
from .representation import build_inputs

LABELS = {1: "CONFIRMED", 0: "FALSE POSITIVE"}
CONFIG_FILE, WEIGHTS_FILE = "config.json", "weights.pt"
#: Preset ``arch`` values whose members run fused (:class:`~pixel_cnn.vetter.networks.FusedPhaseEnsemble`).
FUSABLE_ARCHS = ("phase", "hybrid")


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
        # the members as one grouped network: the same probabilities (to float32 rounding), faster (make bench)
        self.fused = FusedPhaseEnsemble(self.members) if preset.arch in FUSABLE_ARCHS else None

    @classmethod
    def from_files(cls, config_path: str | Path, weights_path: str | Path) -> "Ensemble":
        """The networks saved by :func:`save_members` (a cv fold's ``model/`` folder)."""
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
