"""core/training.py: one fold, seeded; augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pixel_cnn.vetter.networks import get_preset
from pixel_cnn.branches.pixel import train_fold


def _tiny(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 24, 24)).astype(np.float32)
    y = np.array([0, 1] * (n // 2))
    x[y == 1, :, 10:14, 10:14] -= 2.0  # a learnable dip
    return x, y



def test_train_fold_deterministic_and_seed_sensitive():
    x, y = _tiny()
    preset = get_preset("seed", epochs=3)
    a = train_fold(x, y, preset, seed=1, x_val=x, y_val=y)
    b = train_fold(x, y, preset, seed=1, x_val=x, y_val=y)
    c = train_fold(x, y, preset, seed=2, x_val=x, y_val=y)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    np.testing.assert_array_equal(a.val_prob, b.val_prob)
    assert not np.array_equal(a.val_prob, c.val_prob)
    assert len(a.history["train_loss"]) == len(a.history["val_loss"]) == 3


def test_train_fold_refuses_one_class():
    x, y = _tiny()
    with pytest.raises(ValueError, match="one class"):
        train_fold(x, np.zeros_like(y), get_preset("seed", epochs=1), seed=0)


def test_jitter_shifts_maps_and_keeps_constant_planes():
    """_augment: each image moves by its own offset (edge-replicated); constant planes stay put."""
    from pixel_cnn.branches.pixel import _augment

    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    x[:, 2] = torch.tensor([7.0, -3.0])[:, None, None]                 # a scalar plane per image
    gen = torch.Generator().manual_seed(0)
    out = _augment(x, jitter=1, noise_sigma=0.0, gen=gen, n_constant=1)
    offsets = torch.randint(0, 3, (2, 2), generator=torch.Generator().manual_seed(0))
    padded = F.pad(x, (1,) * 4, mode="replicate")
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, dy:dy + 5, dx:dx + 5])
    assert torch.equal(out[:, 2], x[:, 2])
    full = _augment(x, jitter=1, noise_sigma=0.0, gen=torch.Generator().manual_seed(0))  # all channels moved
    assert torch.equal(full, out)
