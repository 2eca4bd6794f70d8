import numpy as np
import pytest
import torch

from pixel_cnn.core.metrics import binary_metrics, f1_optimal_threshold
from pixel_cnn.core.models import PRESETS, PixelCNN, count_parameters, get_preset


def test_seed_preset_is_the_seed_study_model():
    preset = get_preset("seed")
    model = PixelCNN(preset)
    assert count_parameters(model) == 25_633
    assert (preset.lr, preset.weight_decay, preset.epochs, preset.batch_size, preset.dropout) == (3e-4, 5e-4, 40, 32, 0.3)
    out = model.eval()(torch.zeros(5, 1, 24, 24))
    assert out.shape == (5,)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'nope'.*seed"):
        get_preset("nope")


def test_overrides_checked_and_none_keeps_value():
    p = get_preset("seed", lr=1e-5, dropout=None)
    assert p.lr == 1e-5 and p.dropout == PRESETS["seed"].dropout
    with pytest.raises(ValueError, match="dropout"):
        get_preset("seed", dropout=1.5)
    with pytest.raises(ValueError, match="unknown preset field"):
        PRESETS["seed"].replace(foo=1)


def test_binary_metrics_hand_checked():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = binary_metrics(y, p, threshold=0.5)
    # ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = (1/1 + 2/3) / 2
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["roc_auc"] == pytest.approx(0.75)          # 3 of 4 pos/neg pairs ordered
    assert m["accuracy"] == pytest.approx(0.75)         # predicted 0,0,0,1
    assert m["f1"] == pytest.approx(2 / 3)              # P=1, R=0.5
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)


def test_f1_optimal_threshold_hand_checked():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # threshold 0.35 -> predicted {0.4, 0.35, 0.8}: P=2/3, R=1, F1=0.8 (best)
    assert f1_optimal_threshold(y, p) == pytest.approx(0.35)


def test_metrics_need_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics(np.ones(3), np.array([0.1, 0.2, 0.3]))


@pytest.mark.parametrize("preset_name", ["phase", "phase2"])
def test_fused_ensemble_matches_its_members_on_real_stacks(real_dataset, preset_name):
    """The grouped network the served model runs gives the members' mean probability."""
    from pixel_cnn.core.ensemble import Ensemble
    from pixel_cnn.core.models import FusedPhaseEnsemble, build_model
    from pixel_cnn.core.representation import build_inputs
    from pixel_cnn.core.training import train_fold

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
