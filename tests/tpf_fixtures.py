"""Tiny synthetic Target Pixel Files in the real Kepler/TESS TPF layout, built by the tests.

lightkurve's ``TargetPixelFileFactory`` writes the MAST header templates of a
real Kepler TPF (primary, ``TARGETTABLES`` and ``APERTURE`` extensions); the
star, noise and transit are ours, so the answer is known.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CADENCE_D = 0.0204  # Kepler long cadence, 29.4 min
NOISE_REL = 1e-3    # per-cadence fractional noise of every pixel


@dataclass
class Injection:
    """A box transit of ``depth`` (fraction of that pixel's flux) at pixel ``(row, col)``."""

    pixel: tuple[int, int]
    depth: float
    period_d: float
    epoch: float      # in the file's time system (BKJD for Kepler, BTJD for TESS)
    duration_h: float


def star_image(shape: tuple[int, int], centre: tuple[int, int]) -> np.ndarray:
    """A Gaussian star (sigma 1 pixel, peak 40000 e-/s) on a 500 e-/s floor, ``(H, W)``."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    return 500.0 + 4e4 * np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / 2.0)


def in_transit(time: np.ndarray, inj: Injection) -> np.ndarray:
    phase = np.mod(time - inj.epoch, inj.period_d) / inj.period_d
    return np.minimum(phase, 1 - phase) * inj.period_d * 24 < inj.duration_h / 2


def write_tpf(path: Path, target_id: int, *, inj: Injection | None, t_start: float, n: int = 400,
              shape: tuple[int, int] = (7, 8), star: tuple[int, int] = (3, 4), seed: int = 0,
              mission: str = "Kepler", quarter: int = 5, column: int = 100, row: int = 200,
              nan_time: np.ndarray | None = None, quality: np.ndarray | None = None,
              nan_cadences: tuple[int, ...] = (), nan_column: int | None = None) -> Path:
    """Write one TPF FITS file; returns ``path``.

    Flux ``(n, H, W)`` e-/s = star image x (1 + N(0, 1e-3)); in transit the
    injected pixel is multiplied by ``1 - depth``. ``nan_time`` (bool ``(n,)``)
    gives cadences with TIME = NaN, ``quality`` their QUALITY flags,
    ``nan_cadences`` cadences whose flux is NaN everywhere, ``nan_column`` a
    pixel column NaN throughout.
    """
    from lightkurve.targetpixelfile import TargetPixelFileFactory

    rng = np.random.default_rng(seed)
    time = t_start + np.arange(n) * CADENCE_D
    flux = star_image(shape, star)[None] * (1 + rng.normal(0, NOISE_REL, (n,) + shape))
    if inj is not None:
        flux[in_transit(time, inj), inj.pixel[0], inj.pixel[1]] *= 1 - inj.depth
    flux[list(nan_cadences)] = np.nan
    if nan_column is not None:
        flux[:, :, nan_column] = np.nan
    factory = TargetPixelFileFactory(n, shape[0], shape[1], target_id=target_id)
    for i in range(n):
        t = np.nan if nan_time is not None and nan_time[i] else time[i]
        factory.add_cadence(i, flux=flux[i].astype(np.float32), flux_err=np.ones(shape, np.float32),
                            header={"TSTART": t - CADENCE_D / 2, "TSTOP": t + CADENCE_D / 2,
                                    "CADENCEN": i, "QUALITY": 0 if quality is None else int(quality[i])})
    if mission == "TESS":
        hdu0 = {"TELESCOP": "TESS", "MISSION": "TESS", "TICID": target_id, "SECTOR": quarter,
                "CAMERA": 1, "CCD": 2, "OBJECT": f"TIC {target_id}"}
        bjdref = 2457000
    else:
        hdu0 = {"TELESCOP": "Kepler", "MISSION": mission, "KEPLERID": target_id, "CHANNEL": 5,
                ("QUARTER" if mission == "Kepler" else "CAMPAIGN"): quarter}
        bjdref = 2454833
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # factory: "identical TIME values" for NaN times
        tpf = factory.get_tpf(hdu0_keywords=hdu0, ext_info={
            "1CRV5P": column, "2CRV5P": row, "BJDREFI": bjdref, "BJDREFF": 0.0})
        tpf.to_fits(str(path), overwrite=True)
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut a file to ``fraction`` of its bytes (an interrupted download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def edit_header(path: Path, hdu: int, drop: tuple[str, ...] = (), **values) -> Path:
    """Drop header keywords of extension ``hdu`` and set others (``values``; a key like ``KEY_1`` stands
    for ``KEY-1``, and ``_1CRV5P`` for ``1CRV5P``): a file written by a pipeline that left them out."""
    from astropy.io import fits

    with fits.open(path, mode="update") as hdul:
        header = hdul[hdu].header
        for key in drop:
            del header[key]
        for key, value in values.items():
            header[key.lstrip("_")] = value
    return path


def edit_data(path: Path, *, time=None, quality=None, aperture=None) -> Path:
    """Overwrite the TIME / QUALITY columns (``(n,)``) or the APERTURE image (``(H, W)``) of a TPF."""
    from astropy.io import fits

    with fits.open(path, mode="update") as hdul:
        if time is not None:
            hdul[1].data["TIME"][:] = time
        if quality is not None:
            hdul[1].data["QUALITY"][:] = quality
        if aperture is not None:
            hdul[2].data[:] = aperture
    return path


def corrupt(path: Path, offset: int, n: int = 2880) -> Path:
    """Overwrite ``n`` bytes from ``offset`` with a byte pattern that is no FITS card (a damaged copy)."""
    data = bytearray(path.read_bytes())
    data[offset: offset + n] = (b"\x00\xff\x13\x7f" * (n // 4 + 1))[:n]
    path.write_bytes(bytes(data))
    return path


def hdu_offset(path: Path, hdu: int) -> int:
    """Byte offset of the header of extension ``hdu`` in a FITS file."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        return hdul.fileinfo(hdu)["hdrLoc"]
