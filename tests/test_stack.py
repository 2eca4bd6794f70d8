"""core/stack.py: a stack is checked and cleaned in one way (files and served requests)."""

from __future__ import annotations

import numpy as np
import pytest

from pixel_cnn.vetter.stack import StackError, validate_stack


def stack(h=4, w=5, seed=0):
    return np.random.default_rng(seed).normal(0, 1e-3, (32, h, w)).astype(np.float32)



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
