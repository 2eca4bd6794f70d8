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

import functools
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


@functools.lru_cache(maxsize=256)
def _linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Weights ``(n_out, n_in)`` of 1-D linear interpolation, half-pixel centres (cached, read-only).

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
    weights.flags.writeable = False
    return weights


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of the last two axes to ``size x size``.

    images: ``(..., H, W)`` float -> ``(..., size, size)`` float32, computed as
    ``rows @ image @ cols.T`` with the 1-D weights of :func:`_linear_resize_matrix`.
    """
    rows = _linear_resize_matrix(images.shape[-2], size)
    cols = _linear_resize_matrix(images.shape[-1], size)
    return (rows @ np.asarray(images, dtype=np.float64) @ cols.T).astype(np.float32)


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


# ---------------------------------------------------------------- phase-aware input

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
#: Image channels of ``phase``: in-transit, secondary, shoulder SNR maps and the brightness proxy.
PHASE_IMAGE_CHANNELS = ("transit_snr", "secondary_snr", "shoulder_snr", "brightness")
#: Scalar features of ``phase``, each broadcast to a constant plane after the image channels.
PHASE_SCALARS = (
    "transit_snr_min", "secondary_snr_min", "secondary_to_transit", "offset_centre",
    "offset_brightest", "transit_depth",
)


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


def phase_maps(stack: np.ndarray, sigma: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Native-resolution maps and scalar features of the ``phase`` representation.

    Parameters
    ----------
    stack : numpy.ndarray
        Validated ``(32, H, W)`` float32 (see :func:`validate_stack`),
        fractional flux change per phase bin; or a batch ``(N, 32, H, W)`` of
        stacks of one size, each treated on its own (same values as one at a
        time, much faster: the served model and ``build_inputs`` batch by size).
    sigma : numpy.ndarray, optional
        :func:`oot_sigma` of ``stack`` when the caller already has it
        (``phase2`` computes it once for the maps and the vetting statistics).

    Returns
    -------
    maps : numpy.ndarray
        float32 ``(4, H, W)`` (``(N, 4, H, W)`` for a batch), in the order of
        :data:`PHASE_IMAGE_CHANNELS`:

        0. ``arcsinh(mean(bins 0, 31) / sigma)``: in-transit signal-to-noise
           per pixel, negative where the pixel dims. ``sigma`` is the per-pixel
           out-of-transit scatter (:func:`oot_sigma`). Dividing by it keeps
           depth as significance and tames the faint edge pixels whose
           fractional values reach 10-20 (relative noise grows as flux falls).
           ``arcsinh`` is linear near 0 and logarithmic beyond (a signed log
           that keeps the sign), so a 5-sigma planet and a 5000-sigma eclipsing
           binary both fit one input range (as for magnitudes of faint sources,
           Lupton, Gunn & Szalay 1999, AJ 118, 1406).
        1. the same for the secondary-eclipse bins 15-16 (phase 0.5).
        2. the same for the shoulder bins 1 and 30 (:data:`SHOULDER_BINS`).
        3. ``-log10(sigma / median sigma)``, a brightness proxy: photon noise
           makes the fractional scatter fall as ``flux**-0.5``, so the target
           star sits where it is smallest. The stacks hold no flux image; this
           is the only stand-in for one (dead pixels: the stamp minimum).

    scalars : numpy.ndarray
        float32 ``(6,)`` (``(N, 6)`` for a batch), in the order of
        :data:`PHASE_SCALARS`: the lowest
        in-transit and secondary SNR (channels 0 and 1 at their minimum, same
        arcsinh units), the ratio ``secondary_min / max(-transit_min, 1)``
        clipped to [-2, 2] (near -1 for two equal eclipses, near 0 without a
        secondary, positive if phase 0.5 brightens), the offset of
        the deepest in-transit pixel from the stamp centre and from the
        brightest pixel (in pixels, divided by the stamp's half diagonal, in
        [0, 2]) and ``arcsinh(depth / 1000 ppm)`` of that deepest pixel. These
        are the hand-made vetting statistics of the Kepler pipeline in spirit
        (depth, secondary eclipse, centroid offset; Thompson et al. 2018, ApJS
        235, 38, section 3): a scalar head reads them directly.
    """
    batch, single = as_batch(stack)
    n, _, height, width = batch.shape
    sigma = oot_sigma(batch) if sigma is None else np.asarray(sigma).reshape(batch.shape[:1] + batch.shape[2:])

    def snr(bins) -> np.ndarray:
        return np.arcsinh(batch[:, list(bins)].mean(axis=1) / sigma)

    transit, secondary, shoulder = snr(IN_TRANSIT_BINS), snr(SECONDARY_BINS), snr(SHOULDER_BINS)
    finite = np.isfinite(sigma)
    log_sigma = np.log10(np.where(finite, sigma, 1.0))
    brightness = -(log_sigma - masked_median(log_sigma, finite)[:, None, None])
    brightness = np.where(finite, brightness, np.where(finite, brightness, np.inf).min(axis=(1, 2), keepdims=True))

    rows = np.arange(n)
    deepest = np.unravel_index(transit.reshape(n, -1).argmin(axis=1), (height, width))
    brightest = np.unravel_index(brightness.reshape(n, -1).argmax(axis=1), (height, width))
    half_diagonal = 0.5 * np.hypot(height - 1, width - 1)
    centre = ((height - 1) / 2, (width - 1) / 2)
    t_min, s_min = transit.min(axis=(1, 2)), secondary.min(axis=(1, 2))
    depth = batch[:, list(IN_TRANSIT_BINS)].mean(axis=1)[rows, deepest[0], deepest[1]]
    scalars = np.stack([
        t_min,
        s_min,
        np.clip(s_min / np.maximum(-t_min, 1.0), -2.0, 2.0),
        np.hypot(deepest[0] - centre[0], deepest[1] - centre[1]) / half_diagonal,
        np.hypot(deepest[0] - brightest[0], deepest[1] - brightest[1]) / half_diagonal,
        np.arcsinh(depth / DEPTH_UNIT),
    ], axis=1)
    maps = np.stack([transit, secondary, shoulder, brightness], axis=1)
    maps, scalars = maps.astype(np.float32), scalars.astype(np.float32)
    return (maps[0], scalars[0]) if single else (maps, scalars)


def phase_image(stack: np.ndarray, size: int = 16, sigma: np.ndarray | None = None) -> np.ndarray:
    """The phase-aware input: SNR maps resized, scalar features as constant planes.

    stack: validated ``(32, H, W)`` float32 -> ``(10, size, size)`` float32;
    a batch ``(N, 32, H, W)`` of one size -> ``(N, 10, size, size)``:
    the 4 maps of :func:`phase_maps` resized bilinearly (:func:`resize`), then
    its 6 scalars each broadcast over a ``size x size`` plane (a network reads
    them at any pixel; see ``pixel_cnn.models.PhaseCNN``). Any ``H, W`` from 3
    up works; pixels that are NaN/zero in every bin read as "no signal" (0 in
    the SNR maps). Nothing is standardized per image: depth and SNR survive.
    ``sigma``: optional :func:`oot_sigma` of ``stack``, see :func:`phase_maps`.
    """
    maps, scalars = phase_maps(stack, sigma)
    planes = np.broadcast_to(scalars[..., None, None], scalars.shape + (size, size))
    return np.concatenate([resize(maps, size), planes], axis=-3).astype(np.float32)


def phase2_image(stack: np.ndarray, size: int = 16) -> np.ndarray:
    """``phase`` plus the aperture and centroid vetting statistics as more scalar planes.

    stack: validated ``(32, H, W)`` float32 -> ``(24, size, size)`` float32 (a batch
    ``(N, 32, H, W)`` of one size -> ``(N, 24, size, size)``): the
    10 channels of :func:`phase_image` (4 resized maps, 6 scalar planes) followed
    by the 14 scalars of :func:`pixel_cnn.vetting.vetting_features` (order
    :data:`pixel_cnn.vetting.VETTING_FEATURES`), each a constant plane. So the
    trailing 20 channels are scalars (:data:`PHASE2_SCALARS`). Any ``H, W`` from
    3 up; NaN/zero pixels carry no signal and no weight.
    """
    from pixel_cnn.vetting import vetting_features  # vetting builds on this module (oot_sigma)

    sigma = oot_sigma(stack)  # computed once for both parts
    extra = vetting_features(stack, sigma)
    planes = np.broadcast_to(extra[..., None, None], extra.shape + (size, size))
    return np.concatenate([phase_image(stack, size, sigma), planes], axis=-3).astype(np.float32)


#: Scalar features of ``phase2``: the 6 of ``phase`` then the 14 vetting statistics
#: (names as in :data:`pixel_cnn.vetting.VETTING_FEATURES`, kept in sync by a test).
PHASE2_SCALARS = PHASE_SCALARS + (
    "ap_depth", "ap_snr", "ap_secondary_snr", "ap_sec_ratio", "ap_shoulder_ratio", "ap_oot_var",
    "ap_brightening", "depth_brightest", "depth_deepest", "centroid_offset", "centroid_offset_sigma",
    "frac_in_3x3", "frac_in_aperture", "n_dimmed",
)

#: Representation name -> function ``(validated stack, size) -> (C, size, size)``.
REPRESENTATIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "median": median_image,
    "phase": phase_image,
    "phase2": phase2_image,
}
#: Channels each representation produces.
REPRESENTATION_CHANNELS = {
    "median": 1,
    "phase": len(PHASE_IMAGE_CHANNELS) + len(PHASE_SCALARS),
    "phase2": len(PHASE_IMAGE_CHANNELS) + len(PHASE2_SCALARS),
}
#: Of those, the trailing constant planes that carry scalar features.
REPRESENTATION_SCALARS = {"median": 0, "phase": len(PHASE_SCALARS), "phase2": len(PHASE2_SCALARS)}
#: Representations whose function also takes a batch ``(N, 32, H, W)`` of one size.
BATCHED_REPRESENTATIONS = frozenset({"phase", "phase2"})
#: Stacks per batched call (bounds memory: 256 stacks of 64 x 64 are 268 MB in float64).
BATCH_CHUNK = 256


def build_inputs(
    stacks: Sequence[object], representation: str, size: int = 24, nan: str = "zero"
) -> np.ndarray:
    """Validate and convert a batch of stacks of any sizes into model inputs.

    Stacks of one size go through the representation together (those in
    :data:`BATCHED_REPRESENTATIONS`, in chunks of :data:`BATCH_CHUNK`); the
    values are the same as one stack at a time (tested).

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
    clean, by_shape = [], {}
    for i, stack in enumerate(stacks):
        try:
            clean.append(validate_stack(stack, nan=nan))
        except StackError as exc:
            raise StackError(f"stack {i}: {exc}") from None
        by_shape.setdefault(clean[-1].shape, []).append(i)
    if not clean:
        raise StackError("no stacks given")
    out = np.empty((len(clean), REPRESENTATION_CHANNELS[representation], size, size), np.float32)
    for idx in by_shape.values():
        if representation in BATCHED_REPRESENTATIONS:  # one call per size, in chunks
            for j in range(0, len(idx), BATCH_CHUNK):
                part = idx[j:j + BATCH_CHUNK]
                out[part] = fn(np.stack([clean[k] for k in part]), size)
        else:
            for k in idx:
                out[k] = fn(clean[k], size)
    return out
