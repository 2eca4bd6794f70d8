"""The KOI table with its Data Validation diagnostics (``koi_dv_diagnostics.csv``, issue 20)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pixel_cnn.io.dataset import DataError, load_koi_table

#: File name of the DV diagnostics beside ``koi_cumulative.csv``.
DV_FILE = "koi_dv_diagnostics.csv"


def load_koi_with_dv(root: str | os.PathLike, require_dv: bool = True) -> pd.DataFrame:
    """``koi_cumulative.csv`` of a data folder joined (left, on ``kepoi_name``) with ``koi_dv_diagnostics.csv``.

    ``root``: the data folder, or the KOI table's path (:func:`pixel_cnn.io.dataset.koi_table_path`,
    the one way jobs find it); the DV file is the one beside the KOI table. ``require_dv=False``: a KOI
    table without a DV file beside it is returned as it is (its DV inputs are then missing, NaN).

    Returns one row per KOI of the KOI table, in its order, with the DV columns added
    (``koi_count`` and the DV file's ``kepid`` are not added: the star's KOI count is a context
    feature computed from the catalogue). A KOI absent from the DV file has NaN DV columns.

    Raises
    ------
    DataError
        Either file unreadable, ``kepoi_name`` missing from the DV file, a KOI listed twice
        in it, or a DV column that is a disposition, score or flag (answers never join).
    """
    root = Path(root)
    koi_path = root if root.is_file() else root / "koi_cumulative.csv"
    root = koi_path.parent
    koi = load_koi_table(koi_path)
    path = root / DV_FILE
    if not require_dv and not path.exists():
        return koi
    try:
        dv = pd.read_csv(path, comment="#", low_memory=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the DV diagnostics ({exc})") from None
    if "kepoi_name" not in dv:
        raise DataError(f"{path}: lacks column kepoi_name (the join key)")
    dup = dv["kepoi_name"][dv["kepoi_name"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: KOI(s) listed twice, e.g. {dup.head(3).tolist()}")
    answers = [c for c in dv.columns if c.startswith(("koi_disposition", "koi_pdisposition", "koi_score",
                                                       "koi_fpflag_", "kepler_name"))]
    if answers:
        raise DataError(f"{path}: carries answer column(s) {answers}")
    extra = dv.drop(columns=[c for c in ("kepid", "koi_count") if c in dv])
    extra = extra[[c for c in extra.columns if c == "kepoi_name" or c not in koi.columns]]
    return koi.merge(extra, on="kepoi_name", how="left", validate="one_to_one")


#: Folder name and file pattern of ExoMiner's DR25 TCE folds (shared data).
DR25_DIR = "kepler-dr25-tce"
DR25_PATTERN = "dr25_tce_exominer_fold{k}.csv"


def resolve_dr25_dir(dr25_dir: str | os.PathLike | None = None) -> Path:
    """The DR25 folder: ``dr25_dir``, else ``kepler-dr25-tce`` beside the KOI data folder
    (:func:`pixel_cnn.io.dataset.resolve_data_dir`'s parent).

    Raises
    ------
    DataError
        The folder does not hold ``dr25_tce_exominer_fold0.csv``.
    """
    from pixel_cnn.io.dataset import SHARED_DATA_DIR

    path = Path(dr25_dir) if dr25_dir else Path(SHARED_DATA_DIR).parent / DR25_DIR
    path = path.expanduser().resolve()
    if not (path / DR25_PATTERN.format(k=0)).is_file():
        raise DataError(f"{path}: no {DR25_PATTERN.format(k=0)} (ExoMiner's DR25 TCE folds expected there)")
    return path


def load_dr25(root: str | os.PathLike, n_folds: int = 10) -> pd.DataFrame:
    """ExoMiner's ten DR25 TCE folds concatenated, with a ``fold`` column (int, 0-9), index reset.

    Raises
    ------
    DataError
        A fold file missing or unreadable, a fold without ``label``/``target_id``/``tceid``, or a
        TCE (``tceid``) in two folds.
    """
    parts = []
    for k in range(n_folds):
        path = Path(root) / DR25_PATTERN.format(k=k)
        try:
            part = pd.read_csv(path, low_memory=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the DR25 fold ({exc})") from None
        missing = [c for c in ("label", "target_id", "tceid") if c not in part]
        if missing:
            raise DataError(f"{path}: lacks column(s) {missing}")
        parts.append(part.assign(fold=k))
    tces = pd.concat(parts, ignore_index=True)
    dup = tces["tceid"][tces["tceid"].duplicated()]
    if len(dup):
        raise DataError(f"{root}: TCE(s) in two folds, e.g. {dup.head(3).tolist()}")
    return tces
