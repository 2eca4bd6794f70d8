"""Vetting sheet: one page per candidate, in the spirit of the Kepler DV one-page summary.

Pure: arrays in, a matplotlib ``Figure`` out (no MLflow, no paths; the caller
saves or logs it). The Kepler Data Validation one-page report puts the
difference image, the centroid offset and the folded light curve side by side
(Twicken et al. 2018, PASP 130, 064502; difference images and centroids:
Bryson et al. 2013, PASP 125, 889); this sheet does the same with what a stack
holds, plus the model's call and its attribution map.

Every number on the sheet comes from :func:`pixel_cnn.vetter.vetting.vetting_statistics`
(the function behind the CSV row of :mod:`pixel_cnn.scoring`) and is printed by
:func:`format_statistic`.
"""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.patches import Ellipse
from matplotlib.colors import LogNorm
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from pixel_cnn.drawing.colours import ATTRIBUTION_CMAP, ATTRIBUTION_MEANING, DIFFERENCE_CMAP
from pixel_cnn.vetter.stack import (
    IN_TRANSIT_BINS,
    KEPLER_PIXEL_SCALE_ARCSEC,
    N_PHASE_BINS,
    PPM,
    SECONDARY_BINS,
    SHOULDER_BINS,
)
from pixel_cnn.vetter.vetting import STATISTICS_COLUMNS, VettingStatistics, vetting_statistics

#: Size of a sheet: inches and dots per inch (1300 x 660 pixels).
SHEET_SIZE_IN, SHEET_DPI = (13.0, 6.6), 100
#: Labels of the statistics in the sheet's table (same keys as the CSV columns).
STATISTIC_LABELS = {
    "depth_ppm": "transit depth (aperture, + = dimming)",
    "snr": "transit SNR (aperture)",
    "secondary_depth_ppm": "secondary depth (phase 0.5, + = dimming)",
    "secondary_snr": "secondary SNR",
    "secondary_ratio": "secondary / primary",
    "centroid_offset_px": "centroid offset, pixels",
    "centroid_offset_arcsec": "centroid offset, arcsec",
    "centroid_offset_sigma": "centroid offset / its error",
    "frac_on_target": "share of dimming on target",
}
#: Colour-bar label of the difference images (one sign convention on the whole sheet: + = dimming).
DIFF_UNIT = "dimming, ppm of stamp flux (out - in; + = fainter)"
#: The difference images' colour scale reaches at least this many times the image's per-pixel noise
#: (median over the stamp), so a stamp of pure noise stays pale and only a significant dimming is dark.
NOISE_FLOOR_SIGMA = 5.0
#: Phase shown on the light curve: [-0.25, 0.75), so the transit (0) and the secondary (0.5) are whole.
PHASE_START = -0.25


def format_statistic(name: str, value: float) -> str:
    """How a statistic is printed on the sheet: ``"236 ppm"``, ``"1.99"``, ``"n/a"`` (NaN: not measured)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    unit = STATISTICS_COLUMNS[name]
    if unit == "ppm":
        return f"{value:.0f} ppm"
    if unit in ("pixel", "arcsec"):
        return f"{value:.2f} {unit}"
    if unit == "sigma":
        return f"{value:.1f} sigma"
    return f"{value:.2f}"


def _phase(bins) -> np.ndarray:
    """Centre phase of each bin, folded into [PHASE_START, PHASE_START + 1)."""
    p = (np.asarray(bins, dtype=float) + 0.5) / N_PHASE_BINS
    return (p - PHASE_START) % 1.0 + PHASE_START


def _image_panel(fig, ax, image, title, cbar_label, cmap, symmetric=True, extent=None, noise=None):
    """One image with its colour bar. ``symmetric``: a scale symmetric about 0, reaching the largest
    absolute value, and at least ``NOISE_FLOOR_SIGMA * noise`` when ``noise`` (same units) is given."""
    finite = image[np.isfinite(image)]
    if symmetric:
        lim = float(np.abs(finite).max()) if finite.size else 1.0
        if noise is not None and np.isfinite(noise) and noise > 0:
            lim = max(lim, NOISE_FLOOR_SIGMA * float(noise))
        lim = lim or 1.0
        kw = {"vmin": -lim, "vmax": lim}
    else:  # positive quantities over decades (scatter): logarithmic
        kw = {"norm": LogNorm(vmin=float(finite.min()) if finite.size else 1.0,
                              vmax=float(finite.max()) if finite.size else 10.0)}
    cm = plt.get_cmap(cmap).copy()
    cm.set_bad("0.6")
    im = ax.imshow(np.ma.masked_invalid(image), origin="lower", cmap=cm, interpolation="nearest",
                   extent=extent, **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("column (pixel)", fontsize=8)
    ax.set_ylabel("row (pixel)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, ticks=MaxNLocator(5) if symmetric else None)
    if symmetric:
        cb.formatter = ScalarFormatter(useOffset=False)
        cb.formatter.set_powerlimits((-9, 9))
        cb.update_ticks()
    cb.set_label(cbar_label, fontsize=7)
    cb.ax.tick_params(labelsize=7)
    return im


def _ellipse(ax, centre_rc, cov, k, **kw):
    """The ``k``-sigma ellipse of a 2-D Gaussian with covariance ``cov`` (row, col) at ``centre_rc``."""
    cov_xy = np.array([[cov[1, 1], cov[0, 1]], [cov[0, 1], cov[0, 0]]])  # (x = col, y = row)
    values, vectors = np.linalg.eigh(cov_xy)
    values = np.maximum(values, 0.0)
    angle = math.degrees(math.atan2(vectors[1, 1], vectors[0, 1]))
    ax.add_patch(Ellipse((centre_rc[1], centre_rc[0]), 2 * k * math.sqrt(values[1]),
                         2 * k * math.sqrt(values[0]), angle=angle, fill=False, **kw))


def contiguous_aperture(aperture: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The part of the target ``aperture`` (bool ``(H, W)``) 4-connected to its brightest pixel (largest
    ``weight``): the one contiguous region drawn as the target aperture (``scipy.ndimage.label``)."""
    from scipy import ndimage

    labels, _ = ndimage.label(aperture)
    masked = np.where(aperture, weight, -np.inf)
    peak = np.unravel_index(int(np.argmax(masked)), aperture.shape)
    return labels == labels[peak] if aperture[peak] else aperture.copy()


def difference_noise_ppm(stats: VettingStatistics, bins) -> float:
    """Median per-pixel noise of a difference image (mean of ``bins``, in ppm of stamp flux): each pixel's
    out-of-transit robust scatter per bin ``sigma_ppm`` x its flux weight, / sqrt(number of bins)."""
    noise = stats.sigma_ppm * stats.weight / math.sqrt(len(bins))
    finite = noise[np.isfinite(noise)]
    return float(np.median(finite)) if finite.size else float("nan")


def footer_text(model: str = "", koi: str = "", in_training: bool | None = None) -> str:
    """The sheet's footer: which model drew it, which KOI's parameters it used, whether the star was
    in the model's training set (its score is then in-sample, not a test)."""
    if len(model) > 90:  # the registry's one-line description: name and version fit, its figures do not
        model = model.split(" (", 1)[0]
    parts = [f"model: {model or 'not recorded'}",
             f"KOI parameters used: {koi}" if koi else "KOI parameters: none (stack only)"]
    if in_training is True:
        parts.append("IN TRAINING SET (score in-sample)")
    elif in_training is False:
        parts.append("not in the model's training set")
    else:
        parts.append("training set not recorded")
    return "  |  ".join(parts)


def _outline(ax, mask: np.ndarray, **kw) -> None:
    """Draw the pixel edges around the ``True`` region of ``mask`` (H, W) (origin lower)."""
    padded = np.pad(mask, 1)
    segments = []
    for r, c in zip(*np.nonzero(mask)):
        if not padded[r, c + 1]:       # no aperture pixel below: bottom edge
            segments.append([(c - 0.5, r - 0.5), (c + 0.5, r - 0.5)])
        if not padded[r + 2, c + 1]:   # above: top edge
            segments.append([(c - 0.5, r + 0.5), (c + 0.5, r + 0.5)])
        if not padded[r + 1, c]:       # left
            segments.append([(c - 0.5, r - 0.5), (c - 0.5, r + 0.5)])
        if not padded[r + 1, c + 2]:   # right
            segments.append([(c + 0.5, r - 0.5), (c + 0.5, r + 0.5)])
    ax.add_collection(LineCollection(segments, colors="k", linewidths=1.0, linestyles=":", **kw))


def sheet_figure(
    stack: np.ndarray,
    kepid: int | str,
    prediction: dict,
    attribution: np.ndarray | None = None,
    attribution_note: str = "",
    truth: str | None = None,
    source: str = "",
    stats: VettingStatistics | None = None,
    model: str = "",
    koi: str = "",
    in_training: bool | None = None,
) -> plt.Figure:
    """The vetting sheet of one candidate.

    Parameters
    ----------
    stack : numpy.ndarray
        Validated ``(32, H, W)`` float32 stack, fractional flux change.
    kepid : int or str
        Shown in the title (``KIC <kepid>``; a name that is not a number as it is).
    prediction : dict
        The model's answer for this stack, as returned by the served model:
        ``probability``, ``label``, ``threshold``, and any other
        ``*_probability`` column (a fused model's per-branch probabilities):
        every key ending in ``probability`` is listed.
    attribution : numpy.ndarray, optional
        float ``(S, S)`` Integrated-Gradients map of the model input, summed over
        image channels (logit units; :func:`pixel_cnn.drawing.explain.ensemble_attributions`),
        drawn over the stamp's extent. None: the panel says so.
    attribution_note : str
        One line under the attribution panel (e.g. the scalars' share).
    truth : str, optional
        The known disposition, when there is one (cv mistakes).
    source : str
        File name or origin, printed in the title.
    stats : VettingStatistics, optional
        :func:`~pixel_cnn.vetter.vetting.vetting_statistics` of ``stack`` (computed here if not given).
    model : str
        Which model drew the call (registered name and version, or the cv fold network), for the footer.
    koi : str
        The KOI whose parameters the model used (``K01875.01``), "" when none: the footer says so.
    in_training : bool, optional
        Whether the star was in the model's training set (the footer then says the score is in-sample);
        None: not recorded.

    Returns
    -------
    matplotlib.figure.Figure
        :data:`SHEET_SIZE_IN` at :data:`SHEET_DPI`. Top row: in-transit
        difference image (bins 0/31, out - in, ppm; target position = out-of-transit
        flux centroid ``+``, difference-image centroid ``x`` with its 1- and 3-sigma
        error ellipses, target aperture outlined), the attribution map, the
        secondary-eclipse difference image (bins 15-16) and the out-of-transit
        scatter image. Bottom: the aperture light curve over the 32 phase bins
        (in-transit, shoulder and secondary bins shaded) and the table of
        probabilities, threshold, label and statistics; a footer (:func:`footer_text`). One sign
        convention everywhere: + = dimming (difference images, light curve, depths). Difference-image
        colour scales are symmetric about zero and reach at least :data:`NOISE_FLOOR_SIGMA` times the
        image's median per-pixel noise (noise stays pale); attribution colours are
        :data:`pixel_cnn.drawing.explain.ATTRIBUTION_CMAP` (green: toward CONFIRMED), as in cv's
        ``attributions.png``. The dotted target aperture is the contiguous part around the brightest
        pixel (:func:`contiguous_aperture`); other aperture pixels (counted in "share of dimming on
        target") are marked with small dots.
    """
    stack = np.asarray(stack, dtype=np.float64)
    stats = vetting_statistics(stack) if stats is None else stats
    height, width = stack.shape[1:]
    # difference images in units of the stamp's flux (flux proxy x fractional change): faint pixels,
    # whose fractional change is mostly noise, weigh what their flux weighs (as in flux units)
    dimming = -stack[list(IN_TRANSIT_BINS)].mean(axis=0) * stats.weight * PPM       # out - in, + = dimming
    secondary = -stack[list(SECONDARY_BINS)].mean(axis=0) * stats.weight * PPM
    extent = (-0.5, width - 0.5, -0.5, height - 0.5)

    fig = plt.figure(figsize=SHEET_SIZE_IN, dpi=SHEET_DPI)
    grid = fig.add_gridspec(2, 4, height_ratios=[1.0, 0.9], hspace=0.72, wspace=0.62,
                            left=0.055, right=0.955, top=0.86, bottom=0.11)

    ax = fig.add_subplot(grid[0, 0])
    _image_panel(fig, ax, dimming, "in-transit difference\n(bins 0, 31)", DIFF_UNIT, DIFFERENCE_CMAP,
                 noise=difference_noise_ppm(stats, IN_TRANSIT_BINS))
    target_region = contiguous_aperture(stats.aperture, stats.weight)
    _outline(ax, target_region)
    stray = np.argwhere(stats.aperture & ~target_region)
    if len(stray):
        ax.plot(stray[:, 1], stray[:, 0], ".", color="k", ms=3)
    ax.plot(stats.target_rc[1], stats.target_rc[0], "+", color="k", ms=12, mew=2, label="target (flux centroid)")
    if stats.centroid_rc is not None:
        ax.plot(stats.centroid_rc[1], stats.centroid_rc[0], "x", color="lime", ms=9, mew=2,
                label="dimming centroid")
        _ellipse(ax, stats.centroid_rc, stats.centroid_cov, 1.0, color="lime", lw=1.2)
        _ellipse(ax, stats.centroid_rc, stats.centroid_cov, 3.0, color="lime", lw=0.8, ls="--")
        note = "x: dimming centroid (its 1, 3 sigma ellipses)"
    else:
        note = "no significant dimming: no centroid"
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    ax.text(0.0, -0.33, f"+: target (flux centroid of the aperture)\n{note}\n"
            f"dotted: target aperture{'; dots: other aperture pixels' if len(stray) else ''}\n"
            f"1 pixel = {KEPLER_PIXEL_SCALE_ARCSEC} arcsec",
            transform=ax.transAxes, fontsize=6.5, va="top", linespacing=1.1)

    ax = fig.add_subplot(grid[0, 1])
    if attribution is not None:
        # the colour meaning goes under the panel (a colour-bar label that long runs into the title)
        _image_panel(fig, ax, np.asarray(attribution, dtype=float), "attribution\n(Integrated Gradients)",
                     "logit", ATTRIBUTION_CMAP, extent=extent)
        ax.plot(stats.target_rc[1], stats.target_rc[0], "+", color="k", ms=12, mew=2)
        ax.text(0.0, -0.33, "\n".join([ATTRIBUTION_MEANING] + textwrap.wrap(
                    attribution_note or "model input resampled onto the stamp", 44)),
                transform=ax.transAxes, fontsize=6.5, va="top", linespacing=1.1)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "attribution not available\nfor this model", ha="center", va="center", fontsize=9)

    ax = fig.add_subplot(grid[0, 2])
    _image_panel(fig, ax, secondary, "secondary-eclipse difference\n(bins 15-16)", DIFF_UNIT, DIFFERENCE_CMAP,
                 noise=difference_noise_ppm(stats, SECONDARY_BINS))
    ax.plot(stats.target_rc[1], stats.target_rc[0], "+", color="k", ms=12, mew=2)

    ax = fig.add_subplot(grid[0, 3])
    sigma = np.where(np.isfinite(stats.sigma_ppm), stats.sigma_ppm, np.nan)
    _image_panel(fig, ax, sigma, "out-of-transit scatter\n(bins 4-11, 20-27)", "robust scatter per bin, ppm (log)", "viridis",
                 symmetric=False)
    ax.text(0.0, -0.33, "low scatter = bright pixel (photon noise);\ngrey: no data",
            transform=ax.transAxes, fontsize=6.5, va="top", linespacing=1.1)

    ax = fig.add_subplot(grid[1, :2])
    for bins, colour, name in ((IN_TRANSIT_BINS, "tab:red", "in transit (0, 31)"),
                               (SHOULDER_BINS, "tab:orange", "shoulders (1, 30)"),
                               (SECONDARY_BINS, "tab:blue", "secondary (15, 16)")):
        for j, b in enumerate(bins):
            lo = _phase([b])[0] - 0.5 / N_PHASE_BINS
            ax.axvspan(lo, lo + 1.0 / N_PHASE_BINS, color=colour, alpha=0.18, lw=0, label=name if j == 0 else None)
    phase = _phase(np.arange(N_PHASE_BINS))
    order = np.argsort(phase)
    # + = dimming, as the difference images and the depths of the table
    ax.errorbar(phase[order], -stats.phase_curve_ppm[order], yerr=stats.noise_ppm, fmt="o-", color="k",
                ms=3.5, lw=1, elinewidth=0.8, capsize=0, label="aperture dimming (1-sigma: OOT scatter)")
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xlim(PHASE_START, PHASE_START + 1.0)
    ax.set_xlabel("orbital phase (0 = transit; 32 bins)", fontsize=8)
    ax.set_ylabel("dimming, ppm (+ = fainter)", fontsize=8)
    ax.set_title("aperture light curve (flux-weighted photometry of the stamp)", fontsize=9)
    ax.tick_params(labelsize=7)
    # headroom above the curve for the legend: "best" still covered points when the shaded bins span the plot
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.45 * (high - low))
    ax.legend(fontsize=7, loc="upper center", ncol=2, framealpha=0.85)

    ax = fig.add_subplot(grid[1, 2:])
    ax.axis("off")
    # a branch that did not answer (a fusion model scored without KOI parameters: tabular None) says so
    cells = [[f"P(planet){'' if k == 'probability' else ' ' + k.removesuffix('_probability')}",
              "not used" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{float(v):.3f}"]
             for k, v in prediction.items() if k.endswith("probability")]
    if "threshold" in prediction:
        cells.append(["threshold", f"{float(prediction['threshold']):.3f}"])
    if "label" in prediction:
        cells.append(["call", str(prediction["label"])])
    if truth is not None:
        cells.append(["known disposition", truth])
    cells += [[STATISTIC_LABELS[k], format_statistic(k, v)] for k, v in stats.row().items()]
    # the table as two blocks of text (one artist each: a matplotlib Table draws every cell apart, 4 x slower)
    ax.text(0.02, 1.06, "quantity", transform=ax.transAxes, va="top", fontsize=8.5, weight="bold")
    ax.text(0.62, 1.06, "value", transform=ax.transAxes, va="top", fontsize=8.5, weight="bold")
    ax.plot([0.0, 0.95], [0.985, 0.985], transform=ax.transAxes, color="0.3", lw=0.8)
    body = {"transform": ax.transAxes, "va": "top", "ha": "left", "fontsize": 8, "linespacing": 1.22}
    ax.text(0.02, 0.96, "\n".join(c[0] for c in cells), gid="sheet-table-labels", **body)
    ax.text(0.62, 0.96, "\n".join(c[1] for c in cells), gid="sheet-table-values", **body)
    ax.set_ylim(0, 1)

    call = prediction.get("label", "")
    p = prediction.get("probability")
    head = (f"KIC {kepid}" if str(kepid).isdigit() else str(kepid)) + (f"  ({source})" if source else "")
    sub = f"P(planet) = {float(p):.3f} -> {call}" if p is not None else ""
    if truth is not None:
        sub += f"   known: {truth}"
    fig.suptitle(f"{head}   vetting sheet\n{sub}", fontsize=11, y=0.99)
    fig.text(0.01, 0.008, footer_text(model, koi, in_training), fontsize=7.5, va="bottom", ha="left",
             gid="sheet-footer", color="darkred" if in_training else "0.2",
             weight="bold" if in_training else "normal")
    return fig


def table_cells(fig: plt.Figure) -> dict[str, list[str]]:
    """The sheet's table as ``{quantity: [values...]}`` (read back from the drawn text; a label may repeat)."""
    texts = {t.get_gid(): t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid()}
    labels = texts["sheet-table-labels"].split("\n")
    values = texts["sheet-table-values"].split("\n")
    out: dict[str, list[str]] = {}
    for label, value in zip(labels, values, strict=True):
        out.setdefault(label, []).append(value)
    return out


def mistake_sheet_specs(worst, folds, stacks: dict, n_maps: int, model: str = "") -> list[tuple[str, dict]]:
    """What to draw for a cv's worst out-of-fold calls: ``(artifact path, sheet_figure kwargs)`` each.

    Parameters
    ----------
    worst : pandas.DataFrame
        :func:`pixel_cnn.evaluation.cv.worst_oof` rows (``kepid, label, repeat, fold,
        probability, threshold, rank, mistake``).
    folds : list of :class:`~pixel_cnn.evaluation.cv.FoldOutcome`
        The cv's folds; ``attributions`` (``(n_val, C, S, S)``) may be None (no panel).
    stacks : dict
        kepid -> validated ``(32, H, W)`` stack.
    n_maps : int
        Leading image channels of the model input (their attributions are summed).
    model : str
        What the cv is (its run name), for the footer: the sheet names the fold network that scored
        the target, out of fold (never in its training set).

    Returns
    -------
    list of ``(path, kwargs)``: ``sheet_figure(**kwargs)`` draws the sheet; paths
    ``figures/mistakes/planet_<rank>_<kepid>.png`` (planets scored lowest) and
    ``figures/mistakes/fp_<rank>_<kepid>.png`` (false positives scored highest). The
    attribution is that of the fold network that scored the target (out of fold). A vetter of
    several branches (``probability_<branch>`` columns in ``worst``) shows each branch's probability,
    and the footer the KOI whose parameters scored the star (``tabular_koi``).
    """
    from pixel_cnn.vetter.ensemble import LABELS

    by_fold = {(f.repeat, f.fold): f for f in folds}
    out = []
    for row in worst.itertuples(index=False):
        kepid, label = int(row.kepid), int(row.label)
        fold = by_fold[(int(row.repeat), int(row.fold))]
        attribution, note = None, ""
        if fold.attributions is not None:
            i = int(np.flatnonzero(np.asarray(fold.val_kepids) == kepid)[0])
            attr = fold.attributions[i]
            attribution = attr[:n_maps].sum(0)
            note = f"fold {row.fold} network (out of fold); scalar inputs {float(attr[n_maps:].sum()):+.2f} logit"
        prob, threshold = float(row.probability), float(row.threshold)
        prediction = {"probability": prob, "label": LABELS[int(prob >= threshold)], "threshold": threshold}
        for column, value in row._asdict().items():  # each branch's probability (fusion)
            if column.startswith("probability_") and column != "probability_fused":
                prediction[f"{column.removeprefix('probability_')}_probability"] = float(value)
        koi = getattr(row, "tabular_koi", "")
        koi = koi if isinstance(koi, str) else ""
        kind = "planet" if label == 1 else "fp"
        what = ("planet scored lowest" if label == 1 else "false positive scored highest") + f" #{row.rank}"
        out.append((f"figures/mistakes/{kind}_{row.rank}_{kepid}.png", {
            "stack": stacks[kepid], "kepid": kepid, "prediction": prediction, "attribution": attribution,
            "attribution_note": note, "truth": LABELS[label], "source": f"cv out-of-fold, {what}, fold {row.fold}",
            "model": (f"{model}: " if model else "") + f"fold {row.fold} network(s), out of fold",
            "koi": koi, "in_training": False}))
    return out
