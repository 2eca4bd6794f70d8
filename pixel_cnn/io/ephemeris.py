"""Ephemeris tables (KOI / TOI layouts) and the time system their epoch column declares.

Whether the declared system holds is checked per target against its TPFs
(:func:`pixel_cnn.stacks.phasefold.resolve_epoch`, in
:func:`pixel_cnn.io.target.combine_quarters`); ``docs/tpf.md`` describes every choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pixel_cnn.stacks.phasefold import BKJD_REF
from pixel_cnn.io.errors import TPFError

#: Column names of an ephemeris table: KOI cumulative table and TESS TOI table.
KOI_COLUMNS = {"id": "kepid", "period": "koi_period", "epoch": "koi_time0bk",
               "duration": "koi_duration", "name": "kepoi_name"}
TOI_COLUMNS = {"id": "tid", "period": "pl_orbper", "epoch": "pl_tranmid",
               "duration": "pl_trandurh", "name": "toi"}
#: The time system each layout's epoch column is documented in (NASA Exoplanet Archive).
EPOCH_SYSTEMS = {"koi": "BKJD", "toi": "BJD"}


@dataclass(frozen=True)
class Ephemeris:
    """One transit ephemeris: period (days), epoch, duration (hours).

    ``epoch_bjd`` is the epoch in BJD as its column declares it
    (``epoch_given + ref(epoch_system)``); ``epoch_given`` is the number as
    written and ``epoch_system`` its column's time system ("BKJD" for
    ``koi_time0bk``, "BJD" for ``pl_tranmid``). Whether that declaration holds
    is checked per target against its TPFs' time range
    (:func:`pixel_cnn.stacks.phasefold.resolve_epoch`, in :func:`pixel_cnn.io.target.combine_quarters`).
    Without ``epoch_given`` the epoch is ``epoch_bjd`` declared in BJD.
    """

    target_id: int
    name: str
    period_d: float
    epoch_bjd: float
    duration_h: float
    n_on_star: int = 1
    epoch_given: float | None = None
    epoch_system: str = "BJD"

    def given(self) -> tuple[float, str]:
        """``(epoch as written, its declared time system)``."""
        if self.epoch_given is None:
            return self.epoch_bjd, "BJD"
        return self.epoch_given, self.epoch_system

    def epoch_in(self, bjd_ref: float) -> float:
        """Epoch in a file's time system (``BJD - bjd_ref``: BKJD for 2454833, BTJD for 2457000)."""
        return self.epoch_bjd - bjd_ref


def load_ephemeris(path: str | os.PathLike) -> tuple[dict[int, Ephemeris], dict[int, str], str]:
    """Read an ephemeris CSV (``#`` comment lines skipped); one ephemeris per target.

    Two layouts, told apart by their columns:

    * KOI (the NASA Exoplanet Archive KOI cumulative table works as is):
      ``kepid``, ``koi_period`` [d], ``koi_time0bk`` [BKJD = BJD - 2454833],
      ``koi_duration`` [h], optional ``kepoi_name``. K2 targets: their EPIC id
      in ``kepid`` (a K2 TPF stores it in ``KEPLERID``), epoch in BKJD.
    * TOI (TESS): ``tid`` (TIC id), ``pl_orbper`` [d], ``pl_tranmid`` [BJD],
      ``pl_trandurh`` [h], optional ``toi``.

    Several KOIs/TOIs on one star: the stack is folded on the one with the
    lowest KOI/TOI number among those with a complete ephemeris (``.01``, the
    first signal the pipeline found, usually the strongest); without a name
    column, the first complete row. Filter the CSV to fold on another one.

    Returns
    -------
    (ephemerides, problems, layout)
        ``ephemerides``: target id -> :class:`Ephemeris` (epoch as given, with
        its column's time system; whether it holds is checked per target
        against its TPFs, :func:`pixel_cnn.io.target.combine_quarters`);
        ``problems``: target id -> why it has no usable row (NaN or
        non-positive period/duration, NaN epoch); ``layout``: "koi" or "toi".

    Raises
    ------
    TPFError
        Unreadable file, or neither layout's columns (the missing ones named).
    """
    try:
        table = pd.read_csv(path, comment="#", low_memory=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TPFError(f"{path}: cannot read the ephemeris CSV ({exc})") from None
    layouts = {"koi": KOI_COLUMNS, "toi": TOI_COLUMNS}
    layout = next((k for k, c in layouts.items()
                   if all(c[f] in table.columns for f in ("id", "period", "epoch", "duration"))), None)
    if layout is None:
        need = {k: [c[f] for f in ("id", "period", "epoch", "duration") if c[f] not in table.columns]
                for k, c in layouts.items()}
        raise TPFError(f"{path}: not an ephemeris table; KOI layout lacks {need['koi']}, "
                       f"TOI layout lacks {need['toi']}")
    cols = layouts[layout]
    ids = pd.to_numeric(table[cols["id"]], errors="coerce")
    if ids.isna().any():
        raise TPFError(f"{path}: non-numeric {cols['id']} in {int(ids.isna().sum())} row(s)")
    num = {f: pd.to_numeric(table[cols[f]], errors="coerce") for f in ("period", "epoch", "duration")}
    declared = EPOCH_SYSTEMS[layout]
    epoch_bjd = num["epoch"] + (BKJD_REF if declared == "BKJD" else 0.0)
    names = table[cols["name"]].astype(str) if cols["name"] in table.columns else pd.Series(
        [f"row{i}" for i in range(len(table))])
    frame = pd.DataFrame({"id": ids.astype(np.int64), "name": names, "period": num["period"],
                          "epoch": epoch_bjd, "given": num["epoch"], "duration": num["duration"],
                          "row": np.arange(len(table))})
    frame["complete"] = (np.isfinite(frame["period"]) & (frame["period"] > 0) & np.isfinite(frame["epoch"])
                         & np.isfinite(frame["duration"]) & (frame["duration"] > 0))
    if cols["name"] in table.columns:
        # "K00752.01" sorts as text; TOI numbers (101.01) as numbers.
        key = pd.to_numeric(frame["name"], errors="coerce")
        frame["order"] = key if key.notna().all() else frame["name"]
    else:
        frame["order"] = frame["row"]
    ephemerides, problems = {}, {}
    for target, group in frame.groupby("id", sort=True):
        good = group[group["complete"]].sort_values(["order", "row"])
        if good.empty:
            bad = group.iloc[0]
            problems[int(target)] = (
                f"ephemeris row(s) for {cols['id']} {target} incomplete: {cols['period']}={bad['period']}, "
                f"{cols['epoch']}={table[cols['epoch']].iloc[bad['row']]}, {cols['duration']}={bad['duration']} "
                "(need finite values, period and duration > 0)")
            continue
        row = good.iloc[0]
        ephemerides[int(target)] = Ephemeris(int(target), str(row["name"]), float(row["period"]),
                                             float(row["epoch"]), float(row["duration"]), len(group),
                                             float(row["given"]), declared)
    return ephemerides, problems, layout
