"""core/models.py: named presets and their networks."""

from __future__ import annotations

import pytest
import torch

from pixel_cnn.vetter import networks as models
from pixel_cnn.vetter.networks import PRESETS, get_preset


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


def test_phase_preset_shape_and_param_count_unchanged():
    preset = models.get_preset("phase")
    assert preset.name == "phase" and preset.arch == "phase" and preset.n_scalars == 6
    net = models.build_model(preset)
    assert isinstance(net, models.PhaseCNN)
    assert models.count_parameters(net) == 16_957
    net.eval()
    out = net(torch.zeros(3, preset.in_channels, preset.image_size, preset.image_size))
    assert out.shape == (3,)


def test_seed_preset_unchanged():
    seed = models.get_preset("seed")
    assert (seed.representation, seed.image_size, seed.channels, seed.hidden, seed.dropout, seed.lr,
            seed.weight_decay, seed.epochs, seed.batch_size, seed.jitter, seed.noise_sigma) == \
        ("median", 24, (16, 32, 64), 32, 0.3, 3e-4, 5e-4, 40, 32, 1, 0.01)
    assert isinstance(models.build_model(seed), models.PixelCNN)
    assert models.count_parameters(models.build_model(seed)) == 25_633


def test_old_model_configs_without_arch_load_as_pixel():
    d = models.SEED.to_dict()
    d.pop("arch")
    assert models.Preset.from_dict(d).arch == "pixel"


def test_unknown_arch_refused():
    with pytest.raises(ValueError, match="arch"):
        models.PHASE.replace(arch="transformer")


def test_phase2_preset_hybrid_net_falls_back_on_the_linear_scalar_path():
    preset = models.get_preset("phase2")
    assert (preset.representation, preset.arch, preset.n_scalars) == ("phase2", "hybrid", 20)
    net = models.build_model(preset)
    assert isinstance(net, models.HybridCNN) and models.count_parameters(net) == 17_454
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.zero_()
    net.eval()
    x = torch.randn(4, 24, 16, 16)
    scalars = net.scalar_norm(x[:, 4:].mean((2, 3)))
    torch.testing.assert_close(net(x), net.wide(scalars).squeeze(-1))
    # the phase preset and its network are untouched by phase2
    assert models.count_parameters(models.build_model(models.PHASE)) == 16_957


def test_linear_arch_reads_only_the_scalars_and_needs_them():
    preset = models.get_preset("phase2", arch="linear")
    net = models.build_model(preset).eval()
    assert isinstance(net, models.ScalarLogit) and models.count_parameters(net) == 61
    x = torch.randn(3, 24, 16, 16)
    y = x.clone()
    y[:, :4] = torch.randn(3, 4, 16, 16)          # other maps, same scalars
    torch.testing.assert_close(net(x), net(y))
    assert net(x).shape == (3,)
    with pytest.raises(ValueError, match="needs a representation with scalars"):
        models.build_model(models.SEED.replace(arch="linear"))
