"""Batch scoring: stack files and folders -> one table row per file, and a vetting sheet per candidate.

What ``python -m pixel_cnn.predict PATH ... --out results.csv --sheets DIR`` does
(:mod:`pixel_cnn.predict` only parses arguments). The model is loaded through
:func:`pixel_cnn.tracking.registry.load` (the served model, in this process); this
module makes no MLflow call itself.

A row holds ``kepid``, ``file``, ``status`` (``scored`` / ``skipped``), every
column the model returns (today ``probability``, ``label``, ``threshold``; a
fused model's per-branch ``*_probability`` columns come along unchanged), the
``in_training_set`` (the model was trained on this star, so its score is in-sample,
not a test; empty when the model does not record its training stars), the
vetting statistics of :func:`pixel_cnn.vetter.vetting.vetting_statistics`
(:data:`~pixel_cnn.vetter.vetting.STATISTICS_COLUMNS`) and ``reason`` (why a file
was skipped; empty otherwise). A file that cannot be read or scored gets a row
with its reason and the rest go on.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pixel_cnn.vetter.vetting import STATISTICS_COLUMNS, vetting_statistics
from pixel_cnn.io.atomic import atomic_path
from pixel_cnn.io.dataset import STACK_PATTERN, DataError, load_stack

#: Stacks per call of the model (one bad stack in a chunk: the chunk is scored one by one).
CHUNK = 64
#: Leading columns of every row; the model's columns and the statistics follow, ``reason`` last.
ID_COLUMNS = ("kepid", "file", "status")


def stack_files(paths: list[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The ``.npy`` files named by ``paths``: files as given, folders searched for ``*.npy`` (recursively, sorted).

    Returns ``(files, missing)``: ``missing`` lists ``(path, reason)`` for paths that
    do not exist or folders that hold no ``.npy`` file. A file given explicitly is
    kept whatever its name (it is then read, and refused if it is not a stack).
    """
    files, missing, seen = [], [], set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.npy") if p.is_file())
            if not found:
                missing.append((path, "folder holds no .npy file"))
        elif path.exists():
            found = [path]
        else:
            missing.append((path, "no such file or folder"))
            found = []
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                files.append(p)
    return files, missing


def kepid_of(path: Path) -> int | None:
    """KIC id from ``pixdiff_<kepid>.npy``; None for another name."""
    match = STACK_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def candidate_row(path: Path, prediction: dict | None, stack: np.ndarray | None = None,
                  reason: str = "") -> dict:
    """One table row: ids, the model's columns (``prediction``), the vetting statistics, reason.

    ``prediction`` is one record of the model's output (any columns); None for a
    skipped file. Statistics come from :func:`~pixel_cnn.vetter.vetting.vetting_statistics`
    of ``stack`` (the function the vetting sheet uses too).
    """
    row = {"kepid": kepid_of(path), "file": path.name, "status": "skipped" if prediction is None else "scored"}
    if prediction is not None:
        row.update(prediction)
        row.update(vetting_statistics(stack).row())
    row["reason"] = reason
    return row


def rows_table(rows: list[dict], model_columns: list[str]) -> pd.DataFrame:
    """Rows -> DataFrame with the columns in a fixed order (ids, model, statistics, reason)."""
    columns = [*ID_COLUMNS, *model_columns, "in_training_set", *STATISTICS_COLUMNS, "reason"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    table["kepid"] = table["kepid"].astype("Int64")  # whole numbers, blank for a name without kepid
    return table


def koi_parameters(koi: pd.DataFrame | None, kepid: int | None) -> tuple[dict[str, float], str, str]:
    """The tabular branch's parameters of a star: ``(params, KOI name, why none)``.

    The star's first KOI (:func:`pixel_cnn.branches.tabular.star_koi`, the rule the
    fusion model was trained with) in the KOI table ``koi`` (with its DV diagnostics:
    :func:`pixel_cnn.io.koi.load_koi_with_dv`); its finite values of
    :data:`pixel_cnn.vetter.tabular.SERVED_PARAMETERS` (KOI table names and units: the model inputs,
    DV diagnostics included, and ``ra``, ``dec``, epoch and uncertainties for the derived and
    catalogue-context features, computed by the model against the catalogue it ships). No
    table, no kepid, or a kepid not in the table: ``({}, "", reason)``.
    """
    from pixel_cnn.branches.tabular import star_koi
    from pixel_cnn.vetter import tabular

    if koi is None:
        return {}, "", "no KOI table"
    if kepid is None:
        return {}, "", "no kepid in the file name"
    first = star_koi(koi, [kepid])
    if not len(first):
        return {}, "", "kepid not in the KOI table"
    row = first.iloc[0]
    params = {k: float(row[k]) for k in tabular.SERVED_PARAMETERS if k in row and pd.notna(row[k])}
    return params, str(row["kepoi_name"]), "" if params else "no KOI parameters"


class ModelScorer:
    """The loaded model as scoring needs it: predictions of raw stacks, and attributions when it can.

    ``model`` is a pixel-cnn ``mlflow.pyfunc`` model (:func:`pixel_cnn.tracking.registry.load`);
    scoring runs its :class:`~pixel_cnn.vetter.model.Vetter` in this process
    (:func:`pixel_cnn.tracking.registry.vetter_of`): stacks of mixed sizes in one batch, and
    for a vetter that reads KOI parameters, each star's own parameters in the same batch
    (:meth:`~pixel_cnn.vetter.model.Vetter.predict_each`), looked up in the KOI table ``koi``
    (:func:`koi_parameters`; the record then also holds ``koi``, the KOI used, or ``koi_note``,
    why none was); without ``koi`` it answers from the pixel branch and ``koi_note`` says why
    (``no_koi_note``). Attributions come from the vetter's pixel branch; a vetter without one
    gets sheets without the attribution panel.

    Raises
    ------
    ValueError
        ``model`` is not a pixel-cnn vetter.
    """

    def __init__(self, model, koi: pd.DataFrame | None = None, no_koi_note: str = "no KOI table", label: str = ""):
        from pixel_cnn.tracking.registry import vetter_of

        self.model = model
        self.vetter = vetter_of(model)
        if self.vetter is None:
            raise ValueError("not a pixel-cnn vetter model (no vetter inside)")
        self.accepts_parameters = self.vetter.accepts_parameters
        self.koi = koi if self.accepts_parameters else None
        self.no_koi_note = no_koi_note
        #: stars the model was trained on: their scores are in-sample, not a test (empty when unknown)
        self.training_kepids = self.vetter.training_kepids
        #: which model this is, for the sheets' footer (``models:/pixel-cnn@champion = pixel-cnn version 3``);
        #: default: the vetter's name and the cv run it came from
        cv_run = self.vetter.config.get("cv_run_id", "")
        self.label = label or f"{self.vetter.name or 'vetter'}" + (f" of cv run {cv_run}" if cv_run else "")

    def predict(self, stacks: list[np.ndarray], kepids: list[int | None] | None = None) -> pd.DataFrame:
        if not self.accepts_parameters:
            return self.vetter.predict(stacks).reset_index(drop=True)
        if self.koi is None or kepids is None:
            out = self.vetter.predict(stacks).reset_index(drop=True)
            out["koi"], out["koi_note"] = "", self.no_koi_note
            return out
        looked_up = [koi_parameters(self.koi, kepid) for kepid in kepids]
        out = self.vetter.predict_each(stacks, [params or None for params, _, _ in looked_up])
        out["koi"] = [name for _, name, _ in looked_up]
        out["koi_note"] = [why for _, _, why in looked_up]
        return out

    def in_training_set(self, kepid: int | None) -> bool | None:
        """Whether the model was trained on this star (None when the model does not record it)."""
        if not self.training_kepids or kepid is None:
            return None
        return int(kepid) in self.training_kepids

    def attribution(self, stack: np.ndarray) -> tuple[np.ndarray | None, str]:
        """``(map (S, S), note)``: the members' mean Integrated Gradients summed over image channels."""
        ens = self.vetter.pixel
        if ens is None:
            return None, ""
        from pixel_cnn.drawing.explain import ensemble_attributions
        from pixel_cnn.vetter.representation import build_inputs

        preset = ens.preset
        x = build_inputs([stack], preset.representation, preset.image_size, nan="reject")
        attr = ensemble_attributions(preset, [net.state_dict() for net in ens.members], x)[0]
        n_maps = preset.in_channels - preset.n_scalars
        note = (f"mean of {len(ens.members)} members, {n_maps} image channels summed; "
                f"scalar inputs {float(attr[n_maps:].sum()):+.2f} logit")
        return attr[:n_maps].sum(0), note


def write_sheet(path: Path, stack: np.ndarray, kepid, prediction: dict, scorer: ModelScorer,
                source: str = "", truth: str | None = None, in_training: bool | None = None) -> Path:
    """Draw the vetting sheet (:func:`pixel_cnn.drawing.sheet.sheet_figure`) and save it as PNG, atomically.

    The footer names the model (``scorer.label``), the KOI whose parameters were used
    (``prediction["koi"]``, when the record has one) and whether the star was in the model's
    training set (``in_training``)."""
    import matplotlib.pyplot as plt

    from pixel_cnn.drawing.sheet import SHEET_DPI, sheet_figure

    attribution, note = scorer.attribution(stack)
    koi = prediction.get("koi") if prediction.get("branch") in ("fused", "tabular") else ""
    fig = sheet_figure(stack, kepid, prediction, attribution, note, truth=truth, source=source,
                       model=scorer.label, koi=koi if isinstance(koi, str) else "", in_training=in_training)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=SHEET_DPI)
    finally:
        plt.close(fig)
    return path


@dataclass
class ScoreReport:
    """What :func:`score_paths` did: the table, and the sheets written."""

    table: pd.DataFrame
    sheets: list[Path] = field(default_factory=list)
    #: engine runs (:func:`score_catalogue`): worker PID -> times it loaded the model
    workers: dict = field(default_factory=dict)

    @property
    def n_scored(self) -> int:
        return int((self.table["status"] == "scored").sum())

    @property
    def n_skipped(self) -> int:
        return int((self.table["status"] == "skipped").sum())


def _message(path: Path, exc: Exception) -> str:
    msg = str(exc)
    return msg[len(path.name) + 2:] if msg.startswith(f"{path.name}: ") else msg


def score_paths(paths: list[str | os.PathLike], scorer: ModelScorer, sheets_dir: str | os.PathLike | None = None,
                progress: bool = True, on_row=None, chunk: int = CHUNK) -> ScoreReport:
    """Score every stack file under ``paths``; optionally write a vetting sheet per scored stack.

    Parameters
    ----------
    paths : files and folders (folders: every ``*.npy`` below, sorted).
    scorer : ModelScorer
    sheets_dir : folder for ``<file stem>.png`` sheets, or None.
    progress : show a tqdm bar on stderr.
    on_row : optional ``callable(row: dict)`` called for each row, in file order.
    chunk : stacks per model call.

    Returns
    -------
    ScoreReport
        One row per file (and per missing path), in the order found.
        Never raises for a bad file: unreadable, not a stack, or refused by the
        model -> ``status="skipped"`` and the reason. A sheet that cannot be written
        (disk full, unwritable folder) leaves the row ``scored`` with the reason.
    """
    files, missing = stack_files(paths)
    rows: list[dict] = [candidate_row(p, None, reason=why) for p, why in missing]
    for row in rows:
        on_row and on_row(row)
    model_columns: list[str] = []
    sheets: list[Path] = []
    bar = tqdm(total=len(files), unit="stack", disable=not progress or len(files) < 2, desc="scoring")
    for start in range(0, len(files), chunk):
        part_rows, columns, part_sheets = _score_chunk(_load_chunk(files[start:start + chunk]), scorer, sheets_dir)
        model_columns = model_columns or columns
        sheets += part_sheets
        for row in part_rows:
            rows.append(row)
            on_row and on_row(row)
            bar.update(1)
    bar.close()
    return ScoreReport(rows_table(rows, model_columns), sheets)


def _load_chunk(part: list[Path]) -> list[tuple[Path, np.ndarray | None, str]]:
    """``(path, stack or None, reason)`` of each file (:func:`~pixel_cnn.io.dataset.load_stack`)."""
    loaded = []
    for p in part:
        try:
            loaded.append((p, load_stack(p), ""))
        except (DataError, OSError) as exc:
            loaded.append((p, None, _message(p, exc)))
    return loaded


def _score_chunk(loaded: list[tuple[Path, np.ndarray | None, str]], scorer: ModelScorer,
                 sheets_dir: str | os.PathLike | None) -> tuple[list[dict], list[str], list[Path]]:
    """Rows (file order), the model's columns and the sheets written, of one chunk of loaded stacks.

    The good stacks are scored in one model call (a stack the model refuses: the
    chunk is scored one by one).
    """
    model_columns: list[str] = []
    rows, sheets = [], []
    good = [(p, s) for p, s, _ in loaded if s is not None]
    predictions: dict[Path, dict | str] = {}
    if good:
        try:
            out = scorer.predict([s for _, s in good], [kepid_of(p) for p, _ in good])
            predictions.update({p: rec for (p, _), rec in zip(good, out.to_dict("records"))})
            model_columns = list(out.columns)
        except Exception:  # noqa: BLE001 - a stack the model refuses: score the chunk one by one
            for p, s in good:
                predictions[p] = _predict_one(scorer, p, s)
    for p, stack, reason in loaded:
        pred = predictions.get(p)
        if stack is None or isinstance(pred, str):
            row = candidate_row(p, None, reason=reason or pred)
        else:
            if not model_columns:
                model_columns = list(pred)
            row = candidate_row(p, {**pred, "in_training_set": scorer.in_training_set(kepid_of(p))}, stack)
            if sheets_dir is not None:
                try:
                    sheets.append(write_sheet(Path(sheets_dir) / f"{p.stem}.png", stack,
                                              row["kepid"] if row["kepid"] is not None else p.stem,
                                              pred, scorer, source=p.name,
                                              in_training=scorer.in_training_set(kepid_of(p))))
                except (OSError, ValueError) as exc:
                    row["reason"] = f"scored, but the sheet could not be written: {exc}"
        rows.append(row)
    return rows, model_columns, sheets


# ------------------------------------------------------------------ a catalogue on an engine


def score_chunk(model_uri: str, tracking_uri: str, loaded: list[tuple[Path, np.ndarray | None, str]],
                koi: pd.DataFrame | None, no_koi_note: str, sheets: bool, label: str = "") -> dict:
    """The per-chunk function of :func:`score_catalogue`, run on a worker.

    ``loaded``: the chunk's ``(path, stack or None, reason)`` as the driver read them
    (workers need no access to the files); ``koi``: the KOI table rows of the
    chunk's stars (vetters that read KOI parameters) or None; ``label``: the model's
    name on the sheets. Returns ``{"rows", "columns", "sheets": {file stem: PNG bytes},
    "pid", "loads"}``; the worker writes nothing the driver sees.
    """
    import torch

    torch.set_num_threads(1)  # one thread per worker: the same arithmetic whatever engine runs it
    from pixel_cnn.tracking.registry import LOADS, load_once

    scorer = ModelScorer(load_once(model_uri, tracking_uri), koi, no_koi_note, label=label)
    with tempfile.TemporaryDirectory(prefix="pixel-cnn-sheets-") as tmp:
        rows, columns, written = _score_chunk(loaded, scorer, tmp if sheets else None)
        pngs = {p.stem: p.read_bytes() for p in written}
    for row in rows:  # a sheet reason names the worker's scratch folder: name the driver's folder instead
        if str(row.get("reason", "")).startswith("scored, but the sheet"):
            row["reason"] = row["reason"].replace(tmp, "<sheets>")
    return {"rows": rows, "columns": columns, "sheets": pngs, "pid": os.getpid(),
            "loads": LOADS.get((tracking_uri, model_uri), 0)}


def score_catalogue(paths: list[str | os.PathLike], model_uri: str, engine, koi: pd.DataFrame | None = None,
                    no_koi_note: str = "no KOI table", sheets_dir: str | os.PathLike | None = None,
                    progress: bool = True, on_row=None, chunk: int = CHUNK, tracking_uri: str = "",
                    label: str = "") -> ScoreReport:
    """:func:`score_paths` with the chunks scored by an engine (:class:`pixel_cnn.io.engine.Engine`).

    The driver (this process) finds and reads the stack files, cuts them into
    the chunks :func:`score_paths` would score (``chunk`` files in file order),
    and maps :func:`score_chunk` over them: joblib processes or the workers of a
    Dask cluster, each loading ``model_uri`` once (:func:`pixel_cnn.tracking.registry.load_once`; pass a
    resolved ``models:/<name>/<version>`` so every worker loads the same version).
    It alone writes: the rows come back in file order, ``on_row`` is called for
    each once all earlier rows are in, the sheets (PNG bytes) are written
    atomically under ``sheets_dir``. Same chunks, same model, one torch thread:
    the table is the same bytes as :func:`score_paths`' whatever engine ran it.

    Returns a :class:`ScoreReport`; ``report.workers`` maps each worker PID to
    the number of times it loaded the model. A chunk whose task failed for good
    on the cluster (it killed its workers) gets a skipped row per file with that reason.
    """
    from pixel_cnn.branches.tabular import star_koi

    files, missing = stack_files(paths)
    rows: list[dict] = [candidate_row(p, None, reason=why) for p, why in missing]
    for row in rows:
        on_row and on_row(row)
    tasks = []
    for start in range(0, len(files), chunk):
        loaded = _load_chunk(files[start:start + chunk])
        sub = None
        if koi is not None:
            sub = star_koi(koi, [k for k in (kepid_of(p) for p, _, _ in loaded) if k is not None])
            sub = koi[koi["kepid"].isin(sub["kepid"])] if len(sub) else koi.iloc[:0]
        tasks.append((model_uri, tracking_uri, loaded, sub, no_koi_note, sheets_dir is not None, label, start))
    done: dict[int, dict] = {}
    model_columns: list[str] = []
    sheets: list[Path] = []
    workers: dict[int, int] = {}
    next_start = 0

    def failed(task, exc):
        why = f"chunk failed on the cluster ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})"
        return {"rows": [candidate_row(p, None, reason=why) for p, _, _ in task[2]], "columns": [],
                "sheets": {}, "pid": 0, "loads": 0, "start": task[-1]}

    for result in engine.map_unordered(_score_task, tasks, progress=progress, desc="scoring", unit="chunk",
                                       on_error=failed):
        done[result["start"]] = result
        if result["pid"]:
            workers[result["pid"]] = max(workers.get(result["pid"], 0), result["loads"])
        while next_start in done:  # hand rows on in file order
            part = done.pop(next_start)
            model_columns = model_columns or part["columns"]
            for stem, png in part["sheets"].items():
                with atomic_path(Path(sheets_dir) / f"{stem}.png") as tmp:
                    Path(tmp).write_bytes(png)
                sheets.append(Path(sheets_dir) / f"{stem}.png")
            for row in part["rows"]:
                rows.append(row)
                on_row and on_row(row)
            next_start += chunk
    return ScoreReport(rows_table(rows, model_columns), sheets, workers)


def _score_task(model_uri, tracking_uri, loaded, koi, no_koi_note, sheets, label, start) -> dict:
    return {**score_chunk(model_uri, tracking_uri, loaded, koi, no_koi_note, sheets, label), "start": start}


def _predict_one(scorer: ModelScorer, path: Path, stack: np.ndarray) -> dict | str:
    """One stack's record, or the model's reason for refusing it."""
    try:
        return scorer.predict([stack], [kepid_of(path)]).iloc[0].to_dict()
    except Exception as exc:  # noqa: BLE001 - whatever the model raises, it is this file's reason
        return str(getattr(exc, "message", exc)).removeprefix("bad request: ").removeprefix("stack 0: ")


def write_table(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write the table as CSV atomically (a temporary file in the same folder, then rename)."""
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return Path(out)
