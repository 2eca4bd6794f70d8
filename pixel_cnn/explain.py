"""Attribution maps: which input pixels drove a fold network's call. Torch + captum + matplotlib.

No MLflow here (``pixel_cnn.tracking`` logs the figure). Attributions are
captum's Integrated Gradients (Sundararajan, Taly & Yan 2017, "Axiomatic
Attribution for Deep Networks", ICML): the path integral of the gradient of
the logit from a baseline input to the actual input, times the input minus
the baseline. The baseline is all zeros, which for the ``phase``
representation means "no change in any phase bin" (SNR 0) and flat scalars.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
from captum.attr import IntegratedGradients

from pixel_cnn.models import Preset, build_model

#: Riemann steps of the path integral (captum's default is 50; 32 keeps the
#: completeness error below a few per cent on these small networks).
IG_STEPS = 32


def integrated_gradients(preset: Preset, state_dict: dict, x: np.ndarray, n_steps: int = IG_STEPS) -> np.ndarray:
    """Integrated-Gradients attribution of the logit for each input.

    Parameters
    ----------
    preset : Preset
        Builds the network (:func:`pixel_cnn.models.build_model`).
    state_dict : dict
        Trained weights of one fold network.
    x : numpy.ndarray
        float32 ``(N, C, S, S)`` model inputs.
    n_steps : int
        Riemann steps of the integral.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, C, S, S)``, logit units: their sum over ``(C, S, S)``
        approximates ``logit(x) - logit(0)`` (completeness). The network is in
        eval mode, so BatchNorm and dropout are fixed functions.
    """
    model = build_model(preset)
    model.load_state_dict(state_dict)
    model.eval()
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    ig = IntegratedGradients(model)
    attr = ig.attribute(xt, baselines=torch.zeros_like(xt), n_steps=n_steps)
    return attr.detach().numpy().astype(np.float32)


def attribution_figure(
    x: np.ndarray,
    attributions: np.ndarray,
    kepids: np.ndarray,
    labels: np.ndarray,
    prob: np.ndarray,
    n_maps: int,
    title: str = "",
) -> plt.Figure:
    """Per target: the first input channel beside the attribution map summed over image channels.

    Parameters
    ----------
    x, attributions : float ``(N, C, S, S)``; channel 0 is shown (for the
        ``phase`` representation the in-transit SNR map, arcsinh units).
    kepids, labels, prob : ``(N,)`` target ids, true labels (1 = CONFIRMED),
        predicted probability of CONFIRMED.
    n_maps : int
        Leading image channels whose attributions are summed (the trailing
        scalar planes are left out; their share is written in the panel title).
    title : str

    Returns
    -------
    matplotlib.figure.Figure with one row of two panels per pair of targets
    (four panels a row): input in a diverging grey map, attribution in
    red (pushes toward CONFIRMED) / blue (toward FALSE POSITIVE).
    """
    n = len(x)
    cols = 4
    rows = max(1, -(-n // 2))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax_in, ax_attr = axes[i // 2, 2 * (i % 2)], axes[i // 2, 2 * (i % 2) + 1]
        image = x[i, 0]
        lim = float(np.abs(image).max()) or 1.0
        ax_in.imshow(image, cmap="Greys_r", vmin=-lim, vmax=lim)
        truth = "CONF" if labels[i] == 1 else "FP"
        ax_in.set_title(f"{kepids[i]} {truth}", fontsize=7)
        attr_map = attributions[i, :n_maps].sum(0)
        alim = float(np.abs(attr_map).max()) or 1.0
        ax_attr.imshow(attr_map, cmap="RdBu_r", vmin=-alim, vmax=alim)
        scalar_share = float(attributions[i, n_maps:].sum())
        ax_attr.set_title(f"p={prob[i]:.2f} IG (scalars {scalar_share:+.1f})", fontsize=7)
    fig.suptitle(title or "in-transit input | Integrated Gradients", fontsize=9)
    fig.tight_layout()
    return fig
