"""Stack -> model input. Pure numpy: no torch, no MLflow, no paths.

A stack is one target's ``(32, H, W)`` phase-binned pixel-difference cube
(:mod:`pixel_cnn.vetter.stack`).

The same functions run in prep, in training and inside the served model, so a
stack is turned into a model input in exactly one way.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

from .stack import (
    DEPTH_UNIT,
    IN_TRANSIT_BINS,
    SECONDARY_BINS,
    SHOULDER_BINS,
    StackError,
    as_batch,
    masked_median,
    oot_sigma,
    validate_stack,
)
from .vetting import VETTING_FEATURES, vetting_features


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

#: Image channels of ``phase``: in-transit, secondary, shoulder SNR maps and the brightness proxy.
PHASE_IMAGE_CHANNELS = ("transit_snr", "secondary_snr", "shoulder_snr", "brightness")
#: Scalar features of ``phase``, each broadcast to a constant plane after the image channels.
PHASE_SCALARS = (
    "transit_snr_min", "secondary_snr_min", "secondary_to_transit", "offset_centre",
    "offset_brightest", "transit_depth",
)


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
    them at any pixel; see ``pixel_cnn.vetter.networks.PhaseCNN``). Any ``H, W`` from 3
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
    by the 14 scalars of :func:`pixel_cnn.vetter.vetting.vetting_features` (order
    :data:`pixel_cnn.vetter.vetting.VETTING_FEATURES`), each a constant plane. So the
    trailing 20 channels are scalars (:data:`PHASE2_SCALARS`). Any ``H, W`` from
    3 up; NaN/zero pixels carry no signal and no weight.
    """
    sigma = oot_sigma(stack)  # computed once for both parts
    extra = vetting_features(stack, sigma)
    planes = np.broadcast_to(extra[..., None, None], extra.shape + (size, size))
    return np.concatenate([phase_image(stack, size, sigma), planes], axis=-3).astype(np.float32)


#: Scalar features of ``phase2``: the 6 of ``phase`` then the vetting statistics
#: (:data:`pixel_cnn.vetter.vetting.VETTING_FEATURES`).
PHASE2_SCALARS = PHASE_SCALARS + VETTING_FEATURES

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
