"""Bad data files: a corpus built here, each file with its exact expected outcome.

Every load uses ``allow_pickle=False`` and checks the ``.npy`` header
first; prep reports each bad file with its name and reason and still
processes the good ones; cv refuses before training; prep's exit status is
documented in docs/hardening.md.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pixel_cnn.io.dataset import (
    DataError,
    load_koi_table,
    load_seed_labels,
    load_stack,
    prepare_dataset,
)


class _Tripwire:
    """Unpickling this creates ``path``: proof that a file's content was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _good(seed=0, h=5, w=5):
    return np.random.default_rng(seed).normal(0, 1e-3, (32, h, w)).astype(np.float32)


def _save(path: Path, arr) -> Path:
    np.save(path, arr, allow_pickle=True)
    return path


def _truncated(path: Path) -> Path:
    np.save(path, _good())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _pickle_as_npy(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(_Tripwire(marker)))
    return path


def _all(value, h=4, w=4):
    return np.full((32, h, w), value, np.float32)


# name -> (builder(path, marker), exact expected DataError message after "<file name>: ")
CORPUS = {
    "object_array": (lambda p, m: _save(p, np.array([_Tripwire(m)], dtype=object)),
                     "holds pickled Python objects (object array); refused (not loaded)"),
    "pickle_renamed": (_pickle_as_npy, "a Python pickle, not an .npy array; refused (not loaded)"),
    "truncated": (lambda p, m: _truncated(p),
                  "truncated .npy: header declares shape (32, 5, 5) float32 (3200 data bytes), the file holds 1536"),
    "int": (lambda p, m: _save(p, (_good() * 1e4).astype(np.int32)),
            "dtype int32 is not floating point; a stack holds fractional flux changes (float32)"),
    "complex": (lambda p, m: _save(p, _good().astype(np.complex64)), "dtype complex is not a real number type"),
    "bool": (lambda p, m: _save(p, _good() > 0), "dtype bool is not a real number type"),
    "strings": (lambda p, m: _save(p, _good().astype(str)), "dtype string is not a real number type"),
    "rank1": (lambda p, m: _save(p, np.ones(32, np.float32)), "rank 1 (shape (32,)); expected (32, H, W)"),
    "rank4": (lambda p, m: _save(p, _good()[None]), "rank 4 (shape (1, 32, 5, 5)); expected (32, H, W)"),
    "zero_size": (lambda p, m: _save(p, np.zeros((32, 0, 0), np.float32)), "empty array (shape (32, 0, 0))"),
    "1x1": (lambda p, m: _save(p, _all(0.01, 1, 1)), "1x1 pixels is smaller than 3x3"),
    "2x2": (lambda p, m: _save(p, _all(0.01, 2, 2)), "2x2 pixels is smaller than 3x3"),
    "500x500": (lambda p, m: _save(p, np.ones((32, 500, 500), np.float16)),
                "500x500 pixels is larger than 64 a side"),
    "all_nan": (lambda p, m: _save(p, _all(np.nan)), "every value is NaN"),
    "all_zero": (lambda p, m: _save(p, _all(0.0)), "every value is zero (no signal)"),
    "plus_inf": (lambda p, m: _save(p, np.where(np.eye(4, dtype=bool), np.inf, _good(1, 4, 4))), "contains +/-Inf"),
    "minus_inf": (lambda p, m: _save(p, np.where(np.eye(4, dtype=bool), -np.inf, _good(2, 4, 4))), "contains +/-Inf"),
    "empty_file": (lambda p, m: (p.write_bytes(b""), p)[1], "not an .npy file (empty file)"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_stack_file_refused_with_exact_reason_and_nothing_executed(case, tmp_path):
    build, reason = CORPUS[case]
    marker = tmp_path / "EXECUTED"
    path = build(tmp_path / f"pixdiff_{case}.npy", marker)
    with pytest.raises(DataError) as info:
        load_stack(path)
    assert str(info.value) == f"{path.name}: {reason}"
    assert not marker.exists(), "a data file ran code while being loaded"


def test_good_stack_file_loads_float32_and_nan_becomes_zero(tmp_path):
    stack = _good(h=4, w=6).astype(np.float64)
    stack[3, 1, 1] = np.nan
    out = load_stack(_save(tmp_path / "pixdiff_1.npy", stack))
    assert out.dtype == np.float32 and out.shape == (32, 4, 6)
    assert out[3, 1, 1] == 0.0 and np.isclose(out[0, 0, 0], stack[0, 0, 0])


# ------------------------------------------------------------------ a whole folder through prep


@pytest.fixture
def bad_folder(tmp_path, data_dir, real_dataset):
    """A data folder: 4 real good stacks, every bad file of CORPUS, name/duplicate/KOI problems."""
    root = tmp_path / "kepler-bad"
    (root / "stacks").mkdir(parents=True)
    shutil.copy(data_dir / "koi_cumulative.csv", root / "koi_cumulative.csv")
    kepids = real_dataset.kepids
    confirmed = [int(k) for k, y in zip(kepids, real_dataset.labels) if y == 1][:2]
    false_pos = [int(k) for k, y in zip(kepids, real_dataset.labels) if y == 0][:3]
    good = confirmed + false_pos[:2]
    labelled = good + [false_pos[2]] + [int(k) for k in kepids[10:10 + len(CORPUS)]]
    for k in good:
        shutil.copy(data_dir / "stacks" / f"pixdiff_{k}.npy", root / "stacks")
    marker = tmp_path / "EXECUTED"
    bad_ids = {}
    for (case, (build, _)), kepid in zip(sorted(CORPUS.items()), labelled[5:]):
        build(root / "stacks" / f"pixdiff_{kepid}.npy", marker)
        bad_ids[case] = kepid
    # A duplicate kepid (same id, leading zero) of a labelled target: both files are left out.
    dup = false_pos[2]
    shutil.copy(data_dir / "stacks" / f"pixdiff_{dup}.npy", root / "stacks" / f"pixdiff_{dup}.npy")
    shutil.copy(data_dir / "stacks" / f"pixdiff_{dup}.npy", root / "stacks" / f"pixdiff_0{dup}.npy")
    # File names without a kepid, and a kepid absent from the KOI table.
    np.save(root / "stacks" / "pixdiff_.npy", _good())
    np.save(root / "stacks" / "stack_of_star.npy", _good())
    np.save(root / "stacks" / "pixdiff_1234.npy", _good())
    pd.DataFrame({"kepid": labelled + [1234], "label": [1] * 2 + [0] * 3 + [0] * (len(labelled) - 5) + [1]}) \
        .to_csv(root / "seed_labels.csv", index=False)
    return {"root": root, "good": good, "bad_ids": bad_ids, "dup": dup, "marker": marker}


def test_prep_reports_every_bad_file_and_keeps_the_good_ones(bad_folder):
    ds = prepare_dataset(bad_folder["root"], "seed")
    assert sorted(ds.kepids.tolist()) == sorted(bad_folder["good"])
    reasons = dict(zip(ds.skipped["source_file"], ds.skipped["reason"]))
    for case, kepid in bad_folder["bad_ids"].items():
        assert CORPUS[case][1] in reasons[f"pixdiff_{kepid}.npy"], case
    dup = bad_folder["dup"]
    assert f"duplicate kepid {dup}" in reasons[f"pixdiff_{dup}.npy"]
    assert f"duplicate kepid {dup}" in reasons[f"pixdiff_0{dup}.npy"]
    assert "file name has no kepid" in reasons["pixdiff_.npy"]
    assert "file name has no kepid" in reasons["stack_of_star.npy"]
    assert "kepid 1234 is not in the KOI table" in reasons["pixdiff_1234.npy"]
    n_files = len(list((bad_folder["root"] / "stacks").iterdir()))
    assert len(ds.manifest) + len(ds.skipped) == n_files  # every file accounted for
    assert not bad_folder["marker"].exists()


def _prep_cli(args, capsys):
    """Run the prep entry point's ``main`` (what ``mlflow run . -e prep`` runs); returns (rc, out, err)."""
    from entrypoints.prep import main

    rc = main(args)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, captured.out, captured.err)


def test_prep_exit_status_strict_and_default(bad_folder, tracking_store, capsys):
    out = tracking_store / "processed"
    lenient = _prep_cli(["--data-dir", str(bad_folder["root"]), "--out-dir", str(out)], capsys)
    assert lenient.returncode == 0, lenient.stderr[-2000:]
    n_bad = len(CORPUS) + 5
    assert lenient.stdout.count("skipped ") == n_bad
    assert f"prep: 4 targets (2 CONFIRMED, 2 FALSE POSITIVE), {n_bad} files skipped" in lenient.stdout
    info = json.loads((out / "dataset.json").read_text())
    assert info["n_targets"] == 4 and info["n_skipped"] == n_bad

    strict = _prep_cli(["--data-dir", str(bad_folder["root"]), "--out-dir", str(out), "--strict", "true"],
                       capsys)
    assert strict.returncode == 1
    assert f"prep: strict: {n_bad} file(s) skipped -> exit 1" in strict.stderr
    assert json.loads((out / "dataset.json").read_text())["digest"] == info["digest"]  # still written

    # An unusable KOI table: exit 2, one message, the earlier output left untouched.
    (bad_folder["root"] / "koi_cumulative.csv").write_text("kepid,kepoi_name\n1,K1.01\n")
    broken = _prep_cli(["--data-dir", str(bad_folder["root"]), "--out-dir", str(out)], capsys)
    assert broken.returncode == 2
    assert "KOI table lacks column(s) ['koi_disposition']" in broken.stderr
    assert json.loads((out / "dataset.json").read_text())["digest"] == info["digest"]
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".processed")) == []


# ------------------------------------------------------------------ KOI table and labels file


KOI_HEADER = "kepid,kepoi_name,koi_disposition,koi_period\n"
KOI_ROWS = "10797460,K00752.01,CONFIRMED,9.49\n10811496,K00753.01,FALSE POSITIVE,19.9\n"


def test_koi_table_extra_comment_lines_are_skipped(tmp_path):
    path = tmp_path / "koi.csv"
    path.write_text("# NASA Exoplanet Archive\n# extra note\n" + KOI_HEADER + "# mid-table comment\n" + KOI_ROWS)
    koi = load_koi_table(path)
    assert koi["kepid"].tolist() == [10797460, 10811496] and koi["kepid"].dtype == np.int64
    assert koi["koi_disposition"].tolist() == ["CONFIRMED", "FALSE POSITIVE"]


@pytest.mark.parametrize("text,message", [
    ("kepid,kepoi_name\n1,K1.01\n", "KOI table lacks column(s) ['koi_disposition']"),
    ("koi_period\n1.0\n", "KOI table lacks column(s) ['kepid', 'kepoi_name', 'koi_disposition']"),
    ("A free-text note without a # mark\n" + KOI_HEADER + KOI_ROWS, "KOI table lacks column(s)"),
    (KOI_HEADER + "abc,K1.01,CONFIRMED,1.0\n", "non-numeric kepid values, e.g. ['abc']"),
    ("", "cannot read the KOI table"),
])
def test_bad_koi_table_named_with_problem(tmp_path, text, message):
    path = tmp_path / "koi.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_koi_table(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


@pytest.mark.parametrize("labels,message", [
    (["1", "2"], "label must be 0 or 1; found ['2'] in 1 row(s)"),
    (["-1", "0"], "label must be 0 or 1; found ['-1'] in 1 row(s)"),
    (["0.5", "1"], "label must be 0 or 1; found ['0.5'] in 1 row(s)"),
    (["yes", "no"], "label must be 0 or 1; found ['no', 'yes'] in 2 row(s)"),
    (["1", ""], "label must be 0 or 1; found ['nan'] in 1 row(s)"),
])
def test_labels_other_than_0_1_refused(tmp_path, labels, message):
    path = tmp_path / "seed_labels.csv"
    path.write_text("kepid,label\n" + "".join(f"{1000 + i},{v}\n" for i, v in enumerate(labels)))
    with pytest.raises(DataError) as info:
        load_seed_labels(path)
    assert str(info.value) == f"{path}: {message}"


def test_labels_file_accepts_0_1_and_refuses_duplicates(tmp_path):
    path = tmp_path / "seed_labels.csv"
    path.write_text("kepid,label\n5,1\n6,0\n")
    assert load_seed_labels(path).to_dict("list") == {"kepid": [5, 6], "label": [1, 0]}
    path.write_text("kepid,label\n5,1\n5,0\n")
    with pytest.raises(DataError, match=r"kepid listed more than once: \[5\]"):
        load_seed_labels(path)


# ------------------------------------------------------------------ cv refuses before training


def _small_prepared(real_dataset, tmp_path, n_confirmed, n_false):
    from pixel_cnn.io.dataset import Dataset, write_dataset

    m = real_dataset.manifest
    keep = pd.concat([m[m.label == 1].head(n_confirmed), m[m.label == 0].head(n_false)]).sort_values("kepid")
    ds = Dataset(stacks={int(k): real_dataset.stacks[int(k)] for k in keep.kepid},
                 manifest=keep.reset_index(drop=True))
    return write_dataset(ds, tmp_path / "small")


@pytest.mark.parametrize("n_conf,n_fp,n_folds,message", [
    (2, 1, 5, "3 targets (distinct kepids) is fewer than n_folds=5"),
    (6, 2, 3, "2 FALSE POSITIVE target(s) cannot fill 3 folds"),
])
def test_cv_entry_point_refuses_before_any_run(real_dataset, tracking_store, capsys,
                                               n_conf, n_fp, n_folds, message):
    from mlflow.tracking import MlflowClient

    from entrypoints.cv import main

    prepared = _small_prepared(real_dataset, tracking_store, n_conf, n_fp)
    rc = main(["--dataset", str(prepared), "--n-folds", str(n_folds), "--epochs", "1"])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"cv: {message}")
    client = MlflowClient()
    exps = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(exps) == []  # refused before a run (or any training) started
