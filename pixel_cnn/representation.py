"""Stack -> model input. Pure numpy: no torch, no MLflow, no paths.

A *stack* is one Kepler target's phase-binned pixel-difference cube, shape
``(32, H, W)``: 32 equal phase bins (bin 0 and 31 straddle the transit at
phase 0, bins 15-16 sit at phase 0.5) x the TPF's pixel rows x columns. Values
are the fractional flux change relative to the out-of-transit reference image,
``(F_bin - O) / O`` (dimensionless; -0.001 is a 1000 ppm dimming). See the
dataset README (``kepler-pixdiff/README.md``) for how the stacks were made.

The same functions run in prep, in training and inside the served model, so a
stack is turned into a model input in exactly one way.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

N_PHASE_BINS = 32
MIN_PIXELS = 3
MAX_PIXELS = 64
#: Phase bins that straddle the transit (phase 0): the first and the last bin.
IN_TRANSIT_BINS = (0, N_PHASE_BINS - 1)
#: Phase bins around phase 0.5, where an eclipsing binary's secondary eclipse sits.
SECONDARY_BINS = (15, 16)
#: Out-of-transit bins used as the noise reference: phases 0.125-0.375 and 0.625-0.875.
OUT_OF_TRANSIT_BINS = tuple(range(4, 12)) + tuple(range(20, 28))


class StackError(ValueError):
    """A stack that cannot be turned into a model input; the message names the problem."""


_KIND_NAMES = {"b": "bool", "c": "complex", "U": "string", "S": "bytes", "O": "object", "V": "void"}


def check_dtype(dtype: np.dtype) -> None:
    """Refuse a dtype that is not a real number type (int, uint or float).

    Raises
    ------
    StackError
        bool, complex, strings, bytes, objects or structured dtypes.
    """
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind not in "iuf":
        raise StackError(
            f"dtype {_KIND_NAMES.get(dtype.kind, dtype.name)} is not a real number type"
        )


def check_shape(shape: tuple[int, ...]) -> None:
    """Refuse a shape that is not ``(32, H, W)`` with ``3 <= H, W <= 64``.

    Works on a shape alone, so a file header can be checked before its data
    is read (a 500 x 500 stack is refused without loading 32 MB).

    Raises
    ------
    StackError
        Wrong rank, zero size, not 32 phase bins, fewer than 3 or more than
        64 pixels a side.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise StackError(f"rank {len(shape)} (shape {shape}); expected (32, H, W)")
    n_bins, height, width = shape
    if 0 in shape:
        raise StackError(f"empty array (shape {shape})")
    if n_bins != N_PHASE_BINS:
        raise StackError(f"{n_bins} phase bins (shape {shape}); expected {N_PHASE_BINS}")
    if min(height, width) < MIN_PIXELS:
        raise StackError(f"{height}x{width} pixels is smaller than 3x3")
    if max(height, width) > MAX_PIXELS:
        raise StackError(f"{height}x{width} pixels is larger than {MAX_PIXELS} a side")


def validate_stack(stack: object, nan: str = "zero") -> np.ndarray:
    """Check one stack and return it as a clean float32 array.

    Parameters
    ----------
    stack : array-like
        Phase-binned difference stack, shape ``(32, H, W)`` with
        ``3 <= H, W <= 64``, real numbers (any int or float dtype; JSON
        numbers arrive as float64). Units: fractional flux change.
    nan : {"zero", "reject"}
        ``zero`` (files from the dataset pipeline): NaN entries become 0.
        ``reject`` (served requests): any NaN is an error.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(32, H, W)``. With ``nan="zero"`` NaN entries are
        replaced by 0, the rule the dataset's own pipeline applied to missing
        pixels ("NaN set to 0", dataset README): 0 reads as "no change", never
        as dimming.

    Raises
    ------
    StackError
        Not numeric (bool, complex, strings, objects), wrong rank or number of
        phase bins, fewer than 3 or more than 64 pixels a side, any +/-Inf, every
        value NaN (any NaN with ``nan="reject"``), or every value zero (no
        signal at all).
    """
    try:
        arr = np.asarray(stack)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise StackError(f"not a rectangular numeric array ({exc})") from None
    check_dtype(arr.dtype)
    check_shape(arr.shape)
    arr = arr.astype(np.float32)
    if np.isnan(arr).all():
        raise StackError("every value is NaN")
    if nan == "reject" and np.isnan(arr).any():
        raise StackError(f"contains {int(np.isnan(arr).sum())} NaN value(s)")
    if np.isinf(arr).any():
        raise StackError("contains +/-Inf")
    arr = np.nan_to_num(arr, nan=0.0)
    if not arr.any():
        raise StackError("every value is zero (no signal)")
    return arr


def _linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Weights ``(n_out, n_in)`` of 1-D linear interpolation, half-pixel centres.

    Same convention as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)``: source coordinate ``(i + 0.5) * n_in / n_out - 0.5``,
    clamped at the edges.
    """
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return weights


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of the last two axes to ``size x size``.

    images: ``(..., H, W)`` float -> ``(..., size, size)`` float32.
    """
    rows = _linear_resize_matrix(images.shape[-2], size)
    cols = _linear_resize_matrix(images.shape[-1], size)
    return np.einsum("ih,...hw,jw->...ij", rows, images, cols).astype(np.float32)


#: Below this spread (fractional flux) an image counts as constant: float32 rounding only.
FLAT_STD = 1e-8


def _standardize(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per image; a constant image becomes zeros."""
    std = image.std()
    return (image - image.mean()) / std if std > FLAT_STD else np.zeros_like(image)


def median_image(stack: np.ndarray, size: int = 24) -> np.ndarray:
    """The seed study's input: resize, median over phase, standardize.

    stack: validated ``(32, H, W)`` float32 -> ``(1, size, size)`` float32.
    The stack is resized to ``size x size`` (linear), the median over the 32
    phase bins taken, and the image standardized (zero mean, unit variance).
    Both steps discard the transit depth; kept unchanged as the ``seed`` baseline.
    """
    image = np.median(resize(stack, size), axis=0)
    return _standardize(image)[None].astype(np.float32)


#: Representation name -> function ``(validated stack, size) -> (C, size, size)``.
REPRESENTATIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "median": median_image,
}
#: Channels each representation produces.
REPRESENTATION_CHANNELS = {"median": 1}


def build_inputs(
    stacks: Sequence[object], representation: str, size: int = 24, nan: str = "zero"
) -> np.ndarray:
    """Validate and convert a batch of stacks of any sizes into model inputs.

    Parameters
    ----------
    stacks : sequence of array-like, each ``(32, H, W)``
    representation : str
        A key of :data:`REPRESENTATIONS`.
    size : int
        Output side in pixels.
    nan : {"zero", "reject"}
        NaN rule, see :func:`validate_stack`.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(N, C, size, size)``.

    Raises
    ------
    StackError
        For the first bad stack, its index in the message (``stack 3: ...``).
    KeyError
        Unknown representation name.
    """
    if representation not in REPRESENTATIONS:
        raise KeyError(
            f"unknown representation {representation!r}; known: {sorted(REPRESENTATIONS)}"
        )
    fn = REPRESENTATIONS[representation]
    out = []
    for i, stack in enumerate(stacks):
        try:
            out.append(fn(validate_stack(stack, nan=nan), size))
        except StackError as exc:
            raise StackError(f"stack {i}: {exc}") from None
    if not out:
        raise StackError("no stacks given")
    return np.stack(out).astype(np.float32)
