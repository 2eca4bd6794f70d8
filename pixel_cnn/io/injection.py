"""Injected stacks from real TPFs: read a TPF, mask its star's KOIs, inject, fold exactly as prep does.

The science (transit models, sources, masks, draws) is :mod:`pixel_cnn.stacks.inject`; this module
reads the files (:func:`pixel_cnn.io.fits.read_tpf`, the KOI table) and folds with
:func:`pixel_cnn.io.target.combine_quarters` and the checks of
:func:`pixel_cnn.io.target.process_target` (``fill_missing``, ``validate_stack``): the code of
``prep source=tpf``, so an injected stack is made as a user's stack is.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pixel_cnn.io.ephemeris import KOI_COLUMNS, Ephemeris
from pixel_cnn.io.errors import TPFError
from pixel_cnn.io.fits import TPFData, read_tpf
from pixel_cnn.io.target import combine_quarters
from pixel_cnn.stacks.inject import Injection, draw_injection, inject, known_transit_mask, reference_image
from pixel_cnn.stacks.phasefold import TIME_SYSTEMS, fill_missing, system_name
from pixel_cnn.vetter.stack import validate_stack


@dataclass
class Background:
    """One TPF's cadences with the star's known KOI transits removed: where signals are injected.

    tpf : the :class:`~pixel_cnn.io.fits.TPFData` with only the kept cadences.
    image : float64 ``(H, W)`` out-of-transit flux image (e-/s, :func:`~pixel_cnn.stacks.inject.reference_image`).
    kois : names of the KOIs masked; n_masked : cadences removed.
    """

    tpf: TPFData
    image: np.ndarray
    kois: tuple[str, ...]
    n_masked: int


def star_ephemerides(koi_table: pd.DataFrame, kepid: int, bjd_ref: float
                     ) -> tuple[list[tuple[float, float, float]], list[str]]:
    """Every KOI of a star (any disposition) as ``(period_d, epoch, duration_h)`` in the TPF's system.

    ``koi_table``: the KOI cumulative table (``kepid``, ``koi_period``, ``koi_time0bk`` [BKJD],
    ``koi_duration`` [h], ``kepoi_name``). Rows without a complete ephemeris are skipped.
    """
    rows = koi_table[koi_table[KOI_COLUMNS["id"]] == kepid]
    out, names = [], []
    for _, row in rows.iterrows():
        period, epoch, dur = (float(row[KOI_COLUMNS[k]]) for k in ("period", "epoch", "duration"))
        if np.isfinite(period) and period > 0 and np.isfinite(epoch) and np.isfinite(dur) and dur > 0:
            out.append((period, epoch + TIME_SYSTEMS["BKJD"] - bjd_ref, dur))
            names.append(str(row.get(KOI_COLUMNS["name"], "")))
    return out, names


def load_background(path: str | os.PathLike, koi_table: pd.DataFrame) -> Background:
    """Read one TPF and remove the cadences of its star's known transits.

    Raises
    ------
    TPFError
        The file cannot be read (:func:`~pixel_cnn.io.fits.read_tpf`), or fewer than 100 cadences are left.
    """
    tpf = read_tpf(path)
    ephem, names = star_ephemerides(koi_table, tpf.target_id, tpf.bjd_ref)
    keep = known_transit_mask(tpf.time, ephem)
    if keep.sum() < 100:
        raise TPFError(f"{os.path.basename(str(path))}: {int(keep.sum())} cadences left after masking "
                       f"the transits of {', '.join(names)} (need >= 100)")
    kept = dataclasses.replace(tpf, time=tpf.time[keep], flux=tpf.flux[keep])
    return Background(kept, reference_image(kept.flux), tuple(names), int((~keep).sum()))


@dataclass
class InjectedStack:
    """An injected stack as prep makes it, with its truth and what the fold kept.

    stack : float32 ``(32, H, W)``; injection : the truth; flux_image : float64 ``(H, W)`` the fold's
    out-of-transit image (e-/s); bin_counts : int64 ``(32,)``; info : the fold's report counts.
    """

    stack: np.ndarray
    injection: Injection
    flux_image: np.ndarray
    bin_counts: np.ndarray
    info: dict


def fold_injection(background: Background, inj: Injection) -> InjectedStack:
    """Inject ``inj`` into the background and fold it on the injection's ephemeris, as prep folds.

    Raises
    ------
    TPFError
        The fold fails (too few in-transit or reference cadences: the message of
        :func:`~pixel_cnn.io.target.combine_quarters`), or the stack fails validation.
    """
    tpf = background.tpf
    flux = inject(tpf.time, tpf.flux, background.image, inj)
    system = system_name(tpf.bjd_ref)
    if system not in TIME_SYSTEMS:
        raise TPFError(f"{tpf.path}: BJD reference {tpf.bjd_ref} is no known time system")
    eph = Ephemeris(tpf.target_id, f"inj-{inj.kind}-{inj.seed}", inj.period_d, inj.epoch + tpf.bjd_ref,
                    inj.duration_h, 1, inj.epoch + tpf.bjd_ref - TIME_SYSTEMS[system], system)
    stack, info = combine_quarters([dataclasses.replace(tpf, flux=flux)], eph)
    filled, _ = fill_missing(stack)
    try:
        filled = validate_stack(filled, nan="reject")
    except ValueError as exc:
        raise TPFError(f"{tpf.path}: injected stack {inj.kind} seed {inj.seed}: {exc}") from None
    arrays = {k: info.pop(k) for k in ("flux_image", "bin_counts")}
    return InjectedStack(filled, inj, arrays["flux_image"], arrays["bin_counts"], info)


def injected_stack(background: Background, kind: str, seed: int, depth: float | None = None,
                   offset_px: float | None = None) -> InjectedStack:
    """Draw (``numpy.random.default_rng(seed)``) and fold one injection of ``kind``; the same seed, the same stack.

    ``depth``/``offset_px``: see :func:`~pixel_cnn.stacks.inject.draw_injection`. Draws again (the next
    seeds of the same generator) when a fold has too few in-transit cadences (a period landing in a gap),
    at most 20 times.
    """
    rng = np.random.default_rng(seed)
    t = background.tpf.time
    last = None
    for _ in range(20):
        inj = draw_injection(kind, rng, (float(t.min()), float(t.max())), background.image, depth=depth,
                             offset_px=offset_px, seed=seed)
        try:
            return fold_injection(background, inj)
        except TPFError as exc:
            last = exc
    raise TPFError(f"no foldable injection of {kind} with seed {seed} in 20 draws: {last}")
