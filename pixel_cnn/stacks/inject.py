"""Signals injected into real pixel time series: the truth behind an injection-recovery test. Pure numpy.

Kepler measured its pipeline by injecting transits into the pixel data (Christiansen et al. 2013,
ApJS 207, 35); this module does the same to one Target Pixel File's cadences, arrays in and arrays
out (reading the TPF and the KOI table is :mod:`pixel_cnn.io.injection`'s job). Four kinds
(:data:`KINDS`):

* ``planet``: a limb-darkened transit of the target (Mandel & Agol 2002, ApJ 580, L171, computed by
  ``batman``, Kreidberg 2015, PASP 127, 1161), the dimming spread over the pixels as the target's own
  light is: pixel ``p`` loses ``(1 - m(t)) * O_p`` electrons/s, ``O`` the out-of-transit flux image;
* ``eb``: an eclipsing binary on the target: a deep, grazing (V-shaped) primary and, when
  ``secondary_depth > 0``, a secondary eclipse of the same shape at phase 0.5;
* ``offtarget``: an eclipse of another source whose light ``S`` (a real neighbour's pixels of the
  stamp, or the target's own image shifted by ``offset_rc``) is a fraction ``source_flux`` of the
  target's: pixel ``p`` loses ``(1 - m(t)) * S_p``. The eclipse is diluted by the target's light;
* ``none``: nothing injected (the noise the other kinds sit in).

Every injection is made from an :class:`Injection` (all parameters, seed included), drawn by
:func:`draw_injection` from a ``numpy.random.Generator``: the same seed gives the same injection,
bit for bit. Cadences in the transits of the star's own KOIs are removed first
(:func:`known_transit_mask`), so no real signal is folded in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: The kinds of signal, in the order of the evidence classes.
KINDS = ("none", "planet", "eb", "offtarget")
#: Quadratic limb darkening of a Sun-like star in the Kepler band (Claret & Bloemen 2011, A&A 529, A75,
#: Teff 5750 K, log g 4.5, [Fe/H] 0: u1 = 0.40, u2 = 0.26).
LIMB_DARKENING = (0.40, 0.26)
#: Kepler long cadence: 29.4244 min exposure (Kepler Instrument Handbook, KSCI-19033), integrated by
#: supersampling the model 7 times (Kipping 2010, MNRAS 408, 1758).
LONG_CADENCE_D, SUPERSAMPLE = 29.4244 / 1440.0, 7
#: ``a / R*`` of a circular orbit of period 1 day around a Sun-like star (Kepler's third law:
#: ``a / R* = (G M P^2 / (4 pi^2 R^3))^(1/3)`` = 4.206 P[d]^(2/3) for M = M_sun, R = R_sun).
A_RS_1DAY = 4.206
#: Known KOI transits masked over this many transit durations, centred on mid-transit.
MASK_DURATIONS = 1.5


@dataclass(frozen=True)
class Injection:
    """One injected signal; every number needed to make it again.

    kind : one of :data:`KINDS`.
    period_d : orbital period, days. epoch : a mid-transit (mid-eclipse) time, days, in the TPF's
        own time system (BKJD for Kepler). duration_h : first to fourth contact, hours (the
        ephemeris the stack is folded on).
    rp_rs, a_rs, impact : radius ratio, scaled semi-major axis, impact parameter of the transit model.
    depth : fractional depth of the model at mid-transit, ``1 - m(epoch)`` (of the eclipsed source).
    secondary_depth : fractional depth of the secondary eclipse at phase 0.5 (``eb``; 0 = none).
    offset_rc : (row, column) of the eclipsed source minus the target, pixels (``offtarget``).
    source_flux : the eclipsed source's flux over the target's (``offtarget``; 1 otherwise).
    source : "target", "neighbour" (a real star of the stamp) or "shifted" (the target's image moved).
    seed : the seed it was drawn with (-1: given by hand).
    """

    kind: str
    period_d: float
    epoch: float
    duration_h: float
    rp_rs: float = 0.0
    a_rs: float = 0.0
    impact: float = 0.0
    depth: float = 0.0
    secondary_depth: float = 0.0
    offset_rc: tuple[float, float] = (0.0, 0.0)
    source_flux: float = 1.0
    source: str = "target"
    seed: int = -1

    def row(self) -> dict:
        """Flat dict for a table (``offset_rc`` split into ``offset_r``, ``offset_c``, plus ``offset_px``)."""
        out = asdict(self)
        dr, dc = out.pop("offset_rc")
        return {**out, "offset_r": dr, "offset_c": dc, "offset_px": float(np.hypot(dr, dc))}


def transit_duration_h(period_d: float, rp_rs: float, a_rs: float, impact: float) -> float:
    """First to fourth contact of a circular orbit, hours (Seager & Mallen-Ornelas 2003, ApJ 585, 1038, eq. 3).

    ``T = P / pi * arcsin(sqrt((1 + k)^2 - b^2) / (a sin i))`` with ``cos i = b / a``.

    Raises
    ------
    ValueError
        ``impact >= 1 + rp_rs`` (no transit) or ``a_rs <= 1``.
    """
    if a_rs <= 1 or impact >= 1 + rp_rs:
        raise ValueError(f"no transit: a/R* = {a_rs!r}, impact {impact!r}, Rp/R* {rp_rs!r}")
    sin_i = np.sqrt(1 - (impact / a_rs) ** 2)
    chord = np.sqrt((1 + rp_rs) ** 2 - impact ** 2) / (a_rs * sin_i)
    return float(period_d / np.pi * np.arcsin(min(chord, 1.0)) * 24.0)


def transit_model(time: np.ndarray, inj: Injection) -> np.ndarray:
    """Relative flux ``m(t)`` of the eclipsed source (1 = no eclipse), float64 ``(N,)``.

    The ``batman`` quadratic limb-darkened model (:data:`LIMB_DARKENING`), integrated over a Kepler
    long cadence; for an ``eb`` with ``secondary_depth > 0`` the same eclipse again at phase 0.5,
    scaled to that depth. ``none``: all ones. ``time`` in days, same system as ``inj.epoch``.
    """
    import batman  # compiled C: imported only where a model is made

    time = np.asarray(time, dtype=np.float64)
    if inj.kind == "none":
        return np.ones_like(time)
    params = batman.TransitParams()
    params.t0, params.per, params.rp, params.a = inj.epoch, inj.period_d, inj.rp_rs, inj.a_rs
    params.inc = float(np.degrees(np.arccos(inj.impact / inj.a_rs)))
    params.ecc, params.w, params.limb_dark, params.u = 0.0, 90.0, "quadratic", list(LIMB_DARKENING)
    model = batman.TransitModel(params, time, supersample_factor=SUPERSAMPLE, exp_time=LONG_CADENCE_D)
    flux = model.light_curve(params)
    if inj.kind == "eb" and inj.secondary_depth > 0:
        primary_depth = 1.0 - model_depth(params)
        params.t0 = inj.epoch + inj.period_d / 2
        second = batman.TransitModel(params, time, supersample_factor=SUPERSAMPLE, exp_time=LONG_CADENCE_D)
        flux = flux - (1.0 - second.light_curve(params)) * inj.secondary_depth / max(primary_depth, 1e-12)
    return flux


def model_depth(params) -> float:
    """``m(t0)`` of a batman ``TransitParams`` (relative flux at mid-transit, not integrated)."""
    import batman

    return float(batman.TransitModel(params, np.array([params.t0])).light_curve(params)[0])


def known_transit_mask(time: np.ndarray, ephemerides: list[tuple[float, float, float]]) -> np.ndarray:
    """Cadences clear of every known transit (and of the phase-0.5 window, where an EB's secondary sits).

    time : float ``(N,)`` days; ephemerides : ``(period_d, epoch, duration_h)`` per KOI of the star,
    epoch in the same time system as ``time``. Returns bool ``(N,)``: True = keep. A cadence is
    masked within ``MASK_DURATIONS * duration / 2`` of a mid-transit or of phase 0.5.
    """
    time = np.asarray(time, dtype=np.float64)
    keep = np.ones(time.shape, dtype=bool)
    for period, epoch, duration_h in ephemerides:
        half = MASK_DURATIONS * duration_h / 24.0 / 2.0
        for shift in (0.0, 0.5):
            phase = np.mod(time - epoch - shift * period + period / 2, period) - period / 2
            keep &= np.abs(phase) >= half
    return keep


def reference_image(flux: np.ndarray) -> np.ndarray:
    """Out-of-transit flux image: per-pixel median of ``flux`` ``(N, H, W)`` e-/s -> float64 ``(H, W)``.

    NaN (pixel never finite) and negative values (background over-subtracted) become 0.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        image = np.nanmedian(np.asarray(flux, dtype=np.float64), axis=0)
    return np.where(np.isfinite(image) & (image > 0), image, 0.0)


def target_pixel(image: np.ndarray) -> tuple[int, int]:
    """(row, column) of the brightest pixel of the out-of-transit image ``(H, W)``: the target's."""
    return tuple(int(i) for i in np.unravel_index(np.argmax(image), image.shape))


def neighbours(image: np.ndarray, min_fraction: float = 0.02, min_distance: float = 1.5
               ) -> list[tuple[int, int]]:
    """Local maxima of the out-of-transit image other than the target: other stars in the stamp.

    A pixel is a neighbour's peak when it is the largest of its 3x3, holds at least ``min_fraction``
    of the target's peak and lies at least ``min_distance`` pixels from the target pixel. Sorted
    brightest first. image ``(H, W)`` -> list of (row, column).
    """
    height, width = image.shape
    target = target_pixel(image)
    padded = np.pad(image, 1, constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    peaks = (image >= windows.max(axis=(2, 3))) & (image >= min_fraction * image[target])
    out = [(r, c) for r, c in zip(*np.nonzero(peaks))
           if np.hypot(r - target[0], c - target[1]) >= min_distance]
    return sorted(((int(r), int(c)) for r, c in out), key=lambda p: -image[p])


def source_image(image: np.ndarray, inj: Injection) -> np.ndarray:
    """The light ``S`` ``(H, W)`` (e-/s) of the source that ``inj`` eclipses.

    ``planet``/``eb``/``none``: the target's own light: the out-of-transit image on the pixels nearer to
    the target pixel than to any neighbour's peak (:func:`neighbours`), 0 elsewhere. ``offtarget``
    with ``source="shifted"``: the image moved by ``offset_rc`` (bilinear, zero outside the stamp) times
    ``source_flux``. ``source="neighbour"``: the pixels nearer to the neighbour's peak
    (``target pixel + offset_rc``) than to the target's, times ``source_flux`` (1 = the neighbour's
    own light, as observed).
    """
    from scipy.ndimage import shift as nd_shift

    rows, cols = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    tr, tc = target_pixel(image)
    if inj.kind != "offtarget":
        own = np.ones(image.shape, dtype=bool)
        for nr, nc in neighbours(image):
            own &= np.hypot(rows - tr, cols - tc) <= np.hypot(rows - nr, cols - nc)
        return np.where(own, image, 0.0)
    if inj.source == "shifted":
        return inj.source_flux * np.clip(nd_shift(image, inj.offset_rc, order=1, mode="constant", cval=0.0), 0, None)
    if inj.source == "neighbour":
        nr, nc = tr + inj.offset_rc[0], tc + inj.offset_rc[1]
        nearer = np.hypot(rows - nr, cols - nc) < np.hypot(rows - tr, cols - tc)
        return inj.source_flux * np.where(nearer, image, 0.0)
    raise ValueError(f"source {inj.source!r}: expected 'shifted' or 'neighbour'")


def inject(time: np.ndarray, flux: np.ndarray, image: np.ndarray, inj: Injection) -> np.ndarray:
    """``flux`` with the signal of ``inj`` added: float32 ``(N, H, W)``, electrons/s.

    ``flux - (1 - m(t)) * S``: each pixel loses the eclipsed fraction of the source's light in it
    (:func:`transit_model`, :func:`source_image`); the real noise of the pixels stays as it is.
    NaN pixels stay NaN.
    """
    if inj.kind not in KINDS:
        raise ValueError(f"kind {inj.kind!r}: expected one of {KINDS}")
    if inj.kind == "none":
        return np.asarray(flux, dtype=np.float32)
    deficit = 1.0 - transit_model(time, inj)                             # (N,)
    light = source_image(image, inj)                                     # (H, W)
    return (np.asarray(flux, dtype=np.float64) - deficit[:, None, None] * light[None]).astype(np.float32)


def draw_injection(kind: str, rng: np.random.Generator, t_range: tuple[float, float], image: np.ndarray,
                   depth: float | None = None, offset_px: float | None = None, seed: int = -1,
                   min_transits: int = 3) -> Injection:
    """Draw one injection of ``kind`` for a TPF of time range ``t_range`` (days).

    Period log-uniform in [0.7 d, min(15 d, span / min_transits)], epoch uniform over the first
    period, a Sun-like star (``a/R* = 4.206 P^(2/3)``, :data:`A_RS_1DAY`).

    * ``planet``: impact uniform in [0, 0.8]; ``rp_rs`` from ``depth`` (default log-uniform
      300-20000 ppm) as ``sqrt(depth)``.
    * ``eb``: ``rp_rs`` uniform in [0.3, 0.7], impact uniform in [0.72, 0.9] x (1 + rp_rs): grazing,
      V-shaped; a secondary at phase 0.5 in half of them (depth 10-60 % of the primary's).
    * ``offtarget``: a real neighbour of the stamp (:func:`neighbours`) within 0.5-4 px when there is one
      and ``offset_px`` is not given; else the target's image shifted by ``offset_px`` (default uniform
      0.5-4) in a random direction, ``source_flux`` 0.05-0.5 and the eclipse depth chosen so that the
      diluted depth is ``depth`` (default log-uniform 300-20000 ppm).
    * ``none``: the ephemeris only (the stack is folded on it).

    ``depth`` is the diluted depth seen in the target's light: for ``planet``/``eb`` the model depth,
    for ``offtarget`` ``source depth * source_flux``.

    Raises
    ------
    ValueError
        Unknown ``kind``, or a time range too short for ``min_transits`` transits of a 0.7 d period.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    span = float(t_range[1] - t_range[0])
    p_max = min(15.0, span / min_transits)
    if p_max < 0.7:
        raise ValueError(f"time range {span:.2f} d too short for {min_transits} transits of a 0.7 d period")
    period = float(np.exp(rng.uniform(np.log(0.7), np.log(p_max))))
    epoch = float(t_range[0] + rng.uniform(0, period))
    a_rs = A_RS_1DAY * period ** (2 / 3)
    if depth is None:
        depth = float(np.exp(rng.uniform(np.log(3e-4), np.log(2e-2))))
    common = {"kind": kind, "period_d": period, "epoch": epoch, "a_rs": a_rs, "seed": seed}
    if kind in ("planet", "none"):
        rp = float(np.sqrt(depth))
        impact = float(rng.uniform(0, 0.8))
        dur = transit_duration_h(period, rp, a_rs, impact)
        if kind == "none":
            return Injection(**common | {"a_rs": 0.0}, duration_h=dur)
        return Injection(**common, duration_h=dur, rp_rs=rp, impact=impact, depth=_depth(period, epoch, rp, a_rs,
                                                                                        impact))
    if kind == "eb":
        rp = float(rng.uniform(0.3, 0.7))
        impact = float(rng.uniform(0.8, 1.0) * (1 + rp) * 0.9)
        dur = transit_duration_h(period, rp, a_rs, impact)
        d = _depth(period, epoch, rp, a_rs, impact)
        sec = float(rng.uniform(0.1, 0.6) * d) if rng.uniform() < 0.5 else 0.0
        return Injection(**common, duration_h=dur, rp_rs=rp, impact=impact, depth=d, secondary_depth=sec)
    # offtarget
    near = [p for p in neighbours(image) if 0.5 <= np.hypot(*np.subtract(p, target_pixel(image))) <= 4.0]
    if near and offset_px is None:
        peak = near[int(rng.integers(len(near)))]
        offset = tuple(float(x) for x in np.subtract(peak, target_pixel(image)))
        source, source_flux = "neighbour", 1.0
        share = float(image[peak] / image[target_pixel(image)])  # the neighbour's light, relative
    else:
        r = float(rng.uniform(0.5, 4.0)) if offset_px is None else float(offset_px)
        angle = rng.uniform(0, 2 * np.pi)
        offset = (r * float(np.sin(angle)), r * float(np.cos(angle)))
        source, source_flux = "shifted", float(np.exp(rng.uniform(np.log(0.05), np.log(0.5))))
        share = source_flux
    src_depth = min(depth / share, 0.6)
    rp = float(np.sqrt(src_depth))
    impact = float(rng.uniform(0, 0.8))
    dur = transit_duration_h(period, rp, a_rs, impact)
    return Injection(**common, duration_h=dur, rp_rs=rp, impact=impact, depth=_depth(period, epoch, rp, a_rs, impact),
                     offset_rc=offset, source_flux=source_flux, source=source)


def _depth(period: float, epoch: float, rp: float, a_rs: float, impact: float) -> float:
    """Model depth ``1 - m(t0)`` of a transit (no cadence integration)."""
    import batman

    params = batman.TransitParams()
    params.t0, params.per, params.rp, params.a = epoch, period, rp, a_rs
    params.inc = float(np.degrees(np.arccos(impact / a_rs)))
    params.ecc, params.w, params.limb_dark, params.u = 0.0, 90.0, "quadratic", list(LIMB_DARKENING)
    return 1.0 - model_depth(params)
