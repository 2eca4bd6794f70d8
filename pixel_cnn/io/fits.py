"""One Target Pixel File (FITS) -> arrays + header checks (the edge: lightkurve/astropy).

Every failure of one file (unreadable, truncated or corrupt FITS, a missing or
non-numeric header keyword, an empty aperture, no cadence left after the
quality mask, a TIME column without a finite value) is caught at that file's
boundary (:func:`read_tpf`, :func:`header_target_id`) and becomes a
:class:`~pixel_cnn.io.errors.TPFError` whose message starts with the file name.
``path`` may be a local path or an fsspec URL (``s3://...``; see
:mod:`pixel_cnn.io.sources`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixel_cnn.stacks.phasefold import BKJD_REF, BTJD_REF
from pixel_cnn.io.errors import TPFError

TPF_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")


@dataclass
class TPFData:
    """The cadences of one TPF that survive the quality and NaN cuts.

    time : float64 ``(N,)``, days in the file's own system (BKJD/BTJD: ``BJD - bjd_ref``).
    flux : float32 ``(N, H, W)``, electrons/s (``FLUX`` column, background-subtracted).
    grid : the pixel grid, ``(mission, channel or camera-ccd, column, row, H, W)``;
        equal grids are the same CCD pixels.
    """

    path: str
    target_id: int
    mission: str
    period_label: str  # "Q5", "C3", "S14"
    bjd_ref: float
    time: np.ndarray
    flux: np.ndarray
    grid: tuple
    n_raw: int
    n_quality: int
    n_nonfinite_time: int
    n_nan_flux: int


def _lightkurve():
    with warnings.catch_warnings():  # "tpfmodel submodule is not available without oktopus"
        warnings.simplefilter("ignore")
        import lightkurve
    return lightkurve


def _header_number(header, key: str, name: str, what: str, integer: bool = False,
                   default: float | None = None) -> float:
    """A numeric header keyword, or :class:`TPFError` naming the file, the keyword and the problem."""
    value = header.get(key)
    if value in (None, ""):
        if default is not None:
            return default
        raise TPFError(f"{name}: header keyword {key} ({what}) "
                       f"{'has no value' if key in header else 'is missing'}")
    try:
        number = float(value)
        if not np.isfinite(number) or (integer and number != int(number)):
            raise ValueError
    except (TypeError, ValueError):
        raise TPFError(f"{name}: header keyword {key} ({what}) = {value!r} is not "
                       f"{'an integer' if integer else 'a finite number'}") from None
    return int(number) if integer else number


def read_tpf(path: str | os.PathLike, quality_bitmask: str | int = "default") -> TPFData:
    """Read one TPF with lightkurve and drop unusable cadences.

    Kepler long and short cadence, K2 and TESS SPOC TPFs (``lightkurve.read``
    returns a ``KeplerTargetPixelFile`` or ``TessTargetPixelFile``). Cadences
    dropped, each counted: flagged by the lightkurve quality ``bitmask``
    ("default": ``KeplerQualityFlags``/``TessQualityFlags.DEFAULT_BITMASK``),
    non-finite ``TIME``, and cadences whose ``FLUX`` is NaN in every pixel.
    Single NaN pixels stay NaN (ignored by the medians).

    Header keywords read (Kepler Archive Manual, KDMC-10008, sec. 2.3):
    ``KEPLERID``/``TICID`` (target), in the pixel extension ``1CRV5P``/``2CRV5P``
    (CCD column/row of the grid's corner pixel: the pixel grid), ``BJDREFI`` +
    ``BJDREFF`` (the time system; missing: the mission's, 2454833 or 2457000).

    Raises
    ------
    TPFError
        Every problem of the file, the message starting with the file name:
        unreadable, truncated or corrupt FITS; not a target pixel file; a
        header keyword above missing or not a number; an empty aperture (no
        pixel, or the ``APERTURE`` image has no collected pixel, bit 1);
        ``TIME`` without a finite value; no cadence left after the quality
        mask (and the NaN cuts). Nothing else escapes: an unexpected error of
        lightkurve/astropy on a bad file becomes a ``TPFError`` with its type.
    """
    name = Path(path).name
    try:
        return _read_tpf(path, name, quality_bitmask)
    except TPFError:
        raise
    except Exception as exc:  # the file's boundary: whatever a malformed file makes the readers raise
        raise TPFError(f"{name}: cannot read the TPF ({type(exc).__name__}: "
                       f"{(str(exc).splitlines() or [''])[0][:200]})") from None


def _read_tpf(path, name: str, quality_bitmask) -> TPFData:
    lk = _lightkurve()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tpf = lk.read(str(path), quality_bitmask=quality_bitmask)
            if not isinstance(tpf, lk.targetpixelfile.TargetPixelFile):
                raise TPFError(f"{name}: not a target pixel file (lightkurve read a {type(tpf).__name__})")
            raw_time = np.asarray(tpf.hdu[1].data["TIME"], dtype=np.float64)
            raw_flux = np.asarray(tpf.hdu[1].data["FLUX"], dtype=np.float32)
            header0, header1 = tpf.get_header(0), tpf.get_header(1)
            aperture = tpf.hdu[2].data if len(tpf.hdu) > 2 else None
            quality_ok = np.asarray(tpf.quality_mask, dtype=bool)
        except TPFError:
            raise
        except Exception as exc:  # astropy/lightkurve raise many types for a bad file
            raise TPFError(f"{name}: unreadable or truncated FITS file ({type(exc).__name__}: "
                           f"{(str(exc).splitlines() or [''])[0][:200]})") from None
    truncated = [str(w.message) for w in caught if "truncated" in str(w.message).lower()]
    if truncated:
        raise TPFError(f"{name}: truncated FITS file ({truncated[0][:200]})")
    target = tpf.targetid
    if target in (None, ""):
        raise TPFError(f"{name}: header has no target id (KEPLERID / TICID)")
    try:
        target = int(target)
    except (TypeError, ValueError):
        raise TPFError(f"{name}: header target id {target!r} is not an integer") from None
    mission = str(tpf.mission or header0.get("TELESCOP") or "unknown")
    if isinstance(tpf, lk.TessTargetPixelFile):
        label, chip = f"S{header0.get('SECTOR', '?')}", f"{header0.get('CAMERA', '?')}-{header0.get('CCD', '?')}"
        default_ref = BTJD_REF
    else:
        q = header0.get("QUARTER")
        label = f"Q{q}" if q not in (None, "") else f"C{header0.get('CAMPAIGN', '?')}"
        chip, default_ref = str(header0.get("CHANNEL", "?")), BKJD_REF
    column = _header_number(header1, "1CRV5P", name, "CCD column of the pixel grid", integer=True)
    row = _header_number(header1, "2CRV5P", name, "CCD row of the pixel grid", integer=True)
    if header1.get("BJDREFI") in (None, ""):
        bjd_ref = default_ref
    else:
        bjd_ref = (_header_number(header1, "BJDREFI", name, "integer part of the BJD reference", integer=True)
                   + _header_number(header1, "BJDREFF", name, "fraction of the BJD reference", default=0.0))

    if raw_flux.ndim != 3 or raw_flux.shape[1] * raw_flux.shape[2] == 0:
        raise TPFError(f"{name}: empty aperture: the FLUX image has no pixel (shape {raw_flux.shape[1:]})")
    if aperture is not None:
        collected = (np.asarray(aperture).astype(np.int64) & 1) > 0
        if not collected.any():
            raise TPFError(f"{name}: empty aperture: the APERTURE image has no collected pixel (bit 1)")
    n_raw = len(raw_time)
    finite_time = np.isfinite(raw_time)
    if not finite_time.any():
        raise TPFError(f"{name}: TIME has no finite value (NaN in all {n_raw} cadences)")
    nan_cadence = np.isnan(raw_flux).reshape(n_raw, -1).all(axis=1)
    keep = quality_ok & finite_time & ~nan_cadence
    n_quality = int((~quality_ok & finite_time).sum())
    if not keep.any():
        raise TPFError(f"{name}: no cadences left after the quality mask: of {n_raw}, {n_quality} flagged "
                       f"(bitmask {quality_bitmask!r}), {int((~finite_time).sum())} non-finite TIME, "
                       f"{int((quality_ok & finite_time & nan_cadence).sum())} all-NaN FLUX")
    height, width = raw_flux.shape[1:]
    return TPFData(
        path=str(path), target_id=target, mission=mission, period_label=label, bjd_ref=bjd_ref,
        time=raw_time[keep], flux=raw_flux[keep],
        grid=(mission, chip, column, row, int(height), int(width)),
        n_raw=n_raw,
        n_quality=n_quality,
        n_nonfinite_time=int((~finite_time).sum()),
        n_nan_flux=int((quality_ok & finite_time & nan_cadence).sum()),
    )


def header_target_id(path, name: str | None = None) -> int:
    """Target id from a FITS primary header (``KEPLERID`` or ``TICID``), without reading the data.

    ``path``: a local path or an open binary file object (then ``name`` names it in messages).

    Raises
    ------
    TPFError
        Unreadable header, or no id keyword.
    """
    from astropy.io import fits

    name = name or Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(path, 0)
    except Exception as exc:
        raise TPFError(f"{name}: unreadable FITS header ({type(exc).__name__}: {exc})") from None
    for key in ("KEPLERID", "TICID"):
        value = header.get(key)
        if value not in (None, ""):
            try:
                return int(value)
            except (TypeError, ValueError):
                raise TPFError(f"{name}: header {key}={value!r} is not an integer id") from None
    raise TPFError(f"{name}: header has no target id (KEPLERID / TICID)")
