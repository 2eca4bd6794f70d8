"""Where TPFs come from: a local folder, an object-store prefix (S3, incl. MAST's bucket layout), downloads.

A TPF location is a local path or an fsspec URL (``s3://bucket/key``). Object
stores are read with fsspec/s3fs; the endpoint and credentials come from the
usual AWS environment variables (``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, or a
profile); without any credential the bucket is read anonymously (MAST's public
``s3://stpubdata``). Every failure of one object (missing, forbidden,
truncated, a dropped connection) becomes a :class:`~pixel_cnn.io.errors.TPFError`
naming the object, i.e. a per-target reason, never a stop.

MAST's layout (``layout="mast"``; the STScI public bucket, ``s3://stpubdata``,
or a copy with the same keys under any root):

* Kepler: ``<root>/kepler/public/target_pixel_files/<KIC[:4]>/<KIC>/kplr<KIC>-<time>_lpd-targ.fits.gz``,
  ``<KIC>`` the 9-digit zero-padded KIC id;
* TESS (SPOC 2-min): ``<root>/tess/public/tid/s<sector:04d>/<t[0:4]>/<t[4:8]>/<t[8:12]>/<t[12:16]>/*_tp.fits``,
  ``t`` the 16-digit zero-padded TIC id; the sector folders are listed, never guessed.

One prefix per target: listing it is part of that target's task (on a worker),
so the driver never lists a whole mission.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
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


# ------------------------------------------------------------------ object stores (fsspec / s3fs)

LAYOUTS = ("flat", "mast")
KEPLER_TPF_PREFIX = "kepler/public/target_pixel_files"
TESS_TPF_PREFIX = "tess/public/tid"
#: Bytes per read of a remote object (a whole TPF is 1-10 MB; a header needs the first few blocks).
BLOCK_SIZE = 8 * 2 ** 20


def is_remote(location: str | os.PathLike) -> bool:
    """True for an fsspec URL other than ``file://`` (``s3://bucket/key``, ``gs://``, ``https://``)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def storage_options(protocol: str = "s3") -> dict:
    """fsspec options of ``protocol`` from the environment.

    S3: ``endpoint_url`` from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (a
    local SeaweedFS/MinIO, ...), path-style addressing when an endpoint is set,
    ``anon=True`` when no credential is in the environment (no
    ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_SHARED_CREDENTIALS_FILE``):
    MAST's public bucket. Credentials themselves are left to botocore's chain.
    """
    if protocol not in ("s3", "s3a"):
        return {}
    opts: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
        opts["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    if not any(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE")):
        opts["anon"] = True
    return opts


def filesystem(url: str):
    """``(fsspec filesystem, path without protocol)`` of ``url`` with :func:`storage_options`."""
    import fsspec

    protocol = url.split("://", 1)[0]
    return fsspec.core.url_to_fs(url, **storage_options(protocol))


def _reason(name: str, url: str, exc: BaseException, what: str = "cannot fetch") -> TPFError:
    """The per-object reason of an object-store error (missing, forbidden, anything else by its type)."""
    if isinstance(exc, FileNotFoundError):
        return TPFError(f"{name}: no such object {url} (missing)")
    if isinstance(exc, PermissionError):
        return TPFError(f"{name}: access to {url} forbidden ({(str(exc).splitlines() or [''])[0][:160]})")
    return TPFError(f"{name}: {what} {url} ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]})")


def list_remote(prefix: str) -> list[str]:
    """TPF URLs (``TPF_SUFFIXES``) below an object-store ``prefix``, recursive, sorted.

    Raises
    ------
    TPFError
        Listing forbidden, or the store does not answer (message names the prefix).
    """
    fs, path = filesystem(prefix)
    protocol = prefix.split("://", 1)[0]
    try:
        keys = fs.find(path.rstrip("/") + "/")
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001 - botocore/aiohttp errors: this prefix's reason
        raise _reason(prefix.rstrip("/").rsplit("/", 1)[-1], prefix, exc, "cannot list") from None
    return sorted(f"{protocol}://{k}" for k in keys if k.lower().endswith(TPF_SUFFIXES))


def list_tpfs(location: str | os.PathLike) -> list[str]:
    """TPF files under a folder (:func:`find_tpfs`) or URLs under an object-store prefix (:func:`list_remote`).

    Raises
    ------
    TPFError
        Not a folder; listing forbidden or failed.
    """
    if is_remote(location):
        return list_remote(str(location))
    return [str(p) for p in find_tpfs(location)]


def mast_prefixes(root: str, target_id: int, mission: str) -> list[str]:
    """The prefixes holding one target's TPFs in MAST's bucket layout under ``root``.

    ``mission="kepler"``: one prefix, ``<root>/kepler/public/target_pixel_files/<KIC[:4]>/<KIC>/``.
    ``mission="tess"``: one per sector folder listed under ``<root>/tess/public/tid/``
    (the listing of sectors is cached per process).

    Raises
    ------
    TPFError
        ``mission`` unknown, or the TESS sector folders cannot be listed.
    """
    root = root.rstrip("/")
    if mission == "kepler":
        kic = f"{int(target_id):09d}"
        return [f"{root}/{KEPLER_TPF_PREFIX}/{kic[:4]}/{kic}/"]
    if mission == "tess":
        tic = f"{int(target_id):016d}"
        tail = f"{tic[0:4]}/{tic[4:8]}/{tic[8:12]}/{tic[12:16]}/"
        return [f"{sector}/{tail}" for sector in _tess_sectors(root)]
    raise TPFError(f"MAST layout: unknown mission {mission!r} (kepler or tess)")


_SECTORS: dict[str, list[str]] = {}


def _tess_sectors(root: str) -> list[str]:
    if root not in _SECTORS:
        fs, path = filesystem(f"{root}/{TESS_TPF_PREFIX}/")
        protocol = root.split("://", 1)[0]
        try:
            found = fs.ls(path.rstrip("/"), detail=False)
        except FileNotFoundError:
            found = []
        except Exception as exc:  # noqa: BLE001
            raise _reason(TESS_TPF_PREFIX, f"{root}/{TESS_TPF_PREFIX}/", exc, "cannot list") from None
        _SECTORS[root] = sorted(f"{protocol}://{p.rstrip('/')}" for p in found
                                if p.rstrip("/").rsplit("/", 1)[-1].startswith("s"))
    return _SECTORS[root]


def target_files(source: list[str] | str) -> tuple[list[str], list[str]]:
    """A target's TPF locations: ``source`` as given (a list), or listed below each ``|``-separated prefix.

    Returns ``(locations, problems)``; a prefix that cannot be listed is a problem
    (its reason), the other prefixes still count.
    """
    if not isinstance(source, str):
        return list(source), []
    found, problems = [], []
    for prefix in filter(None, source.split("|")):
        try:
            found += list_remote(prefix)
        except TPFError as exc:
            problems.append(str(exc))
    return found, problems


@contextlib.contextmanager
def local_copy(location: str):
    """A local path holding the bytes of ``location``: itself when local, else a temporary copy.

    The copy keeps the object's file name (so ``.fits.gz`` is still gunzipped and
    every reason names the object) in a private temporary folder, removed on exit.

    Raises
    ------
    TPFError
        The object is missing, forbidden, or its transfer failed (message names the object).
    """
    if not is_remote(location):
        yield location
        return
    name = location.rstrip("/").rsplit("/", 1)[-1]
    folder = tempfile.mkdtemp(prefix="pixel-cnn-tpf-")
    try:
        fs, path = filesystem(location)
        local = os.path.join(folder, name)
        try:
            with fs.open(path, "rb", block_size=BLOCK_SIZE) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, BLOCK_SIZE)
        except Exception as exc:  # noqa: BLE001 - every transfer error is this object's reason
            raise _reason(name, location, exc) from None
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def header_target_ids(locations: list[str]) -> list[tuple[str, int | None, str]]:
    """``(location, target id or None, reason)`` of each TPF, from its primary header only.

    Remote objects are read from their start only (the header blocks), gzip
    streams decompressed as read. Used to group a flat prefix's objects by
    target; mapped over chunks of locations by the engine.
    """
    from pixel_cnn.io.fits import header_target_id

    out = []
    for location in locations:
        name = str(location).rstrip("/").rsplit("/", 1)[-1]
        try:
            if not is_remote(location):
                out.append((location, header_target_id(location), ""))
                continue
            fs, path = filesystem(location)
            try:
                with fs.open(path, "rb", block_size=2880 * 16) as raw:
                    import gzip

                    stream = gzip.GzipFile(fileobj=raw) if name.lower().endswith(".gz") else raw
                    out.append((location, header_target_id(stream, name=name), ""))
            except TPFError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise _reason(name, location, exc) from None
        except TPFError as exc:
            out.append((location, None, str(exc)))
    return out
