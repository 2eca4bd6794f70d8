"""core/explain.py: Integrated Gradients attributions."""

from __future__ import annotations

import numpy as np
import torch

from pixel_cnn.vetter import networks as models


def test_integrated_gradients_completeness():
    from pixel_cnn.drawing.explain import attribution_figure, integrated_gradients

    torch.manual_seed(0)
    preset = models.PHASE
    net = models.build_model(preset).eval()
    x = np.random.default_rng(0).normal(size=(3, 10, 16, 16)).astype(np.float32)
    attr = integrated_gradients(preset, net.state_dict(), x, n_steps=64)
    assert attr.shape == x.shape
    with torch.no_grad():
        gap = (net(torch.from_numpy(x)) - net(torch.zeros_like(torch.from_numpy(x)))).numpy()
    np.testing.assert_allclose(attr.reshape(3, -1).sum(1), gap, atol=0.05 * np.abs(gap).max() + 1e-3)
    fig = attribution_figure(x, attr, np.array([1, 2, 3]), np.array([1, 0, 1]), np.array([0.9, 0.1, 0.5]), 4)
    (ax,) = fig.axes  # one mosaic image: an input tile and an attribution tile per target
    mosaic = ax.get_images()[0].get_array()
    assert mosaic.shape[-1] == 3 and mosaic.shape[1] > 4 * 16 and mosaic.min() >= 0 and mosaic.max() <= 1
    captions = [t.get_text() for t in ax.texts]
    assert len(captions) == 6 and "1 CONF" in captions and "2 FP" in captions
    assert any(c.startswith("p=0.90 IG") for c in captions)
