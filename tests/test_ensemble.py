"""core/ensemble.py: the fold ensemble, fused into one grouped network, equals its members."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixel_cnn.vetter.networks import get_preset


@pytest.mark.parametrize("preset_name", ["phase", "phase2"])
def test_fused_ensemble_matches_its_members_on_real_stacks(real_dataset, preset_name):
    """The grouped network the served model runs gives the members' mean probability."""
    from pixel_cnn.vetter.ensemble import Ensemble
    from pixel_cnn.vetter.networks import FusedPhaseEnsemble, build_model
    from pixel_cnn.vetter.representation import build_inputs
    from pixel_cnn.branches.pixel import train_fold

    preset = get_preset(preset_name, epochs=2)
    x = build_inputs(real_dataset.stack_list(), preset.representation, preset.image_size)
    y = real_dataset.labels
    states = [train_fold(x, y, preset, seed=s).state_dict for s in range(3)]  # trained BN statistics
    ens = Ensemble(preset, states, threshold=0.5)
    assert isinstance(ens.fused, FusedPhaseEnsemble)
    with torch.no_grad():
        xt = torch.as_tensor(x)
        eager = torch.stack([torch.sigmoid(m(xt)) for m in ens.members]).mean(0).double().numpy()
    fused = ens.predict_inputs(x)
    assert fused.shape == (len(x),) and fused.dtype == np.float64
    np.testing.assert_allclose(fused, eager, atol=1e-5)
    np.testing.assert_allclose(ens.predict_inputs(x[:1]), eager[:1], atol=1e-5)  # one stack, as served
    assert ens.predict_inputs(x).tolist() == fused.tolist()  # deterministic

    with pytest.raises(ValueError, match="eval mode"):
        FusedPhaseEnsemble([build_model(preset)])  # a fresh module is in training mode
    with pytest.raises(ValueError, match="PhaseCNN"):
        FusedPhaseEnsemble([build_model(get_preset("seed")).eval()])
    with pytest.raises(ValueError, match="all PhaseCNN or all HybridCNN"):
        FusedPhaseEnsemble([build_model(get_preset("phase")).eval(), build_model(get_preset("phase2")).eval()])
    assert Ensemble(get_preset("seed"), [build_model(get_preset("seed")).state_dict()], 0.5).fused is None
