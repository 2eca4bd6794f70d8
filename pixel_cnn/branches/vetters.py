"""Named vetters: which branches each one has. The one place that says what a vetter is made of.

A vetter is a list of branches plus, with two or more, a logistic combiner of their logits
(:class:`pixel_cnn.vetter.combiner.Combiner`). Names are what ``cv -P preset=...`` takes.

========  =====================================  ===========================================
vetter    branches                               what it is
========  =====================================  ===========================================
seed      pixel (preset ``seed``)                the seed study's CNN
phase     pixel (preset ``phase``)               phase-aware CNN
phase2    pixel (preset ``phase2``)              ``phase`` + 14 vetting statistics
tabular   tabular                                the KOI-table branch alone
fusion    pixel (preset ``fusion`` = phase2),    both, joined by the combiner (``make cv``)
          tabular
========  =====================================  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass

from pixel_cnn.branches.base import Branch
from pixel_cnn.branches.pixel import PixelBranch
from pixel_cnn.vetter.networks import Preset, get_preset


@dataclass(frozen=True)
class VetterSpec:
    """A vetter's make-up: the pixel branch's preset (None: no pixel branch) and whether it has a
    tabular branch (trained on the KOI table)."""

    name: str
    pixel: str | None = None
    tabular: bool = False

    @property
    def branch_names(self) -> tuple[str, ...]:
        return tuple(n for n, on in (("pixel", self.pixel is not None), ("tabular", self.tabular)) if on)

    @property
    def needs_koi_table(self) -> bool:
        return self.tabular

    @property
    def has_combiner(self) -> bool:
        return len(self.branch_names) > 1

    def pixel_preset(self, **overrides) -> Preset | None:
        """The pixel branch's preset with overrides (None = keep), or None for a vetter without one.

        Raises
        ------
        ValueError
            Overrides given to a vetter without a pixel branch, or a bad override.
        """
        if self.pixel is None:
            if any(v is not None for v in overrides.values()):
                raise ValueError(f"vetter {self.name!r} has no pixel network: network overrides do not apply")
            return None
        return get_preset(self.pixel, **overrides)

    def branches(self, preset: Preset | None = None, koi=None, inputs=None, extra_train=None) -> list[Branch]:
        """The branches, in combiner order (pixel, then tabular).

        ``preset``: the pixel branch's (default :meth:`pixel_preset`); ``koi``: the KOI table
        (required by a tabular branch); ``inputs``/``extra_train``: see
        :class:`~pixel_cnn.branches.pixel.PixelBranch`.

        Raises
        ------
        ValueError
            A tabular branch without ``koi``.
        """
        out: list[Branch] = []
        if self.pixel is not None:
            out.append(PixelBranch(preset or self.pixel_preset(), inputs=inputs, extra_train=extra_train))
        if self.tabular:
            if koi is None:
                raise ValueError(f"vetter {self.name!r} needs the KOI table (its tabular branch trains on it)")
            from pixel_cnn.branches.tabular import TabularBranch

            out.append(koi if isinstance(koi, TabularBranch) else TabularBranch(koi))
        return out


VETTERS: dict[str, VetterSpec] = {v.name: v for v in (
    VetterSpec("seed", pixel="seed"),
    VetterSpec("phase", pixel="phase"),
    VetterSpec("phase2", pixel="phase2"),
    VetterSpec("tabular", tabular=True),
    VetterSpec("fusion", pixel="fusion", tabular=True),
)}
#: What ``make cv`` (the ``cv`` entry point) runs by default: the best vetter on the benchmark.
CV_DEFAULT = "fusion"


def get_vetter(name: str) -> VetterSpec:
    """The vetter named ``name``.

    Raises
    ------
    ValueError
        Unknown name; the message lists the known ones.
    """
    if name not in VETTERS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(VETTERS)}")
    return VETTERS[name]
