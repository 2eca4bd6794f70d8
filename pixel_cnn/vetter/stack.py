"""A stack, its phase bins and its noise: the bottom of the science core. Pure numpy.

A *stack* is one Kepler target's phase-binned pixel-difference cube, shape
``(32, H, W)``: 32 equal phase bins (bin 0 and 31 straddle the transit at
phase 0, bins 15-16 sit at phase 0.5) x the TPF's pixel rows x columns. Values
are the fractional flux change relative to the out-of-transit reference image,
``(F_bin - O) / O`` (dimensionless; -0.001 is a 1000 ppm dimming). See the
dataset README (``kepler-pixdiff/README.md``) for how the stacks were made.

Every other science module (representation, vetting statistics, TPF folding)
builds on the constants and checks here; this module imports none of them.
"""

from __future__ import annotations

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
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():  # the slow checks only for the rare stack that needs them
        missing = np.isnan(arr)
        if missing.all():
            raise StackError("every value is NaN")
        if nan == "reject" and missing.any():
            raise StackError(f"contains {int(missing.sum())} NaN value(s)")
        if np.isinf(arr).any():
            raise StackError("contains +/-Inf")
        arr = np.where(missing, np.float32(0.0), arr)  # a new array: the caller's is untouched
    if not arr.any():
        raise StackError("every value is zero (no signal)")
    return arr


#: Bins next to the transit bins (phases 1/32-2/32 and 30/32-31/32): the "shoulders". A
#: transit lasts a small fraction of the period, (R*/a)/pi (Seager & Mallen-Ornelas 2003,
#: ApJ 585, 1038, eq. 3), so a planet dims bins 0/31 only; a wide eclipse (large star,
#: short period) dims the shoulders too.
SHOULDER_BINS = (1, N_PHASE_BINS - 2)
#: 1.4826 * MAD estimates a Gaussian standard deviation (Rousseeuw & Croux 1993, JASA 88, 1273).
MAD_TO_SIGMA = 1.4826
#: Noise floor relative to the stamp's median scatter, so a pixel with (almost) no scatter
#: cannot blow up its signal-to-noise: 1 % of the median.
SIGMA_FLOOR = 1e-2
#: Unit of the fractional-depth scalar: 1000 ppm.
DEPTH_UNIT = 1e-3
#: Kepler's plate scale: 3.98 arcsec per pixel (Kepler Instrument Handbook, KSCI-19033, sec. 3).
KEPLER_PIXEL_SCALE_ARCSEC = 3.98
#: Parts per million per unit of fractional flux change.
PPM = 1e6


def masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median over the last two axes of ``values`` where ``mask`` holds; NaN if none does.

    values, mask: ``(N, H, W)`` -> float64 ``(N,)``. The same value as
    ``np.median`` of the selected entries (the middle one, or the mean of the
    two middle ones), for all ``N`` rows in one sort.
    """
    n = len(values)
    ordered = np.sort(np.where(mask, values, np.inf).reshape(n, -1), axis=1)  # masked-out last
    count = mask.reshape(n, -1).sum(axis=1)
    rows, safe = np.arange(n), np.maximum(count, 1)
    out = (ordered[rows, (safe - 1) // 2] + ordered[rows, safe // 2]) / 2
    return np.where(count > 0, out, np.nan)


def as_batch(stack: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(32, H, W)`` or ``(N, 32, H, W)`` -> float64 ``(N, 32, H, W)``, and whether it was one stack."""
    stack = np.asarray(stack, dtype=np.float64)
    return (stack[None], True) if stack.ndim == 3 else (stack, False)


def oot_sigma(stack: np.ndarray) -> np.ndarray:
    """Per-pixel out-of-transit scatter of one stack (or a batch), robust to a stray bin.

    Parameters
    ----------
    stack : numpy.ndarray
        Validated ``(32, H, W)`` float32, fractional flux change; or a batch
        ``(N, 32, H, W)`` of stacks of one size (each treated on its own).

    Returns
    -------
    numpy.ndarray
        float64 ``(H, W)`` (``(N, H, W)`` for a batch): ``1.4826 * MAD`` over
        the 16 out-of-transit bins (:data:`OUT_OF_TRANSIT_BINS`), fractional
        flux per phase bin, floored at :data:`SIGMA_FLOOR` times the median
        over pixels with data. Pixels that are zero in every bin (NaN in the
        TPF, set to 0) get ``inf``: their signal-to-noise is 0, never a
        division by zero.
    """
    batch, single = as_batch(stack)
    oot = batch[:, list(OUT_OF_TRANSIT_BINS)]
    sigma = MAD_TO_SIGMA * np.median(np.abs(oot - np.median(oot, axis=1, keepdims=True)), axis=1)
    dead = ~batch.any(axis=1)
    scale = masked_median(sigma, ~dead & (sigma > 0))
    for i in np.flatnonzero(~(scale > 0)):  # no scatter anywhere: the spread of all values
        scale[i] = float(np.std(batch[i][:, ~dead[i]])) or 1.0
    sigma = np.maximum(sigma, SIGMA_FLOOR * scale[:, None, None])
    sigma[dead] = np.inf
    return sigma[0] if single else sigma
