"""Where TPFs come from: a local folder, or a download from MAST (lightkurve search)."""

from __future__ import annotations

import os
from pathlib import Path

from pixel_cnn.io.errors import TPFError
from pixel_cnn.io.fits import TPF_SUFFIXES, _lightkurve


def find_tpfs(tpf_dir: str | os.PathLike) -> list[Path]:
    """FITS files under ``tpf_dir`` (recursive: lightkurve's download cache nests them), sorted.

    Raises
    ------
    TPFError
        ``tpf_dir`` is not a folder.
    """
    root = Path(tpf_dir)
    if not root.is_dir():
        raise TPFError(f"tpf_dir {root} is not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(TPF_SUFFIXES))


def download_tpfs(target_ids: list[int], layout: str, cache_dir: str | os.PathLike,
                  cadence: str = "long") -> dict[int, str]:
    """Fetch TPFs from MAST with lightkurve's search into ``cache_dir`` (needs network).

    ``layout="koi"``: Kepler TPFs of ``KIC <id>`` (``cadence`` long/short);
    ``"toi"``: TESS SPOC 2-min TPFs of ``TIC <id>``. Files already in the cache
    are not fetched again (lightkurve's ``download_all(download_dir=...)``).
    Returns target id -> problem for each target that could not be fetched.
    """
    lk = _lightkurve()
    problems = {}
    for target in target_ids:
        try:
            if layout == "koi":
                found = lk.search_targetpixelfile(f"KIC {target}", mission="Kepler", cadence=cadence)
            else:
                found = lk.search_targetpixelfile(f"TIC {target}", mission="TESS", author="SPOC", exptime=120)
            if len(found) == 0:
                problems[target] = "no TPF found at MAST"
                continue
            found.download_all(download_dir=str(cache_dir))
        except Exception as exc:  # network and archive errors: reported per target
            problems[target] = f"download failed ({type(exc).__name__}: {exc})"
    return problems
