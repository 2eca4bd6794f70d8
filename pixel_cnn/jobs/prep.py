"""The prep job: validate, label, write and log a dataset, from stacks or from TPFs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from pixel_cnn.io import sources, tpf
from pixel_cnn.io.engine import Engine
from pixel_cnn.io.ephemeris import load_ephemeris
from pixel_cnn.io.errors import TPFError
from pixel_cnn.io.dataset import (
    KOI_REQUIRED_COLUMNS,
    KOI_TABLE,
    DataError,
    prepare_dataset,
    resolve_data_dir,
    write_dataset,
)
from pixel_cnn.tracking import prep as tracking_prep
from pixel_cnn.tracking import runs


def prep(data_dir: str | None, labels: str, out_dir: str, cli_params: dict | None = None) -> dict:
    """Validate the stacks, join labels, write ``out_dir`` and log a prep run.

    ``tpf_dir`` may be an object-store prefix (``s3://...``; ``tpf_layout="mast"``:
    the root of MAST's bucket layout, ``targets`` the ids to look for, default
    every id of the ephemeris). ``scheduler``: a Dask scheduler address runs the
    targets on that cluster ("" = joblib with ``n_jobs`` processes); the MLflow
    run is logged from here (the driver) only, with the engine used
    (``result["engine"]``).

    Returns ``{"run_id", "digest", "counts", "skipped"}`` (skipped: list of
    ``(source_file, reason)``). Raises :class:`~pixel_cnn.io.dataset.DataError` when
    the folder, KOI table or labels file is unusable.
    """
    dataset = prepare_dataset(data_dir, labels)  # DataError before any run when the folder is unusable
    root = Path(dataset.source)
    with runs.job_run(runs.EXPERIMENT_PREP, prep_run_name(root, labels, dataset), cli_params) as run_id:
        out = write_dataset(dataset, out_dir, {
            "prep_run_id": run_id, "labels": labels, "source": str(root / "stacks"),
        })
        tracking_prep.log_prep(run_id, dataset, out, root, labels)
    return {
        "run_id": run_id, "digest": dataset.digest, "counts": dataset.counts(),
        "skipped": list(dataset.skipped[["source_file", "reason"]].itertuples(index=False, name=None)),
    }


def prep_run_name(root: Path, labels: str, dataset) -> str:
    """What a prep run prepared, as its name: ``prep kepler-pixdiff labels=seed n=97 digest=1a2b3c4d``
    (data folder, label source, targets written, the first 8 hex digits of the dataset digest)."""
    return f"prep {root.name} labels={labels} n={len(dataset.labels)} digest={dataset.digest[:8]}"


def prep_tpf(tpf_dir: str, ephemeris: str, out_dir: str, labels: str = "seed",
             data_dir: str | None = None, n_jobs: int = 1, download: bool = False,
             cache_dir: str = "", targets: list[int] | None = None,
             cli_params: dict | None = None, scheduler: str = "", tpf_layout: str = "flat") -> dict:
    """``prep source=tpf``: stacks from TPFs, then (when labels can be had) the usual dataset.

    Writes ``out_dir/stacks/pixdiff_<id>.npy`` and ``out_dir/prep_report.csv``
    (:func:`pixel_cnn.io.tpf.build_stacks`). Then it chains into
    :func:`~pixel_cnn.io.dataset.prepare_dataset` on ``out_dir`` (a data folder:
    ``stacks/`` + ``koi_cumulative.csv``) and writes the prepared dataset to
    ``out_dir/dataset`` (the folder ``cv -P dataset=...`` takes). The KOI table
    is the ephemeris itself when it has ``kepoi_name``/``koi_disposition``
    (the KOI cumulative table), else ``data_dir``'s; ``seed_labels.csv`` comes
    from ``data_dir``. A TOI (TESS) ephemeris stops after the stacks: TESS
    targets have no labels in the KOI table.

    With ``download``, TPFs of ``targets`` (default: every id of the
    ephemeris) are first fetched from MAST into ``cache_dir`` (default
    ``tpf_dir``), which is then read.

    Returns ``{"run_id", "report", "summary", "dataset_dir", "counts", "digest",
    "skipped", "chain_note", "engine"}``; ``dataset_dir`` is None when the chain stopped
    (``chain_note`` says why).

    Raises
    ------
    TPFError
        ``tpf_dir`` missing or without FITS files, ephemeris CSV unusable.
    """
    out = Path(out_dir)
    with runs.job_run(runs.EXPERIMENT_PREP, f"prep-tpf {Path(tpf_dir or cache_dir or '.').resolve().name} -> {out.name}",
                      cli_params) as run_id:
        ephemerides, problems, layout = load_ephemeris(ephemeris)
        fetch_problems = {}
        if download:
            cache = cache_dir or tpf_dir
            if not cache:
                raise TPFError("download=true needs cache_dir (or tpf_dir) to download into")
            Path(cache).mkdir(parents=True, exist_ok=True)
            wanted = targets or sorted(set(ephemerides) | set(problems))
            fetch_problems = sources.download_tpfs(wanted, layout, cache)
            tpf_dir = cache
        with Engine(scheduler, n_jobs) as engine:
            report = tpf.build_stacks(tpf_dir, ephemeris, out, known_problems=fetch_problems, engine=engine,
                                      layout=tpf_layout, targets=None if download else targets)
        summary = tpf.stacks_summary(report)
        tracking_prep.log_tpf_prep(run_id, report, summary, out, layout, engine.describe())
        result = {"run_id": run_id, "report": report, "summary": summary, "dataset_dir": None,
                  "counts": None, "digest": None, "skipped": [], "chain_note": "", "engine": engine.describe()}
        if layout != "koi":
            result["chain_note"] = "TOI ephemeris: TESS targets have no KOI labels; stacks only"
            return result
        if summary["n_targets_ok"] == 0:
            result["chain_note"] = "no stack was made; see the report"
            return result
        is_koi_table = set(KOI_REQUIRED_COLUMNS) <= set(pd.read_csv(ephemeris, comment="#", nrows=0).columns)
        root = None
        if labels == "seed" or not is_koi_table:  # seed_labels.csv / the KOI table from data_dir
            try:
                root = resolve_data_dir(data_dir)
            except DataError as exc:
                result["chain_note"] = f"dataset not prepared: {exc}"
                return result
        koi_src = Path(ephemeris) if is_koi_table else root / KOI_TABLE
        shutil.copyfile(koi_src, out / KOI_TABLE)
        if root is not None and (root / "seed_labels.csv").exists():
            shutil.copyfile(root / "seed_labels.csv", out / "seed_labels.csv")
        try:
            dataset = prepare_dataset(out, labels)
        except DataError as exc:
            result["chain_note"] = f"dataset not prepared: {exc}"
            return result
        if not len(dataset.manifest):
            result["chain_note"] = f"dataset not prepared: no stack has a label (labels={labels})"
            result["skipped"] = list(dataset.skipped[["source_file", "reason"]].itertuples(index=False, name=None))
            return result
        dataset_dir = write_dataset(dataset, out / "dataset", {
            "prep_run_id": run_id, "labels": labels, "source": str(out / "stacks"), "prep_source": "tpf"})
        tracking_prep.log_prep(run_id, dataset, dataset_dir, out, labels)
        result.update(dataset_dir=dataset_dir, counts=dataset.counts(), digest=dataset.digest,
                      skipped=list(dataset.skipped[["source_file", "reason"]].itertuples(index=False, name=None)))
    return result
