"""The labelled targets in memory: validated stacks, their manifest, and what was left out.

Pure data (numpy, pandas): reading and writing a dataset is :mod:`pixel_cnn.io.dataset`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Dataset:
    """Validated stacks with labels.

    Attributes
    ----------
    stacks : dict[int, numpy.ndarray]
        kepid -> float32 ``(32, H, W)`` stack (NaN already replaced by 0).
    manifest : pandas.DataFrame
        One row per usable target, sorted by kepid: ``kepid, label, disposition,
        source_file, original_shape``.
    skipped : pandas.DataFrame
        One row per file or target left out: ``source_file, kepid, reason``.
    source : str
        The data folder the stacks were read from (absolute path; "" when built otherwise).
    """

    stacks: dict[int, np.ndarray]
    manifest: pd.DataFrame
    skipped: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["source_file", "kepid", "reason"])
    )
    source: str = ""

    @property
    def kepids(self) -> np.ndarray:
        """int64 ``(N,)`` in manifest order."""
        return self.manifest["kepid"].to_numpy(np.int64)

    @property
    def labels(self) -> np.ndarray:
        """int64 ``(N,)`` in manifest order (1 = CONFIRMED, 0 = FALSE POSITIVE)."""
        return self.manifest["label"].to_numpy(np.int64)

    def stack_list(self) -> list[np.ndarray]:
        """Stacks in manifest order."""
        return [self.stacks[k] for k in self.kepids]

    @property
    def digest(self) -> str:
        """16 hex digits of SHA-256 over kepids, labels and stack bytes (order-fixed)."""
        h = hashlib.sha256()
        for kepid, label in zip(self.kepids, self.labels):
            stack = self.stacks[int(kepid)]
            h.update(f"{kepid}:{label}:{stack.shape}".encode())
            h.update(np.ascontiguousarray(stack, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        """Targets per class and skipped files."""
        return {
            "n_targets": int(len(self.manifest)),
            "n_confirmed": int((self.labels == 1).sum()),
            "n_false_positive": int((self.labels == 0).sum()),
            "n_skipped": int(len(self.skipped)),
        }
