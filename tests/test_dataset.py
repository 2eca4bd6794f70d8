"""io/dataset.py: the data folder, the KOI table and labels, the prepared dataset written and read back."""

from __future__ import annotations

import stat

import numpy as np
import pandas as pd
import pytest

from pixel_cnn.io.dataset import (
    DataError,
    Dataset,
    koi_star_labels,
    load_koi_table,
    parse_kepid,
    prepare_dataset,
    read_dataset,
    resolve_data_dir,
    write_dataset,
)


def test_parse_kepid():
    assert parse_kepid("pixdiff_9967771.npy") == 9967771
    assert parse_kepid("/a/b/pixdiff_0012.npy") == 12
    for bad in ("pixdiff_.npy", "stack_123.npy", "pixdiff_12a.npy", "pixdiff_12.npz"):
        with pytest.raises(DataError, match="no kepid"):
            parse_kepid(bad)


def test_koi_star_labels_rule_for_multi_koi_stars():
    koi = pd.DataFrame({
        "kepid": [1, 1, 2, 2, 3, 3, 4, 5, 5],
        "kepoi_name": ["K1.01", "K1.02", "K2.01", "K2.02", "K3.01", "K3.02", "K4.01", "K5.01", "K5.02"],
        "koi_disposition": ["CONFIRMED", "CANDIDATE",        # 1: candidates ignored -> 1
                            "FALSE POSITIVE", "FALSE POSITIVE",  # 2: -> 0
                            "CONFIRMED", "FALSE POSITIVE",   # 3: mixed -> no label
                            "CANDIDATE",                     # 4: only candidate -> no label
                            "CONFIRMED", "CONFIRMED"],       # 5: -> 1
    })
    out = koi_star_labels(koi).set_index("kepid")
    assert out["label"].tolist()[:2] == [1, 0] and out.at[5, "label"] == 1
    assert pd.isna(out.at[3, "label"]) and "mixed" in out.at[3, "reason"]
    assert pd.isna(out.at[4, "label"]) and "CANDIDATE" in out.at[4, "reason"]
    assert out.at[1, "disposition"] == "CANDIDATE;CONFIRMED"


def test_real_benchmark_dataset_accounts_for_every_file(real_dataset, data_dir):
    files = sorted(p.name for p in (data_dir / "stacks").glob("*.npy"))
    ds = real_dataset
    assert ds.counts() == {"n_targets": 97, "n_confirmed": 43, "n_false_positive": 54, "n_skipped": 37}
    assert sorted(ds.manifest["source_file"].tolist() + ds.skipped["source_file"].tolist()) == files
    # The 20 placeholder files: shape (1, 16, 16), kepid not in the KOI table (16 of them also
    # outside the KIC id range; the dataset README says all 20, the files say 16).
    placeholders = ds.skipped[ds.skipped["reason"].str.contains("placeholder")]
    assert len(placeholders) == 20
    assert placeholders["reason"].str.contains(r"1 phase bins \(shape \(1, 16, 16\)\)").all()
    assert (placeholders["kepid"] > 13_000_000).sum() == 16
    seed = pd.read_csv(data_dir / "seed_labels.csv")
    merged = ds.manifest.merge(seed, on="kepid", suffixes=("", "_seed"))
    assert len(merged) == 97 and (merged["label"] == merged["label_seed"]).all()
    assert set(ds.manifest.columns) >= {"kepid", "label", "disposition", "source_file", "original_shape"}
    assert all(s.shape[0] == 32 and s.dtype == np.float32 for s in ds.stacks.values())


def test_koi_labels_on_real_data_skip_mixed_stars(data_dir):
    ds = prepare_dataset(data_dir, "koi")
    koi = load_koi_table(data_dir / "koi_cumulative.csv")
    for kepid, label, disposition in ds.manifest[["kepid", "label", "disposition"]].itertuples(index=False):
        dispositions = set(koi.loc[koi.kepid == kepid, "koi_disposition"]) - {"CANDIDATE"}
        assert dispositions == ({"CONFIRMED"} if label == 1 else {"FALSE POSITIVE"})
    mixed = ds.skipped[ds.skipped["reason"].str.contains("mixed")]
    assert len(mixed) >= 1
    assert ds.counts()["n_targets"] > 97  # the KOI table labels the unlisted stacks too


def test_write_read_roundtrip_and_tamper_detection(real_dataset, tmp_path):
    out = write_dataset(real_dataset, tmp_path / "processed", {"prep_run_id": "abc"})
    ds, info = read_dataset(out)
    assert info["prep_run_id"] == "abc" and info["digest"] == real_dataset.digest == ds.digest
    assert ds.kepids.tolist() == real_dataset.kepids.tolist()
    # overwrite is atomic and leaves no temp folders behind
    write_dataset(real_dataset, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["processed"]
    manifest = pd.read_csv(out / "manifest.csv")
    manifest.loc[0, "label"] = 1 - manifest.loc[0, "label"]
    manifest.to_csv(out / "manifest.csv", index=False)
    with pytest.raises(DataError, match="does not match"):
        read_dataset(out)


def test_atomic_writes_get_a_plain_files_mode(tmp_path):
    """Results tables and sheets are readable as a plain open() would leave them, not mkstemp's 0600."""
    from pixel_cnn.io.atomic import write_text

    plain = tmp_path / "plain.csv"
    plain.write_text("kepid\n")
    out = write_text(tmp_path / "results.csv", "kepid\n")
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) != 0o600


def test_missing_prepared_dataset_says_run_prep(tmp_path):
    with pytest.raises(DataError, match="run `make prep`"):
        read_dataset(tmp_path)


def test_missing_data_dir_says_what_is_expected(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXEL_CNN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"from \$PIXEL_CNN_DATA.*stacks/pixdiff_<kepid>.npy"):
        resolve_data_dir()
    with pytest.raises(DataError, match="stacks is missing"):
        resolve_data_dir(tmp_path)


def test_digest_depends_on_pixels():
    stack = np.ones((32, 3, 3), np.float32)
    manifest = pd.DataFrame({"kepid": [1], "label": [1]})
    a = Dataset({1: stack}, manifest).digest
    stack2 = stack.copy()
    stack2[0, 0, 0] = 2
    assert a != Dataset({1: stack2}, manifest).digest
