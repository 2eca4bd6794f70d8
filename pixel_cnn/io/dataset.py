"""Load and validate the Kepler pixel-difference dataset; join labels.

Layout of a data folder (``kepler-pixdiff/``)::

    stacks/pixdiff_<kepid>.npy   (32, H, W) float stacks, one per Kepler target
    koi_cumulative.csv           NASA Exoplanet Archive KOI cumulative table ('#' header)
    seed_labels.csv              kepid,label for the 97 benchmark targets

Every file is read with ``allow_pickle=False``: nothing in a data file is ever
executed. A bad file is reported with its name and reason and the good files
around it still go through.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.vetter.stack import StackError, check_dtype, check_shape, validate_stack

DATA_ENV_VAR = "PIXEL_CNN_DATA"
#: Fallback data folder, the shared dataset beside the checkout: ``<checkout>/../shared/data/kepler-pixdiff``.
SHARED_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "kepler-pixdiff"
STACK_PATTERN = re.compile(r"^pixdiff_(\d+)\.npy$")
#: Largest KIC id; ids above it are not Kepler targets (the 20 placeholder files).
MAX_KEPID = 13_000_000
KOI_REQUIRED_COLUMNS = ("kepid", "kepoi_name", "koi_disposition")
#: The KOI cumulative table's file name in a data folder (beside ``stacks/``).
KOI_TABLE = "koi_cumulative.csv"
CONFIRMED, FALSE_POSITIVE, CANDIDATE = "CONFIRMED", "FALSE POSITIVE", "CANDIDATE"
LABEL_SOURCES = ("seed", "koi")


class DataError(ValueError):
    """A data file or folder that cannot be used; the message names it and the problem."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The dataset folder: ``data_dir``, else ``$PIXEL_CNN_DATA``, else the shared folder.

    Raises
    ------
    DataError
        The folder or one of its expected parts (``stacks/``, ``koi_cumulative.csv``)
        is missing; the message says what is expected where.
    """
    if data_dir:
        path, origin = Path(data_dir), "data_dir"
    elif os.environ.get(DATA_ENV_VAR):
        path, origin = Path(os.environ[DATA_ENV_VAR]), f"${DATA_ENV_VAR}"
    else:
        path, origin = SHARED_DATA_DIR, "the default shared folder"
    path = path.expanduser().resolve()
    expected = "stacks/pixdiff_<kepid>.npy, koi_cumulative.csv and seed_labels.csv"
    if not path.is_dir():
        raise DataError(
            f"dataset folder {path} (from {origin}) does not exist; expected a folder with "
            f"{expected}. Pass data_dir=... or set {DATA_ENV_VAR}."
        )
    for part in ("stacks", KOI_TABLE):
        if not (path / part).exists():
            raise DataError(f"{path / part} is missing; a dataset folder holds {expected}")
    return path


def parse_kepid(filename: str) -> int:
    """KIC id from a stack file name ``pixdiff_<kepid>.npy``.

    Raises
    ------
    DataError
        The name does not match the pattern.
    """
    match = STACK_PATTERN.match(Path(filename).name)
    if not match:
        raise DataError(f"{filename}: file name has no kepid (expected pixdiff_<kepid>.npy)")
    return int(match.group(1))


#: First bytes of a Python pickle (protocol 2+): such a file is refused unread.
PICKLE_OPCODE = b"\x80"


def _read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` header, without reading the data.

    Uses numpy's own header reader (``numpy.lib.format``), so a 500 x 500
    stack or a huge file is refused before its bytes are loaded.

    Raises
    ------
    DataError
        Not an ``.npy`` file (a pickle is named as such), a malformed header,
        or fewer data bytes than the header declares (a truncated file).
    """
    name = path.name
    fmt = np.lib.format
    with open(path, "rb") as f:
        head = f.read(len(fmt.MAGIC_PREFIX))
        if not head.startswith(fmt.MAGIC_PREFIX):
            if head[:1] == PICKLE_OPCODE:
                raise DataError(f"{name}: a Python pickle, not an .npy array; refused (not loaded)")
            if head[:2] == b"PK":
                raise DataError(f"{name}: an .npz archive, expected a single .npy array")
            kind = "empty file" if not head else "no .npy magic bytes"
            raise DataError(f"{name}: not an .npy file ({kind})")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            else:
                shape, _, dtype = fmt.read_array_header_2_0(f)
        except (ValueError, EOFError, SyntaxError, TypeError) as exc:
            raise DataError(f"{name}: corrupt .npy header ({exc})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise DataError(f"{name}: holds pickled Python objects (object array); refused (not loaded)")
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = path.stat().st_size - offset
    if have < declared:
        raise DataError(
            f"{name}: truncated .npy: header declares shape {tuple(shape)} {dtype} "
            f"({declared} data bytes), the file holds {have}"
        )
    return tuple(shape), dtype


def load_stack(path: str | os.PathLike) -> np.ndarray:
    """Read one ``.npy`` stack without unpickling and validate it.

    The header is checked first (:func:`_read_npy_header`): dtype, shape and
    size are refused before any data is read. Files must hold floating-point
    numbers: stacks are fractional flux changes (float32 from the pipeline);
    an int, bool, complex or string file is not a stack.

    Returns float32 ``(32, H, W)`` (see :func:`~pixel_cnn.vetter.stack.validate_stack`).

    Raises
    ------
    DataError
        Not an ``.npy`` file, a pickle, truncated, pickled/object array, a
        non-float dtype, or a :class:`StackError` from validation; the message
        starts with the file name.
    """
    path = Path(path)
    name = path.name
    try:
        shape, dtype = _read_npy_header(path)
        check_dtype(dtype)
        if dtype.kind != "f":
            raise StackError(
                f"dtype {dtype} is not floating point; a stack holds fractional flux changes (float32)"
            )
        check_shape(shape)
        raw = np.load(path, allow_pickle=False)
        return validate_stack(raw)
    except StackError as exc:
        raise DataError(f"{name}: {exc}") from None
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        if "pickle" in str(exc).lower():
            raise DataError(f"{name}: holds pickled Python objects; refused (not loaded)") from None
        raise DataError(f"{name}: not a readable .npy file ({exc})") from None


def koi_table_path(path: str | os.PathLike | None = None, info: dict | None = None,
                   data_dir: str | os.PathLike | None = None) -> Path:
    """Where the KOI table is: the one way every job and command finds it.

    ``path`` when given; else the table beside the stacks a prepared dataset was made from
    (``info["source"]``, the ``stacks/`` folder prep read, from ``dataset.json``); else the
    data folder's (:func:`resolve_data_dir` of ``data_dir``), :data:`KOI_TABLE`.

    Raises
    ------
    DataError
        The table named or found is not a file.
    """
    if path is not None and str(path):
        candidate = Path(path)
    else:
        source = (info or {}).get("source") or ""
        beside = Path(source).parent / KOI_TABLE if source else None
        candidate = beside if beside is not None and beside.is_file() else resolve_data_dir(data_dir) / KOI_TABLE
    if not candidate.is_file():
        raise DataError(f"{candidate}: no KOI table there")
    return candidate


def load_koi_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read the NASA Exoplanet Archive KOI cumulative table (``#`` comment lines skipped).

    Returns one row per KOI with at least ``kepid`` (int), ``kepoi_name`` and
    ``koi_disposition`` (CONFIRMED / CANDIDATE / FALSE POSITIVE).

    Raises
    ------
    DataError
        Unreadable file, or required columns missing (named in the message).
    """
    try:
        koi = pd.read_csv(path, comment="#", low_memory=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the KOI table ({exc})") from None
    missing = [c for c in KOI_REQUIRED_COLUMNS if c not in koi.columns]
    if missing:
        raise DataError(f"{path}: KOI table lacks column(s) {missing}")
    kepid = pd.to_numeric(koi["kepid"], errors="coerce")
    if kepid.isna().any():
        bad = koi.loc[kepid.isna(), "kepid"].head(3).tolist()
        raise DataError(f"{path}: non-numeric kepid values, e.g. {bad}")
    return koi.assign(kepid=kepid.astype(np.int64))


def load_seed_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``seed_labels.csv`` (``kepid,label``; 1 = CONFIRMED, 0 = FALSE POSITIVE).

    Raises
    ------
    DataError
        Missing file or columns, labels other than 0/1, or a kepid listed twice.
    """
    try:
        labels = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read the labels file ({exc})") from None
    missing = [c for c in ("kepid", "label") if c not in labels.columns]
    if missing:
        raise DataError(f"{path}: labels file lacks column(s) {missing}")
    label = pd.to_numeric(labels["label"], errors="coerce")
    bad = labels.loc[~label.isin([0, 1]), "label"]
    if len(bad):
        raise DataError(
            f"{path}: label must be 0 or 1; found {sorted(map(str, bad.unique()))[:5]} "
            f"in {len(bad)} row(s)"
        )
    kepid = pd.to_numeric(labels["kepid"], errors="coerce")
    if kepid.isna().any():
        raise DataError(f"{path}: non-numeric kepid values")
    dup = kepid[kepid.duplicated()]
    if len(dup):
        raise DataError(f"{path}: kepid listed more than once: {sorted(dup.astype(int))[:5]}")
    return pd.DataFrame({"kepid": kepid.astype(np.int64), "label": label.astype(np.int64)})


def koi_star_labels(koi: pd.DataFrame) -> pd.DataFrame:
    """One label per star (kepid) from the dispositions of all its KOIs.

    The rule, for stars that host several KOIs (a stack is folded on one KOI's
    ephemeris and the dataset does not record which): CANDIDATE KOIs are left
    out; a star whose remaining KOIs are all CONFIRMED is 1, all FALSE POSITIVE
    is 0. A star with both CONFIRMED and FALSE POSITIVE KOIs gets no label
    (``label`` NA, ``reason`` says why), nor does a star with only CANDIDATEs.

    Returns
    -------
    pandas.DataFrame
        Columns ``kepid`` (int64), ``label`` (Int64, NA where unlabelled),
        ``disposition`` (the star's KOI dispositions, ``;``-joined, sorted),
        ``reason`` (empty where labelled).
    """
    rows = []
    for kepid, group in koi.groupby("kepid", sort=True):
        dispositions = set(group["koi_disposition"].astype(str))
        decided = dispositions - {CANDIDATE}
        label, reason = pd.NA, ""
        if decided == {CONFIRMED}:
            label = 1
        elif decided == {FALSE_POSITIVE}:
            label = 0
        elif not decided:
            reason = "only CANDIDATE KOIs (no disposition yet)"
        else:
            reason = f"mixed KOI dispositions {sorted(decided)}; the stack's ephemeris is not recorded"
        rows.append((kepid, label, ";".join(sorted(dispositions)), reason))
    out = pd.DataFrame(rows, columns=["kepid", "label", "disposition", "reason"])
    return out.astype({"kepid": np.int64, "label": "Int64"})


def prepare_dataset(data_dir: str | os.PathLike | None = None, labels: str = "seed") -> Dataset:
    """Read every stack of a data folder, validate it and join its label.

    Parameters
    ----------
    data_dir : path or None
        Dataset folder (see :func:`resolve_data_dir`).
    labels : {"seed", "koi"}
        ``seed``: the benchmark labels of ``seed_labels.csv``; a stack whose
        kepid is not listed is skipped. ``koi``: labels from the KOI table by
        :func:`koi_star_labels` (CANDIDATE-only and mixed stars skipped).

    Returns
    -------
    Dataset
        Every file is accounted for: it is either in ``manifest`` or in
        ``skipped`` with its reason (placeholders, bad arrays, duplicate or
        unknown kepids, no label).

    Raises
    ------
    DataError
        Folder, KOI table or labels file unusable (not for single bad stacks).
    ValueError
        Unknown ``labels`` value.
    """
    if labels not in LABEL_SOURCES:
        raise ValueError(f"labels={labels!r}; expected one of {LABEL_SOURCES}")
    root = resolve_data_dir(data_dir)
    koi = load_koi_table(root / KOI_TABLE)
    star = koi_star_labels(koi).set_index("kepid")
    if labels == "seed":
        seed_path = root / "seed_labels.csv"
        if not seed_path.exists():
            raise DataError(f"{seed_path} is missing (needed for labels=seed; or use labels=koi)")
        label_of = load_seed_labels(seed_path).set_index("kepid")["label"].to_dict()
    else:
        label_of = star["label"].dropna().astype(int).to_dict()

    files = sorted((root / "stacks").iterdir())
    seen: dict[int, list[str]] = {}
    skipped, parsed = [], []
    for path in files:
        if path.is_dir() or path.name.startswith("."):
            continue
        try:
            kepid = parse_kepid(path.name)
        except DataError as exc:
            skipped.append((path.name, pd.NA, str(exc).split(": ", 1)[1]))
            continue
        seen.setdefault(kepid, []).append(path.name)
        parsed.append((kepid, path))

    stacks, rows = {}, []
    for kepid, path in parsed:
        # Every problem of a file is reported, not only the first.
        problems = []
        if len(seen[kepid]) > 1:
            others = [n for n in seen[kepid] if n != path.name]
            problems.append(f"duplicate kepid {kepid}, also in {others}")
        stack = None
        try:
            stack = load_stack(path)
        except DataError as exc:
            problems.append(str(exc).split(": ", 1)[1])
        if kepid > MAX_KEPID:
            problems.append(f"kepid {kepid} is outside the KIC id range")
        elif kepid not in star.index:
            problems.append(f"kepid {kepid} is not in the KOI table")
        if problems:
            if stack is None and kepid not in star.index:
                problems.append("placeholder, not an observation")
            skipped.append((path.name, kepid, "; ".join(problems)))
            continue
        if kepid not in label_of:
            why = (
                "not among the benchmark targets of seed_labels.csv"
                if labels == "seed"
                else star.at[kepid, "reason"]
            )
            skipped.append((path.name, kepid, f"no label: {why}"))
            continue
        stacks[kepid] = stack
        rows.append(
            (kepid, int(label_of[kepid]), star.at[kepid, "disposition"], path.name,
             "x".join(map(str, stack.shape)))
        )
    manifest = pd.DataFrame(
        rows, columns=["kepid", "label", "disposition", "source_file", "original_shape"]
    ).sort_values("kepid", ignore_index=True)
    skipped_df = pd.DataFrame(skipped, columns=["source_file", "kepid", "reason"])
    return Dataset(stacks=stacks, manifest=manifest, skipped=skipped_df.astype({"kepid": "Int64"}),
                   source=str(root))


STACKS_FILE, MANIFEST_FILE, SKIPPED_FILE, INFO_FILE = (
    "stacks.npz", "manifest.csv", "skipped.csv", "dataset.json",
)


def replace_dir(new: Path, dest: Path) -> None:
    """Put folder ``new`` in place of ``dest`` by renames: ``dest`` is whole before and after."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        new.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(dest)


def write_dataset(dataset: Dataset, out_dir: str | os.PathLike, info: dict | None = None) -> Path:
    """Write a prepared dataset atomically: all files appear together or not at all.

    Files: ``stacks.npz`` (one array per kepid, key = kepid), ``manifest.csv``,
    ``skipped.csv`` and ``dataset.json`` (digest, counts and ``info``).
    Returns the output folder.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        np.savez(tmp / STACKS_FILE, **{str(k): v for k, v in dataset.stacks.items()})
        dataset.manifest.to_csv(tmp / MANIFEST_FILE, index=False)
        dataset.skipped.to_csv(tmp / SKIPPED_FILE, index=False)
        meta = {"digest": dataset.digest, **dataset.counts(), **(info or {})}
        (tmp / INFO_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_dataset(dataset: str | os.PathLike) -> tuple[Dataset, dict]:
    """Read a folder written by :func:`write_dataset`; returns ``(dataset, info)``.

    Raises
    ------
    DataError
        Missing files (with a hint to run prep), or the stored digest does not
        match the data read.
    """
    root = Path(dataset)
    missing = [f for f in (STACKS_FILE, MANIFEST_FILE, INFO_FILE) if not (root / f).exists()]
    if missing:
        raise DataError(
            f"prepared dataset {root} lacks {missing}; run `make prep` "
            "(mlflow run . -e prep) first, or point dataset=... at a prep output"
        )
    manifest = pd.read_csv(root / MANIFEST_FILE)
    skipped = pd.read_csv(root / SKIPPED_FILE) if (root / SKIPPED_FILE).exists() else None
    with np.load(root / STACKS_FILE, allow_pickle=False) as npz:
        stacks = {int(k): npz[str(k)] for k in manifest["kepid"]}
    data = Dataset(stacks=stacks, manifest=manifest)
    if skipped is not None:
        data.skipped = skipped
    info = json.loads((root / INFO_FILE).read_text())
    if info.get("digest") != data.digest:
        raise DataError(
            f"{root}: digest {data.digest} does not match dataset.json ({info.get('digest')}); "
            "the files were changed after prep: run prep again"
        )
    return data, info
