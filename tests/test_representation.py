import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pixel_cnn.core.representation import build_inputs, median_image, resize
from pixel_cnn.core.stack import StackError, validate_stack


def stack(h=4, w=5, seed=0):
    return np.random.default_rng(seed).normal(0, 1e-3, (32, h, w)).astype(np.float32)


@pytest.mark.parametrize("h,w", [(3, 5), (4, 4), (10, 12), (24, 24), (3, 24)])
def test_resize_matches_torch_bilinear(h, w):
    images = np.random.default_rng(1).normal(size=(32, h, w)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(images)[None], size=(24, 24), mode="bilinear",
                             align_corners=False)[0].numpy()
    np.testing.assert_allclose(resize(images, 24), expected, atol=1e-5)


def test_resize_hand_checked_2x2_to_4x4():
    image = np.array([[0.0, 1.0], [2.0, 3.0]])
    # half-pixel centres: output rows sample at -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1)
    expected_row0 = [0.0, 0.25, 0.75, 1.0]
    np.testing.assert_allclose(resize(image, 4)[0], expected_row0, atol=1e-6)
    np.testing.assert_allclose(resize(image, 4)[:, 0], [0.0, 0.5, 1.5, 2.0], atol=1e-6)


def test_median_image_is_standardized_and_shaped():
    out = median_image(stack(), 24)
    assert out.shape == (1, 24, 24) and out.dtype == np.float32
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-4


def test_median_image_of_constant_stack_is_zero():
    assert not median_image(np.full((32, 4, 4), 0.01, np.float32)).any()


def test_nan_set_to_zero_for_files_and_refused_for_requests():
    s = stack()
    s[3, 1, 1] = np.nan
    assert validate_stack(s)[3, 1, 1] == 0.0
    with pytest.raises(StackError, match="1 NaN"):
        validate_stack(s, nan="reject")


@pytest.mark.parametrize("bad,message", [
    (np.zeros((32, 4, 4), dtype=complex), "complex"),
    (np.ones((32, 4, 4), dtype=bool), "bool"),
    (np.array([["a"]]), "string"),
    (np.zeros(10, np.float32), "rank 1"),
    (np.zeros((1, 32, 4, 4), np.float32), "rank 4"),
    (np.zeros((32, 0, 4), np.float32), "empty"),
    (np.ones((1, 16, 16), np.float32), "1 phase bins"),
    (np.ones((32, 2, 2), np.float32), "smaller than 3x3"),
    (np.ones((32, 1, 1), np.float32), "smaller than 3x3"),
    (np.ones((32, 500, 500), np.float32), "larger than 64"),
    (np.full((32, 4, 4), np.nan, np.float32), "every value is NaN"),
    (np.zeros((32, 4, 4), np.float32), "every value is zero"),
    (np.full((32, 4, 4), np.inf, np.float32), "Inf"),
])
def test_bad_stacks_are_refused_with_reason(bad, message):
    with pytest.raises(StackError, match=message):
        validate_stack(bad)


def test_ragged_lists_refused():
    with pytest.raises(StackError, match="rectangular"):
        validate_stack([[[1.0, 2.0], [3.0]]])


def test_integer_and_float64_input_accepted():
    s = (stack() * 1e4).astype(np.int32)
    assert validate_stack(s).dtype == np.float32
    assert validate_stack(stack().astype(np.float64)).dtype == np.float32


def test_build_inputs_mixed_sizes_and_error_names_index():
    x = build_inputs([stack(3, 5), stack(10, 12), stack(24, 24)], "median")
    assert x.shape == (3, 1, 24, 24)
    with pytest.raises(StackError, match="stack 1: rank 2"):
        build_inputs([stack(), np.ones((4, 4))], "median")
    with pytest.raises(KeyError, match="unknown representation"):
        build_inputs([stack()], "nope")


def test_batched_phase_inputs_equal_one_stack_at_a_time(real_dataset):
    """build_inputs batches stacks by size; every value equals phase_image on one stack."""
    from pixel_cnn.core.representation import BATCH_CHUNK, phase_image

    rng = np.random.default_rng(3)
    synthetic = []
    for h, w in [(3, 3), (5, 4), (24, 24), (7, 3)] * 2:
        s = rng.normal(0, 1e-3, (32, h, w)).astype(np.float32)
        s[:, 0, 0] = np.nan          # a dead pixel (NaN -> 0, SNR 0)
        s[4:12, 1, 1] = 0.0          # no scatter in half the noise bins
        synthetic.append(s)
    stacks = real_dataset.stack_list() + synthetic
    stacks = stacks * (1 + BATCH_CHUNK // len(stacks))  # one size spans more than one chunk
    batched = build_inputs(stacks, "phase", 16)
    single = np.stack([phase_image(validate_stack(s), 16) for s in stacks])
    assert batched.dtype == np.float32 and batched.shape == (len(stacks), 10, 16, 16)
    assert np.array_equal(batched, single)


def test_jitter_shifts_maps_and_keeps_constant_planes():
    """_augment: each image moves by its own offset (edge-replicated); constant planes stay put."""
    from pixel_cnn.core.training import _augment

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
