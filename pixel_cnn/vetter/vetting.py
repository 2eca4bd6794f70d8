"""Vetting statistics of one stack: aperture photometry, difference-image centroid, shape.

Pure numpy: no torch, no MLflow, no paths. Everything is measured from the
stack itself (the pixels); nothing comes from the KOI table.

A stack ``(32, H, W)`` holds, per phase bin and pixel, the fractional flux
change ``(F_bin - O) / O`` relative to the out-of-transit reference image ``O``
(dataset README). Where prep kept the reference image ``O`` itself (``prep source=tpf``:
``flux_images/``) it is the pixel weight (:func:`flux_weights`). A benchmark stack holds no
flux image; photon noise makes a pixel's fractional scatter fall as ``O**-0.5``, so
``sigma**-2`` (``sigma`` the out-of-transit scatter, :func:`pixel_cnn.vetter.stack.oot_sigma`)
stands in for it: the *flux proxy* (:func:`flux_proxy`). On real TPFs the proxy follows the
pixels' noise more than the star (issue 19: on Kepler-8 its brightest pixel is a faint corner),
so positions measured with it are rough.

The statistics follow the Kepler Data Validation tests in spirit (Twicken et
al. 2018, PASP 130, 064502; Bryson et al. 2013, PASP 125, 889, for the
difference-image centroid): depth and signal-to-noise of the aperture light
curve, secondary eclipse, transit shape, out-of-transit variability, and where
on the stamp the dimming sits relative to the star.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stack import (
    DEPTH_UNIT,
    IN_TRANSIT_BINS,
    KEPLER_PIXEL_SCALE_ARCSEC,
    MAD_TO_SIGMA,
    OUT_OF_TRANSIT_BINS,
    PPM,
    SECONDARY_BINS,
    SHOULDER_BINS,
    as_batch,
    masked_median,
    oot_sigma,
)

#: Names of :func:`vetting_features`, in order. See its docstring for each formula.
VETTING_FEATURES = (
    "ap_depth",          # arcsinh(aperture in-transit depth / 1000 ppm)
    "ap_snr",            # arcsinh(aperture in-transit SNR)
    "ap_secondary_snr",  # arcsinh(aperture SNR at phase 0.5; > 0 = dimming)
    "ap_sec_ratio",      # secondary / primary depth of the aperture, clipped to [-1, 2]
    "ap_shoulder_ratio", # shoulder / core depth of the aperture, clipped to [-1, 2]
    "ap_oot_var",        # log10(OOT scatter / point-to-point noise) of the aperture
    "ap_brightening",    # arcsinh(largest out-of-transit brightening of the aperture, in sigma)
    "depth_brightest",   # arcsinh(in-transit depth at the brightest pixel / 1000 ppm)
    "depth_deepest",     # arcsinh(in-transit depth at the deepest pixel / 1000 ppm)
    "centroid_offset",   # dimming centroid - flux centroid, pixels
    "centroid_offset_sigma",  # the same in units of its uncertainty, arcsinh
    "frac_in_3x3",       # share of the dimming flux inside the brightest pixel's 3x3
    "frac_in_aperture",  # share of the dimming flux inside the target aperture
    "n_dimmed",          # log2(1 + number of pixels dimmed by more than 3 sigma)
)
#: Pixel weights: flux proxy ``sigma**-2`` with ``sigma`` floored at this fraction of the
#: stamp's median scatter, so one pixel with almost no scatter cannot take all the weight
#: (a star pixel 400 x brighter than the median pixel keeps its full weight).
WEIGHT_SIGMA_FLOOR = 0.05
#: Target aperture: pixels whose flux proxy is at least this fraction of the brightest pixel's.
APERTURE_FRACTION = 0.1
#: Significance threshold of a dimmed pixel (in-transit depth / its noise).
DIMMED_SIGMA = 3.0
#: Bins of phases 0.0625-0.4375 and 0.5625-0.9375 searched for a brightening (reflection,
#: ellipsoidal maxima, a bad bin): everything but the transit, shoulders and secondary.
BRIGHTENING_BINS = tuple(range(2, 14)) + tuple(range(18, 30))


def flux_proxy(sigma: np.ndarray) -> np.ndarray:
    """Relative pixel flux from the out-of-transit scatter: ``sigma**-2``, normalized to sum 1.

    sigma: float ``(H, W)`` (or a batch ``(N, H, W)``) from
    :func:`~pixel_cnn.vetter.stack.oot_sigma` (``inf`` for dead pixels) ->
    float64 of the same shape, >= 0, sum 1 per stamp; dead pixels 0.
    Photon noise: fractional scatter ``~ F**-0.5``, so ``F ~ sigma**-2``. ``sigma``
    is floored at :data:`WEIGHT_SIGMA_FLOOR` times its median over live pixels.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    batch = sigma[None] if sigma.ndim == 2 else sigma
    finite = np.isfinite(batch)
    floor = WEIGHT_SIGMA_FLOOR * masked_median(batch, finite)[:, None, None]
    weight = np.where(finite, 1.0 / np.maximum(np.where(finite, batch, 1.0), floor) ** 2, 0.0)
    weight = weight / weight.sum(axis=(1, 2), keepdims=True)
    return weight[0] if sigma.ndim == 2 else weight


def _robust_sigma(values: np.ndarray) -> np.ndarray:
    """1.4826 * MAD along the last axis (Rousseeuw & Croux 1993): ``(..., T)`` -> ``(...)``."""
    return MAD_TO_SIGMA * np.median(np.abs(values - np.median(values, axis=-1, keepdims=True)), axis=-1)


def flux_weights(flux_image: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Relative pixel flux from the real out-of-transit image: ``O / sum(O)``, float64 ``(N, H, W)``.

    flux_image: ``(N, H, W)`` electrons/s (``prep source=tpf``'s reference image); NaN, non-positive
    values and dead pixels (``sigma`` inf) weigh 0.

    Raises
    ------
    ValueError
        A stamp whose image has no positive finite pixel.
    """
    image = np.where(np.isfinite(flux_image) & (flux_image > 0) & np.isfinite(sigma), flux_image, 0.0)
    total = image.sum(axis=(1, 2), keepdims=True)
    if not (total > 0).all():
        raise ValueError("flux_image has no positive finite pixel")
    return image / total


def target_aperture(w: np.ndarray) -> np.ndarray:
    """Pixels of the target: ``w >= APERTURE_FRACTION * max(w)`` and connected (4-neighbours) to the brightest.

    w ``(N, H, W)`` -> bool ``(N, H, W)``. A neighbour star's peak that is not joined to the target's by
    bright pixels is not in it.
    """
    n, height, width = w.shape
    bright = w >= APERTURE_FRACTION * w.max(axis=(1, 2), keepdims=True)
    peak = np.unravel_index(w.reshape(n, -1).argmax(axis=1), (height, width))
    region = np.zeros_like(bright)
    region[np.arange(n), peak[0], peak[1]] = True
    while True:  # grow the region inside the bright pixels (at most H * W steps)
        grown = region.copy()
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown[:, :, 1:] |= region[:, :, :-1]
        grown[:, :, :-1] |= region[:, :, 1:]
        grown &= bright
        if (grown == region).all():
            return region
        region = grown


def in_transit_noise_scale(bin_counts: np.ndarray | None, n: int) -> np.ndarray:
    """Noise of the in-transit depth ``-mean(bins 0, 31)`` over the per-bin out-of-transit scatter, ``(N,)``.

    A bin that holds ``n_b`` cadences has noise ``~ n_b**-0.5``; the scatter ``sigma`` is measured on the
    out-of-transit bins (median count ``n_oot``), so ``sd(depth) = sigma * sqrt(sum_b n_oot / n_b) / 2``.
    Without counts (the benchmark stacks do not keep them) every bin is taken as full: ``1 / sqrt 2``.
    bin_counts: int ``(32,)`` or ``(N, 32)`` from ``prep source=tpf``, or None.
    """
    if bin_counts is None:
        return np.full(n, 1 / np.sqrt(2.0))
    counts = np.asarray(bin_counts, dtype=np.float64).reshape(n, -1)
    n_oot = np.median(counts[:, list(OUT_OF_TRANSIT_BINS)], axis=1)
    ratio = n_oot[:, None] / np.maximum(counts[:, list(IN_TRANSIT_BINS)], 1.0)
    return np.sqrt(ratio.sum(axis=1)) / 2


def _measure(batch: np.ndarray, sigma: np.ndarray | None, flux_image: np.ndarray | None = None,
             bin_counts: np.ndarray | None = None) -> dict:
    """Every intermediate of :func:`vetting_features` for a batch ``(N, 32, H, W)`` float64.

    Shared by :func:`vetting_features` (the model's scalars) and
    :func:`vetting_statistics` (the same quantities in physical units), so the
    two can never disagree. Keys: see the return statement; arrays are ``(N,)``
    unless named otherwise (``a`` ``(N, 32)``, ``w``/``sigma``/``d_pix`` ``(N, H, W)``).
    """
    n, _, height, width = batch.shape
    sigma = oot_sigma(batch) if sigma is None else np.asarray(sigma).reshape(n, height, width)  # (N, H, W)
    finite = np.isfinite(sigma)
    if flux_image is not None:
        w = flux_weights(np.asarray(flux_image, dtype=np.float64).reshape(n, height, width), sigma)
    else:
        w = flux_proxy(sigma)                                            # (N, H, W)
    scale = in_transit_noise_scale(bin_counts, n)                        # sd(depth) / sigma
    rt2 = np.sqrt(2.0)

    def depth(series, bins):  # series (N, 32, ...) -> (N, ...), + = dimming
        return -series[:, list(bins)].mean(axis=1)

    def spatial_sum(values):  # (N, H, W) -> (N,)
        return values.sum(axis=(1, 2))

    a = np.einsum("nbhw,nhw->nb", batch, w)                              # (N, 32) aperture light curve
    oot = a[:, list(OUT_OF_TRANSIT_BINS)]
    s_a = np.maximum(_robust_sigma(oot), 1e-9)
    noise2 = s_a * scale
    d_core, d_sec, d_sh = depth(a, IN_TRANSIT_BINS), depth(a, SECONDARY_BINS), depth(a, SHOULDER_BINS)
    ref = np.maximum(d_core, 3 * noise2)
    p2p = np.maximum(_robust_sigma(np.diff(oot, axis=1)) / rt2, 1e-9)
    oot_var = np.log10(np.maximum(oot.std(axis=1), 1e-12) / p2p)

    d_pix = depth(batch, IN_TRANSIT_BINS)                                # (N, H, W)
    sd_pix = np.where(finite, sigma, np.inf) * scale[:, None, None]      # noise of d_pix
    snr_pix = d_pix / sd_pix
    stamp = np.arange(n)
    brightest = np.unravel_index(w.reshape(n, -1).argmax(axis=1), (height, width))
    deepest = np.unravel_index(snr_pix.reshape(n, -1).argmax(axis=1), (height, width))

    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    aperture = target_aperture(w)
    # the target's position: the flux centroid of its own pixels (neighbours' light left out)
    w_ap = np.where(aperture, w, 0.0)
    flux_r = spatial_sum(w_ap * rows) / spatial_sum(w_ap)
    flux_c = spatial_sum(w_ap * cols) / spatial_sum(w_ap)
    dim = w * d_pix                                                      # dimming flux per pixel
    # Centroid motion (Bryson et al. 2013, sec. 2): the dimming's first moments about the target,
    # m_r = sum((r - r_T) w d), over the target aperture (as Kepler's flux-weighted centroids: there
    # the target's light dominates, so a dimming of the target has no moment whatever the neighbours);
    # over the whole stamp when the aperture itself does not dim by 3 sigma (the dimming is elsewhere).
    # Their noise is measured on the out-of-transit bins like the aperture light curve's, so it holds
    # the pixels' correlated noise (pointing jitter moves light between pixels) that a per-pixel
    # propagation misses.
    moments = {}
    for name, weight in (("ap", w_ap), ("stamp", w)):
        series = [np.einsum("nbhw,nhw->nb", batch, weight * x) for x in
                  (np.ones_like(rows), rows - flux_r[:, None, None], cols - flux_c[:, None, None])]  # 3 x (N, 32)
        m0, m_r, m_c = (depth(x, IN_TRANSIT_BINS) for x in series)
        oot0, oot_r, oot_c = (x[:, list(OUT_OF_TRANSIT_BINS)] for x in series)
        # sample (co)variances over the 16 bins: a MAD of 16 values scatters more, and its small values
        # made on-target transits look offset (injection-recovery, docs/injection.md)
        n_oot = len(OUT_OF_TRANSIT_BINS)
        s0, s_r, s_c = (np.maximum(x.std(axis=-1, ddof=1), 1e-12) * scale for x in (oot0, oot_r, oot_c))
        s_rc = ((oot_r - oot_r.mean(axis=-1, keepdims=True)) * (oot_c - oot_c.mean(axis=-1, keepdims=True))
                ).sum(axis=-1) / (n_oot - 1) * scale ** 2
        moments[name] = (m0, s0, m_r, m_c, s_r, s_c, np.clip(s_rc, -0.95 * s_r * s_c, 0.95 * s_r * s_c))
    in_ap = moments["ap"][0] > 3 * moments["ap"][1]
    m0, s0, m_r, m_c, s_r, s_c, s_rc = (np.where(in_ap, a_, b_) for a_, b_ in zip(moments["ap"], moments["stamp"]))
    total = moments["ap"][0]                                             # dimming inside the aperture
    # a share on target only where the stamp dims by 3 sigma, a centroid only where the region it is
    # measured on does too (a ratio over a denominator near 0 is not a position); elsewhere undefined
    significant = d_core > 3 * noise2
    measured = significant & (m0 > 3 * s0)
    denom = np.where(measured, m0, 1.0)
    dr, dc = m_r / denom, m_c / denom
    dim_r, dim_c = flux_r + dr, flux_c + dc
    var_r, var_c, cov_rc = s_r ** 2 / denom ** 2, s_c ** 2 / denom ** 2, s_rc / denom ** 2
    det = s_r ** 2 * s_c ** 2 - s_rc ** 2
    chi2 = (m_r ** 2 * s_c ** 2 - 2 * m_r * m_c * s_rc + m_c ** 2 * s_r ** 2) / det   # m^T S^-1 m
    nan = np.full(n, np.nan)
    offset = np.where(measured, np.hypot(dr, dc), nan)
    offset_sigma = np.where(measured, np.sqrt(np.maximum(chi2, 0.0)), nan)
    box = (np.abs(rows - brightest[0][:, None, None]) <= 1) & (np.abs(cols - brightest[1][:, None, None]) <= 1)
    d_safe = np.where(significant, d_core, 1.0)
    frac_box = np.where(significant, spatial_sum(np.where(box, dim, 0.0)) / d_safe, nan)
    frac_ap = np.where(significant, total / d_safe, nan)
    n_dimmed = spatial_sum(snr_pix > DIMMED_SIGMA)
    return {"a": a, "s_a": s_a, "noise2": noise2, "d_core": d_core, "d_sec": d_sec, "d_sh": d_sh, "ref": ref,
            "oot_var": oot_var, "d_pix": d_pix, "stamp": stamp, "brightest": brightest, "deepest": deepest,
            "w": w, "sigma": sigma, "aperture": aperture, "measured": measured, "significant": significant,
            "flux_r": flux_r, "flux_c": flux_c, "dim_r": dim_r, "dim_c": dim_c,
            "var_r": var_r, "var_c": var_c, "cov_rc": cov_rc, "offset": offset, "offset_sigma": offset_sigma,
            "frac_box": frac_box, "frac_ap": frac_ap, "n_dimmed": n_dimmed,
            "flux_source": "image" if flux_image is not None else "proxy"}


def vetting_features(stack: np.ndarray, sigma: np.ndarray | None = None, flux_image: np.ndarray | None = None,
                     bin_counts: np.ndarray | None = None) -> np.ndarray:
    """The vetting statistics of one stack, in the order of :data:`VETTING_FEATURES`.

    Parameters
    ----------
    stack : numpy.ndarray
        Validated ``(32, H, W)`` float32 (:func:`~pixel_cnn.vetter.stack.validate_stack`),
        fractional flux change per phase bin; any ``H, W >= 3``. Pixels zero in
        every bin (NaN in the TPF) carry no weight. Or a batch ``(N, 32, H, W)``
        of stacks of one size, each measured on its own (one pass for all).
    sigma : numpy.ndarray, optional
        :func:`~pixel_cnn.vetter.stack.oot_sigma` of ``stack`` when the
        caller already has it; computed here otherwise.
    flux_image : numpy.ndarray, optional
        float ``(H, W)`` (``(N, H, W)``) out-of-transit flux image, electrons/s, where prep kept it
        (``prep source=tpf``): the pixel weights ``w = O / sum(O)`` (:func:`flux_weights`). Without it
        the flux proxy :func:`flux_proxy` (the benchmark stacks keep no image); the proxy follows the
        pixels' noise, not the star, so positions measured on it are rough.
    bin_counts : numpy.ndarray, optional
        int ``(32,)`` (``(N, 32)``) cadences per phase bin, where prep kept them: the in-transit noise
        is scaled by them (:func:`in_transit_noise_scale`).

    Returns
    -------
    numpy.ndarray
        float32 ``(14,)`` (``(N, 14)`` for a batch), all finite. With ``w`` the flux proxy (:func:`flux_proxy`),
        ``a[b] = sum(w * stack[b])`` is the aperture light curve (the fractional
        change of the flux-weighted sum, i.e. simple aperture photometry over the
        stamp) and ``s_a`` its robust scatter over the 16 out-of-transit bins.
        Depths ``d = -mean(bins)`` (positive = dimming); ``mean of 2 bins`` has
        noise ``s / sqrt(2)``.

        * ``ap_depth``: ``arcsinh(d_a(0, 31) / 1e-3)``.
        * ``ap_snr``: ``arcsinh(d_a(0, 31) / (s_a k))``, ``k`` = :func:`in_transit_noise_scale`
          (``1 / sqrt 2`` without bin counts).
        * ``ap_secondary_snr``: the same for bins 15-16.
        * ``ap_sec_ratio``: ``d_a(15, 16) / max(d_a(0, 31), 3 s_a / sqrt 2)`` in [-1, 2]
          (an eclipsing binary: large; a planet: near 0).
        * ``ap_shoulder_ratio``: ``d_a(1, 30) / max(d_a(0, 31), 3 s_a / sqrt 2)``
          in [-1, 2]: a V-shaped or long eclipse dims the shoulder bins, a planet's
          short transit, duration / period ~ (R*/a) / pi (Seager & Mallen-Ornelas
          2003, ApJ 585, 1038), does not.
        * ``ap_oot_var``: ``log10(std(a[oot]) / (MAD-sigma of diff(a[oot]) / sqrt 2))``:
          smooth variability (ellipsoidal, spots) raises the scatter, not the
          point-to-point noise (von Neumann 1941 successive differences).
        * ``ap_brightening``: ``arcsinh(max(a[2..13, 18..29]) / s_a)``.
        * ``depth_brightest`` / ``depth_deepest``: ``arcsinh(d / 1e-3)`` at the pixel of
          largest flux proxy / of lowest in-transit SNR.
        * ``centroid_offset``: distance (pixels) between the centroid of the dimming
          flux ``D = w * d(0, 31)`` and the target's position ``r_T``, the flux centroid
          ``sum(w * r) / sum(w)`` over the target aperture (:func:`target_aperture`; the aperture
          keeps neighbours' light out of the target's position). The offset is ``(m_r, m_c) / m_0``
          with ``m_0 = sum(D)`` and ``m_r = sum((r - r_T) D)`` the dimming's moments about the target
          (the centroid motion of Bryson et al. 2013, PASP 125, 889, sec. 2), summed over the target
          aperture (as Kepler's flux-weighted centroids: a dimming of the target then has no moment
          whatever its neighbours do) or, when the aperture itself does not dim by 3 sigma, over the
          whole stamp. 0 (not measured) when the stamp's or that region's dimming is below 3 sigma.
        * ``centroid_offset_sigma``: ``arcsinh(sqrt(m^T S^-1 m))``, ``S`` the sample covariance of
          ``(m_r, m_c)`` over the 16 out-of-transit bins times ``k**2`` (``k``: :func:`in_transit_noise_scale`),
          so the pixels' correlated noise (pointing jitter) is in it. Without an offset ``m^T S^-1 m``
          is about chi-square with 2 degrees of freedom.
        * ``frac_in_3x3`` / ``frac_in_aperture``: ``sum(D)`` inside the 3x3 around the brightest
          pixel / inside the target aperture, over ``sum(D)`` on the stamp (signed ``D``: noise adds
          nothing on average); 0 when the stamp does not dim by 3 sigma (the statistics say NaN).
        * ``n_dimmed``: ``log2(1 + #pixels with d / (sigma / sqrt 2) > 3)``.
    """
    batch, single = as_batch(stack)
    m = _measure(batch, sigma, flux_image, bin_counts)
    d_core, d_sec, d_sh, noise2, ref, a, s_a = (m[k] for k in ("d_core", "d_sec", "d_sh", "noise2", "ref", "a", "s_a"))
    oot_var, d_pix, stamp, brightest, deepest = (m[k] for k in ("oot_var", "d_pix", "stamp", "brightest", "deepest"))
    offset, offset_sigma, frac_box, frac_ap, n_dimmed = (
        m[k] for k in ("offset", "offset_sigma", "frac_box", "frac_ap", "n_dimmed"))

    with np.errstate(divide="ignore", invalid="ignore"):
        features = np.stack([
            np.arcsinh(d_core / DEPTH_UNIT),
            np.arcsinh(d_core / noise2),
            np.arcsinh(d_sec / noise2),
            np.clip(d_sec / ref, -1.0, 2.0),
            np.clip(d_sh / ref, -1.0, 2.0),
            oot_var,
            np.arcsinh(a[:, list(BRIGHTENING_BINS)].max(axis=1) / s_a),
            np.arcsinh(d_pix[stamp, brightest[0], brightest[1]] / DEPTH_UNIT),
            np.arcsinh(d_pix[stamp, deepest[0], deepest[1]] / DEPTH_UNIT),
            offset,
            np.arcsinh(offset_sigma),
            frac_box,
            frac_ap,
            np.log2(1 + n_dimmed),
        ], axis=1)
    features = np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    return features[0] if single else features


#: The columns of :meth:`VettingStatistics.row`, in order, with their units (the CSV of
#: ``python -m pixel_cnn.predict --out`` and the table of a vetting sheet).
STATISTICS_COLUMNS = {
    "depth_ppm": "ppm",
    "snr": "",
    "secondary_depth_ppm": "ppm",
    "secondary_snr": "",
    "secondary_ratio": "",
    "centroid_offset_px": "pixel",
    "centroid_offset_arcsec": "arcsec",
    "centroid_offset_sigma": "sigma",
    "frac_on_target": "",
}


@dataclass(frozen=True)
class VettingStatistics:
    """The vetting statistics of one stack in physical units, and the geometry behind them.

    Made by :func:`vetting_statistics` from the same intermediates as
    :func:`vetting_features` (the model's scalars are arcsinh/clipped versions of
    these). Scalars (float):

    * ``depth_ppm``: aperture in-transit depth ``d_a(0, 31)``, ppm (+ = dimming).
    * ``snr``: that depth over its noise ``s_a k`` (:func:`in_transit_noise_scale`).
    * ``secondary_depth_ppm`` / ``secondary_snr``: the same at phase 0.5 (bins 15-16).
    * ``secondary_ratio``: ``d_a(15, 16) / max(d_a(0, 31), 3 s_a / sqrt 2)`` (not clipped).
    * ``centroid_offset_px``: difference-image (dimming) centroid minus the target's position,
      pixels (Bryson et al. 2013, PASP 125, 889; formula: :func:`vetting_features`); NaN when the
      dimming is below 3 sigma (no position can be measured).
    * ``centroid_offset_arcsec``: the same times :data:`~pixel_cnn.vetter.stack.KEPLER_PIXEL_SCALE_ARCSEC`.
    * ``centroid_offset_sigma``: the offset's significance ``sqrt(m^T S^-1 m)``, noise measured
      on the out-of-transit bins (NaN when not measured).
    * ``frac_on_target``: share of the dimming flux inside the target aperture (pixels with
      flux >= 10 % of the brightest, joined to it: :func:`target_aperture`); NaN when the stamp
      does not dim by 3 sigma (nothing to share: not 1, not 0).
    * ``flux_source``: "image" (weights from the real out-of-transit image) or "proxy" (from the noise).
    * ``undefined_reason``: why the offset or the share is NaN ("" when both are measured).

    Geometry (pixel coordinates, row then column, pixel centres at integers):
    ``target_rc`` the flux centroid over the target aperture (the target's position: the stacks
    carry no WCS), ``centroid_rc`` the dimming centroid (None when not measured), ``centroid_cov``
    its 2x2 covariance, pixel**2; ``phase_curve_ppm`` float64 ``(32,)`` the aperture light
    curve per phase bin and ``noise_ppm`` its per-bin robust scatter; ``aperture`` bool
    ``(H, W)``; ``sigma_ppm`` float64 ``(H, W)`` per-pixel out-of-transit scatter (inf: dead pixel);
    ``weight`` float64 ``(H, W)`` the flux image or its proxy (:func:`flux_weights`, :func:`flux_proxy`, sum 1): ``weight * (fractional
    change)`` is a pixel's change in units of the stamp's flux, the difference image the centroid is
    measured on (summed over the stamp it gives the aperture light curve).
    """

    depth_ppm: float
    snr: float
    secondary_depth_ppm: float
    secondary_snr: float
    secondary_ratio: float
    centroid_offset_px: float
    centroid_offset_arcsec: float
    centroid_offset_sigma: float
    frac_on_target: float
    target_rc: tuple[float, float]
    centroid_rc: tuple[float, float] | None
    centroid_cov: np.ndarray | None
    phase_curve_ppm: np.ndarray
    noise_ppm: float
    aperture: np.ndarray
    sigma_ppm: np.ndarray
    weight: np.ndarray
    flux_source: str = "proxy"
    undefined_reason: str = ""

    def row(self) -> dict[str, float]:
        """The scalars, keyed as :data:`STATISTICS_COLUMNS` (one CSV row's statistics)."""
        return {name: getattr(self, name) for name in STATISTICS_COLUMNS}


def vetting_statistics(stack: np.ndarray, sigma: np.ndarray | None = None, flux_image: np.ndarray | None = None,
                       bin_counts: np.ndarray | None = None) -> VettingStatistics:
    """The vetting statistics of one validated ``(32, H, W)`` stack, in physical units.

    The one source of a candidate's numbers: the CSV row of batch scoring
    (:mod:`pixel_cnn.scoring`) and the vetting sheet (:mod:`pixel_cnn.drawing.sheet`)
    both call it. Formulas: :func:`vetting_features` (same intermediates,
    :func:`_measure`; ``flux_image``/``bin_counts`` as there) and :class:`VettingStatistics`.

    Raises
    ------
    ValueError
        ``stack`` is not one ``(32, H, W)`` stack.
    """
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"vetting_statistics takes one (32, H, W) stack, got shape {stack.shape}")
    batch, _ = as_batch(stack)
    m = _measure(batch, sigma, flux_image, bin_counts)
    measured = bool(m["measured"][0])
    noise2 = float(m["noise2"][0])
    offset = float(m["offset"][0])
    offset_sigma = float(m["offset_sigma"][0])
    cov = np.array([[m["var_r"][0], m["cov_rc"][0]], [m["cov_rc"][0], m["var_c"][0]]]) if measured else None
    return VettingStatistics(
        depth_ppm=float(m["d_core"][0] * PPM),
        snr=float(m["d_core"][0] / noise2),
        secondary_depth_ppm=float(m["d_sec"][0] * PPM),
        secondary_snr=float(m["d_sec"][0] / noise2),
        secondary_ratio=float(m["d_sec"][0] / m["ref"][0]),
        centroid_offset_px=offset,
        centroid_offset_arcsec=offset * KEPLER_PIXEL_SCALE_ARCSEC,
        centroid_offset_sigma=offset_sigma,
        frac_on_target=float(m["frac_ap"][0]),
        flux_source=m["flux_source"],
        undefined_reason=("" if measured else
                          f"the stamp dims by {m['d_core'][0] / noise2:.1f} sigma (< 3): no dimming to locate or share"
                          if not m["significant"][0] else
                          "the dimming of the region the centroid is measured on is below 3 sigma: no position"),
        target_rc=(float(m["flux_r"][0]), float(m["flux_c"][0])),
        centroid_rc=(float(m["dim_r"][0]), float(m["dim_c"][0])) if measured else None,
        centroid_cov=cov,
        phase_curve_ppm=m["a"][0] * PPM,
        noise_ppm=float(m["s_a"][0] * PPM),
        aperture=m["aperture"][0].copy(),
        sigma_ppm=m["sigma"][0] * PPM,
        weight=m["w"][0].copy(),
    )
