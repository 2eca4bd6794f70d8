"""Attribution maps: which input pixels drove a fold network's call. Torch + captum + matplotlib.

No MLflow here (``pixel_cnn.tracking.runs`` logs the figure). Attributions are
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

from pixel_cnn.drawing.colours import ATTRIBUTION_CMAP, ATTRIBUTION_MEANING  # noqa: F401 - re-exported
from pixel_cnn.vetter.networks import Preset, build_model

#: Riemann steps of the path integral (captum's default is 50; 32 keeps the
#: completeness error below a few per cent on these small networks).
IG_STEPS = 32


def integrated_gradients(preset: Preset, state_dict: dict, x: np.ndarray, n_steps: int = IG_STEPS) -> np.ndarray:
    """Integrated-Gradients attribution of the logit for each input.

    Parameters
    ----------
    preset : Preset
        Builds the network (:func:`pixel_cnn.vetter.networks.build_model`).
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
    matplotlib.figure.Figure with one row of two tiles per pair of targets
    (four tiles a row): input in a diverging grey map, attribution in
    :data:`ATTRIBUTION_CMAP`: green (pushes toward CONFIRMED) / magenta (toward FALSE POSITIVE), the
    colours of the vetting sheets' attribution panel; each tile
    scaled to its own largest absolute value. The tiles are colour-mapped here
    and drawn as one image on one axes (one axes per tile took 2 s per fold
    to draw and save; this takes a tenth of that).
    """
    n, size = len(x), x.shape[-1]
    per_row, gap, band = 4, max(1, size // 8), max(3, size // 3)  # band: room for a tile's caption
    rows = max(1, -(-n // 2))
    cell_w, cell_h = size + gap, size + band
    mosaic = np.ones((rows * cell_h, per_row * cell_w - gap, 3))
    grey, attr_cmap = plt.get_cmap("Greys_r"), plt.get_cmap(ATTRIBUTION_CMAP)
    captions = []
    for i in range(n):
        image, attr_map = x[i, 0], attributions[i, :n_maps].sum(0)
        tiles = [(image, grey), (attr_map, attr_cmap)]
        truth = "CONF" if labels[i] == 1 else "FP"
        scalar_share = float(attributions[i, n_maps:].sum())
        texts = [f"{kepids[i]} {truth}", f"p={prob[i]:.2f} IG (scalars {scalar_share:+.1f})"]
        for j, ((tile, cmap), text) in enumerate(zip(tiles, texts)):
            lim = float(np.abs(tile).max()) or 1.0
            top, left = (i // 2) * cell_h + band, (2 * (i % 2) + j) * cell_w
            mosaic[top:top + size, left:left + size] = cmap(0.5 + 0.5 * tile / lim)[..., :3]
            captions.append((left + size / 2, top - 0.5, text))
    fig, ax = plt.subplots(figsize=(2.2 * per_row, 2.3 * rows))
    ax.imshow(mosaic, interpolation="nearest")
    for cx, cy, text in captions:
        ax.text(cx, cy, text, ha="center", va="bottom", fontsize=7)
    ax.axis("off")
    fig.suptitle(title or f"in-transit input | Integrated Gradients ({ATTRIBUTION_MEANING})", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.35 / (2.3 * rows))
    return fig


def ensemble_attributions(preset: Preset, state_dicts: list[dict], x: np.ndarray, n_steps: int = IG_STEPS) -> np.ndarray:
    """Mean over the ensemble's members of each member's :func:`integrated_gradients`.

    x: float32 ``(N, C, S, S)`` model inputs -> float32 ``(N, C, S, S)``, logit units
    (the mean of the members' logit attributions; the ensemble averages the
    members' probabilities, whose logit is close to the mean logit when they agree).
    """
    return np.mean([integrated_gradients(preset, sd, x, n_steps) for sd in state_dicts], axis=0).astype(np.float32)
