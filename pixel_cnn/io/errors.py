"""The error of the TPF side of prep (:mod:`pixel_cnn.io.ephemeris`, :mod:`pixel_cnn.io.fits`,
:mod:`pixel_cnn.io.sources`, :mod:`pixel_cnn.io.target`, :mod:`pixel_cnn.io.tpf`)."""

from __future__ import annotations


class TPFError(ValueError):
    """A TPF or a target that cannot give a stack; the message says why."""
