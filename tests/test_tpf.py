"""prep from raw Target Pixel Files: science on hand-checked arrays, then synthetic
TPFs in the real Kepler/TESS layout with injected transits of known depth and pixel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pixel_cnn.stacks.phasefold import BKJD_REF, BTJD_REF
from pixel_cnn.vetter.stack import N_PHASE_BINS, validate_stack
from pixel_cnn.io import ephemeris, errors, fits, sources, tpf
from pixel_cnn.io.target import combine_quarters
from tests.tpf_fixtures import CADENCE_D, NOISE_REL, Injection, truncate, write_tpf

def _quarter(time, shape=(3, 3)):
    flux = np.full((len(time),) + shape, 1000.0, np.float32)
    return fits.TPFData(path="q.fits", target_id=1, mission="Kepler", period_label="Q1",
                       bjd_ref=BKJD_REF, time=time, flux=flux, grid=("Kepler", "5", 0, 0) + shape,
                       n_raw=len(time), n_quality=0, n_nonfinite_time=0, n_nan_flux=0)


def test_too_few_in_transit_or_reference_cadences_is_a_reason():
    eph = ephemeris.Ephemeris(1, "K1.01", 10.0, 100.0 + BKJD_REF, 2.0)   # t0 = 100 BKJD
    two_in = np.array([99.99, 100.01, 102.5, 102.6])                  # 2 in transit
    with pytest.raises(errors.TPFError, match=r"too few cadences: 2 in transit \(need >= 3\)"):
        combine_quarters([_quarter(two_in)], eph)
    few_ref = np.concatenate([[99.99, 100.0, 100.01], 102.0 + np.arange(5) * 0.1])
    with pytest.raises(errors.TPFError, match=r"too few cadences: 5 out-of-transit reference"):
        combine_quarters([_quarter(few_ref)], eph)


# ---------------------------------------------------------------- synthetic TPFs


def expected_transit_bins(inj: Injection) -> set[int]:
    """Phase bins that the ephemeris's transit window [-D/2, D/2] overlaps."""
    hw = inj.duration_h / 24 / 2 / inj.period_d
    edges = np.arange(N_PHASE_BINS + 1) / N_PHASE_BINS
    return {i for i in range(N_PHASE_BINS) if edges[i] < hw or edges[i + 1] > 1 - hw}


def in_transit_counts(times: list[np.ndarray], inj: Injection) -> dict[int, int]:
    """In-transit cadences per phase bin, folded by hand in the test."""
    t = np.concatenate(times)
    phase = np.mod(t - inj.epoch, inj.period_d) / inj.period_d
    inside = np.minimum(phase, 1 - phase) * inj.period_d * 24 < inj.duration_h / 2
    bins = (phase[inside] * N_PHASE_BINS).astype(int)
    return {int(b): int((bins == b).sum()) for b in np.unique(bins)}


def assert_transit_at(stack: np.ndarray, inj: Injection, times: list[np.ndarray]) -> None:
    """Deepest in-transit pixel = the injected one; depth within 5 sigma of the median's noise;
    the dimming sits in the bins the ephemeris says and nowhere else."""
    bins = sorted(expected_transit_bins(inj))
    counts = in_transit_counts(times, inj)
    assert set(counts) <= set(bins)
    depth_image = stack[bins].mean(axis=0)
    assert np.unravel_index(np.argmin(depth_image), depth_image.shape) == inj.pixel
    r, c = inj.pixel
    for b in counts:  # sigma of a median of n gaussian values: 1.2533 sigma / sqrt(n)
        tol = 5 * 1.2533 * NOISE_REL / np.sqrt(counts[b])
        assert abs(stack[b, r, c] + inj.depth) < tol, (b, stack[b, r, c], tol)
    others = [b for b in range(N_PHASE_BINS) if b not in bins]
    assert np.abs(stack[others, r, c]).max() < inj.depth / 4
    elsewhere = np.ones(stack.shape[1:], bool)
    elsewhere[r, c] = False
    assert np.abs(stack[bins][:, elsewhere]).max() < inj.depth / 4


T1, N1 = 131.5, 400        # Kepler Q1-like start (BKJD) and cadences per file
T5 = 500.0                 # a later quarter on the same pixel grid


def _times(t_start, n=N1):
    return t_start + np.arange(n) * CADENCE_D


@pytest.fixture(scope="module")
def kepids(data_dir):
    """Real KIC ids of single-KOI stars: two CONFIRMED and two FALSE POSITIVE first, then others."""
    from pixel_cnn.io.dataset import load_koi_table

    koi = load_koi_table(data_dir / "koi_cumulative.csv")
    single = koi.groupby("kepid").filter(lambda g: len(g) == 1)
    conf = single[single.koi_disposition == "CONFIRMED"].kepid.head(4).tolist()
    fp = single[single.koi_disposition == "FALSE POSITIVE"].kepid.head(3).tolist()
    return {"on_target": conf[0], "neighbour": fp[0], "nan_quality": conf[1], "nan_cadence": fp[1],
            "no_transit": conf[2], "truncated": fp[2], "no_ephemeris": conf[3]}, koi


@pytest.fixture(scope="module")
def tpf_case(tmp_path_factory, kepids):
    """Seven Kepler targets' TPFs and a KOI-layout ephemeris; returns the folder and the truth."""
    ids, koi = kepids
    root = tmp_path_factory.mktemp("tpf")
    tpfs = root / "tpfs"
    (tpfs / "nested").mkdir(parents=True)
    P, D = 2.5, 3.0                       # days, hours: transit within bins 0 and 31
    inj = {
        "on_target": Injection((3, 4), 0.01, P, T1 - 10.3 * P + 0.3 * P, D),   # epoch before the data
        "neighbour": Injection((4, 5), 0.01, P, 2000.0 + 0.17, D),             # epoch after the data
        "nan_quality": Injection((3, 4), 0.01, P, T1 + 0.4, D),
        "nan_cadence": Injection((3, 4), 0.01, P, T1 + 0.9, D),
    }
    times = {k: [_times(T1)] for k in inj}
    # on_target: two quarters on one pixel grid, plus a rolled quarter (other grid, shape, corner)
    write_tpf(tpfs / "kplr-a-q1.fits", ids["on_target"], inj=inj["on_target"], t_start=T1, quarter=1, seed=1)
    write_tpf(tpfs / "nested" / "kplr-a-q5.fits", ids["on_target"], inj=inj["on_target"], t_start=T5,
              quarter=5, seed=2)
    times["on_target"].append(_times(T5))
    write_tpf(tpfs / "kplr-a-q2.fits", ids["on_target"], inj=None, t_start=T5 + 100, n=150, quarter=2,
              shape=(8, 6), star=(4, 3), column=300, row=50, seed=3)
    write_tpf(tpfs / "neighbour.fits", ids["neighbour"], inj=inj["neighbour"], t_start=T1, seed=4)
    # 5% NaN times, default-mask quality bits on 15 other cadences, a non-default bit on 10
    rng = np.random.default_rng(5)
    order = rng.permutation(N1)
    nan_time = np.zeros(N1, bool)
    nan_time[order[:20]] = True
    quality = np.zeros(N1, int)
    quality[order[20:35]] = 1 | 32          # AttitudeTweak | Desat: in lightkurve's default bitmask
    quality[order[35:45]] = 128             # ApertureCosmic: not in the default bitmask, kept
    write_tpf(tpfs / "nanq.fits", ids["nan_quality"], inj=inj["nan_quality"], t_start=T1, seed=5,
              nan_time=nan_time, quality=quality)
    times["nan_quality"] = [_times(T1)[~nan_time & (quality & 33 == 0)]]
    write_tpf(tpfs / "nancad.fits", ids["nan_cadence"], inj=inj["nan_cadence"], t_start=T1, seed=6,
              nan_cadences=(10, 11), nan_column=0)
    times["nan_cadence"] = [np.delete(_times(T1), [10, 11])]
    # no_transit: P = 50 d, transits at T1 - 30 and T1 + 20, the data span 8.2 d between them
    write_tpf(tpfs / "notransit.fits", ids["no_transit"], inj=None, t_start=T1, seed=7)
    truncate(write_tpf(tpfs / "trunc.fits", ids["truncated"], inj=None, t_start=T1, seed=8), 0.6)
    write_tpf(tpfs / "noeph.fits", ids["no_ephemeris"], inj=None, t_start=T1, seed=9)
    (tpfs / "notes.txt").write_text("not a FITS file: ignored\n")

    rows = [(ids[k], f"K{i:05d}.01", "CONFIRMED" if k in ("on_target", "nan_quality") else "FALSE POSITIVE",
             v.period_d, v.epoch, v.duration_h) for i, (k, v) in enumerate(inj.items(), 1)]
    rows += [(ids["no_transit"], "K00005.01", "CONFIRMED", 50.0, T1 + 20.0, D),
             (ids["truncated"], "K00006.01", "FALSE POSITIVE", P, T1, D)]
    eph = pd.DataFrame(rows, columns=["kepid", "kepoi_name", "koi_disposition", "koi_period",
                                      "koi_time0bk", "koi_duration"])
    # a second KOI on the on_target star, listed first: .01 is folded on, not this one
    eph = pd.concat([pd.DataFrame([(ids["on_target"], "K00001.02", "CONFIRMED", 7.0, T1, 2.0)],
                                  columns=eph.columns), eph], ignore_index=True)
    eph.to_csv(root / "ephemeris.csv", index=False)
    return {"root": root, "tpfs": tpfs, "eph": root / "ephemeris.csv", "ids": ids, "inj": inj,
            "times": times, "nan_time": nan_time, "quality": quality}


@pytest.fixture(scope="module")
def built(tpf_case, tmp_path_factory):
    """build_stacks run once over the case (2 worker processes)."""
    out = tmp_path_factory.mktemp("tpf-out")
    report = tpf.build_stacks(tpf_case["tpfs"], tpf_case["eph"], out, n_jobs=2, progress=False)
    return out, report.set_index("target_id")


def _stack(out, kepid):
    return np.load(out / "stacks" / f"pixdiff_{kepid}.npy", allow_pickle=False)


@pytest.mark.parametrize("case", ["on_target", "neighbour", "nan_quality", "nan_cadence"])
def test_injected_transit_found_at_its_pixel_depth_and_bins(built, tpf_case, case):
    out, report = built
    kepid = tpf_case["ids"][case]
    assert report.loc[kepid, "status"] == "ok", report.loc[kepid, "reason"]
    stack = _stack(out, kepid)
    assert stack.dtype == np.float32 and stack.shape == (32, 7, 8) and np.isfinite(stack).all()
    assert_transit_at(stack, tpf_case["inj"][case], tpf_case["times"][case])


def test_quarters_on_one_grid_combined_rolled_quarter_left_out(built, tpf_case):
    out, report = built
    row = report.loc[tpf_case["ids"]["on_target"]]
    assert row["quarters_used"] == "Q1,Q5" and row["n_cadences"] == 2 * N1
    assert "kplr-a-q2.fits (Q2: other pixel grid)" in row["files_left_out"]
    assert row["ephemeris"] == "K00001.01" and row["n_kois_on_star"] == 2


def test_nan_times_and_quality_bits_dropped_and_counted(built, tpf_case):
    out, report = built
    row = report.loc[tpf_case["ids"]["nan_quality"]]
    nan_time, quality = tpf_case["nan_time"], tpf_case["quality"]
    assert row["n_dropped_nonfinite_time"] == nan_time.sum() == 20
    assert row["n_dropped_quality"] == ((quality & 33 > 0) & ~nan_time).sum() == 15
    assert row["n_cadences"] == N1 - 35


def test_all_nan_cadence_dropped_and_nan_column_is_no_change(built, tpf_case):
    out, report = built
    kepid = tpf_case["ids"]["nan_cadence"]
    row = report.loc[kepid]
    assert row["n_dropped_nan_flux"] == 2 and row["n_dead_pixels"] == 7
    stack = _stack(out, kepid)
    assert (stack[:, :, 0] == 0).all()        # filled after normalisation: "no change", not -1
    assert stack[:, :, 1:].any(axis=0).all()


@pytest.mark.parametrize("case,words", [
    ("no_transit", "no in-transit cadences"),
    ("truncated", "truncated"),
    ("no_ephemeris", "no ephemeris row"),
])
def test_bad_targets_get_a_reason_and_no_stack(built, tpf_case, case, words):
    out, report = built
    kepid = tpf_case["ids"][case]
    row = report.loc[kepid]
    assert row["status"] == "failed" and words in row["reason"], row["reason"]
    assert not (out / "stacks" / f"pixdiff_{kepid}.npy").exists()


def test_report_accounts_for_every_target_and_only_good_stacks_written(built, tpf_case):
    out, report = built
    assert set(report.index) == set(tpf_case["ids"].values())
    ok = set(report.index[report["status"] == "ok"])
    assert ok == {tpf_case["ids"][k] for k in ("on_target", "neighbour", "nan_quality", "nan_cadence")}
    written = {int(p.stem.split("_")[1]) for p in (out / "stacks").glob("pixdiff_*.npy")}
    assert written == ok
    assert not list(out.glob(".stacks*")) and (out / tpf.REPORT_FILE).exists()
    for kepid in ok:                          # what cv (NaN -> 0) and serving (NaN rejected) accept
        validate_stack(_stack(out, kepid), nan="reject")


def test_target_id_comes_from_the_header_not_the_file_name(built, tpf_case):
    out, report = built
    assert report.loc[tpf_case["ids"]["neighbour"], "files"] == "neighbour.fits"


def test_same_stacks_in_one_process_and_in_two_workers(built, tpf_case, tmp_path):
    out, report = built
    serial = tpf.build_stacks(tpf_case["tpfs"], tpf_case["eph"], tmp_path, n_jobs=1, progress=False)
    assert (serial.set_index("target_id")["status"] == report["status"]).all()
    for path in sorted((out / "stacks").glob("*.npy")):
        assert np.load(path).tobytes() == np.load(tmp_path / "stacks" / path.name).tobytes()


def test_entry_point_needs_tpf_dir_and_ephemeris(capsys):
    from entrypoints import prep

    assert prep.main(["--source", "tpf", "--tpf-dir", "somewhere"]) == 2
    assert "source=tpf needs ephemeris=CSV and tpf_dir=DIR" in capsys.readouterr().err


@pytest.mark.network
def test_download_fetches_a_kepler_tpf_from_mast(tmp_path):
    """Needs internet (deselected by default): Kepler-1 (KIC 11446443), long cadence.

    Skips when MAST is unreachable, for runs whose own ``-m`` overrides the default
    ``-m 'not network'`` (``make test-fast``)."""
    import socket

    try:
        socket.create_connection(("mast.stsci.edu", 443), timeout=5).close()
    except OSError as exc:
        pytest.skip(f"MAST unreachable ({exc})")
    problems = sources.download_tpfs([11446443], "koi", tmp_path)
    assert problems == {}
    files = sources.find_tpfs(tmp_path)
    assert files and fits.read_tpf(files[0]).target_id == 11446443


def test_tess_tpf_with_toi_ephemeris_in_bjd(tmp_path):
    """A TESS SPOC-layout TPF (TICID, BTJD) folded on a TOI row whose epoch is in BJD."""
    tic, t_start = 261136679, 1325.3          # BTJD
    inj = Injection((2, 3), 0.01, 1.7, t_start + 0.8, 2.0)
    (tmp_path / "tess").mkdir()
    write_tpf(tmp_path / "tess" / "tess-s1.fits", tic, inj=inj, t_start=t_start, n=400, shape=(6, 7),
              star=(2, 3), mission="TESS", quarter=1, seed=11)
    pd.DataFrame({"toi": [101.01], "tid": [tic], "pl_orbper": [inj.period_d],
                  "pl_tranmid": [inj.epoch + BTJD_REF], "pl_trandurh": [inj.duration_h]}
                 ).to_csv(tmp_path / "toi.csv", index=False)
    report = tpf.build_stacks(tmp_path / "tess", tmp_path / "toi.csv", tmp_path / "out", progress=False)
    assert report.loc[0, "status"] == "ok", report.loc[0, "reason"]
    assert report.loc[0, "quarters_used"] == "S1"
    stack = np.load(tmp_path / "out" / "stacks" / f"pixdiff_{tic}.npy")
    assert_transit_at(stack, inj, [_times(t_start)])


def test_k2_tpf_with_epic_id_in_kepid_column(tmp_path):
    """A K2 TPF (KEPLERID holds the EPIC id, CAMPAIGN instead of QUARTER, BKJD) on a KOI-layout row."""
    epic, t_start = 201367065, 1980.4
    inj = Injection((3, 3), 0.01, 3.1, t_start - 40 * 3.1 + 1.0, 2.5)
    (tmp_path / "k2").mkdir()
    write_tpf(tmp_path / "k2" / "ktwo.fits", epic, inj=inj, t_start=t_start, shape=(7, 7), star=(3, 3),
              mission="K2", quarter=1, seed=12)
    pd.DataFrame({"kepid": [epic], "koi_period": [inj.period_d], "koi_time0bk": [inj.epoch],
                  "koi_duration": [inj.duration_h]}).to_csv(tmp_path / "k2.csv", index=False)
    report = tpf.build_stacks(tmp_path / "k2", tmp_path / "k2.csv", tmp_path / "out", progress=False)
    assert report.loc[0, "status"] == "ok", report.loc[0, "reason"]
    assert report.loc[0, "quarters_used"] == "C1"
    assert_transit_at(np.load(tmp_path / "out" / "stacks" / f"pixdiff_{epic}.npy"), inj, [_times(t_start)])


def test_ephemeris_csv_errors_name_the_missing_columns(tmp_path):
    path = tmp_path / "eph.csv"
    pd.DataFrame({"kepid": [1], "koi_period": [1.0]}).to_csv(path, index=False)
    with pytest.raises(errors.TPFError, match=r"eph.csv: not an ephemeris table; KOI layout lacks "
                                           r"\['koi_time0bk', 'koi_duration'\]"):
        ephemeris.load_ephemeris(path)


def test_incomplete_ephemeris_row_is_a_target_reason(tmp_path):
    path = tmp_path / "eph.csv"
    pd.DataFrame({"kepid": [1, 2], "koi_period": [np.nan, 3.0], "koi_time0bk": [130.0, 131.0],
                  "koi_duration": [2.0, 2.0]}).to_csv(path, index=False)
    ephs, problems, layout = ephemeris.load_ephemeris(path)
    assert layout == "koi" and set(ephs) == {2} and "koi_period=nan" in problems[1]
    assert ephs[2].epoch_bjd == 131.0 + BKJD_REF and ephs[2].epoch_in(BKJD_REF) == 131.0


# ---------------------------------------------------------------- the job, cv and serving

GOOD = ("on_target", "neighbour", "nan_quality", "nan_cadence")


def test_prep_tpf_job_logs_report_and_chains_into_dataset(tpf_case, tracking_store):
    from mlflow.tracking import MlflowClient

    from pixel_cnn.jobs.prep import prep_tpf
    from pixel_cnn.io.dataset import read_dataset

    out = tracking_store / "tpf-prep"
    result = prep_tpf(str(tpf_case["tpfs"]), str(tpf_case["eph"]), str(out), labels="koi",
                           cli_params={"source": "tpf"})
    assert result["summary"]["n_targets_ok"] == 4 and result["summary"]["n_targets_failed"] == 3
    dataset, info = read_dataset(result["dataset_dir"])
    assert set(dataset.kepids) == {tpf_case["ids"][k] for k in GOOD}
    assert dataset.counts()["n_confirmed"] == 2 and info["prep_source"] == "tpf"
    for kepid in dataset.kepids:  # the dataset holds the stacks exactly as written
        np.testing.assert_array_equal(dataset.stacks[int(kepid)], _stack(out, kepid))
    run = MlflowClient().get_run(result["run_id"])
    assert run.data.metrics["n_targets_ok"] == 4 and run.data.metrics["n_dropped_nonfinite_time"] == 20
    assert run.data.tags["prep_source"] == "tpf" and run.data.tags["dataset_digest"] == dataset.digest
    logged = {a.path for a in MlflowClient().list_artifacts(result["run_id"], "tpf")}
    assert logged == {"tpf/prep_report.csv"}


@pytest.mark.slow
def test_mlflow_run_prep_tpf_then_cv_and_serve_accept_the_stacks(tpf_case, tracking_store, shared_server,
                                                                 shared_pyfunc):
    """`mlflow run . -e prep -P source=tpf ...`, cv on its dataset; the session's served model takes the stacks
    and answers as in process."""
    import subprocess

    import httpx
    import mlflow

    from pixel_cnn.jobs.cv import cv as cv_job
    from tests.support import PROJECT, VENV_BIN, store_env

    out = tracking_store / "tpf-prep"
    env = store_env(tracking_store)
    proc = subprocess.run(
        [str(VENV_BIN / "mlflow"), "run", str(PROJECT), "-e", "prep", "--env-manager", "local",
         "-P", "source=tpf", "-P", f"tpf_dir={tpf_case['tpfs']}", "-P", f"ephemeris={tpf_case['eph']}",
         "-P", f"out_dir={out}", "-P", "labels=koi", "-P", "n_jobs=1"],
        cwd=tracking_store, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"failed {tpf_case['ids']['truncated']}: trunc.fits: unreadable or truncated" in proc.stdout
    assert "prep: 4 stacks written" in proc.stdout
    # 4 synthetic targets: too few for an inner threshold split (inner_folds=0: fixed 0.5).
    result, info = cv_job(str(out / "dataset"), "seed", {"epochs": 1}, n_folds=2, seed=0, inner_folds=0)
    assert np.isfinite(result.summary["pr_auc_oof"])

    stacks = [_stack(out, tpf_case["ids"][k]) for k in GOOD]
    model = mlflow.pyfunc.load_model(info["model_uri"])
    local = model.predict(np.stack(stacks))
    assert len(local) == 4 and local["probability"].between(0, 1).all()

    local = shared_pyfunc.predict(np.stack(stacks))  # no KOI parameters: the pixel branch answers
    url = shared_server
    reply = httpx.post(f"{url}/invocations", json={"inputs": [stacks[0].tolist()]}, timeout=60)
    assert reply.status_code == 200, reply.text
    served = reply.json()["predictions"][0]["probability"]
    assert served == pytest.approx(local["probability"].iloc[0], abs=1e-6)
    with_nan = stacks[0].copy()
    with_nan[0, 0, 0] = np.nan          # what a stack with a missing pixel would be without the fill
    bad = httpx.post(f"{url}/invocations", content='{"inputs": [%s]}' % str(with_nan.tolist()).replace("nan", "NaN"),
                     headers={"Content-Type": "application/json"}, timeout=60)
    assert bad.status_code == 400 and "NaN" in bad.text


# ---------------------------------------------------------------- issue 13 item 1: the bad-file corpus
# Every per-file failure is caught at the file's boundary, named with its reason in the report
# and the output, and the good files are still written. The corpus is built here.


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory, data_dir):
    """Two good Kepler targets, one target per kind of bad file, and a target with one good and
    one bad file; real KIC ids of single-KOI stars, a KOI-layout ephemeris with a row for each."""
    from pixel_cnn.io.dataset import load_koi_table
    from tests.tpf_fixtures import corrupt, edit_data, edit_header, hdu_offset

    koi = load_koi_table(data_dir / "koi_cumulative.csv")
    single = koi.groupby("kepid").filter(lambda g: len(g) == 1).kepid.tolist()[20:40]
    root = tmp_path_factory.mktemp("bad")
    tpfs = root / "tpfs"
    tpfs.mkdir()
    P, D = 2.5, 3.0
    inj = Injection((3, 4), 0.01, P, T1 + 0.4, D)
    names = ["good_a", "good_b", "crv_no_value", "crv_dropped", "bjdref_text", "keplerid_text",
             "corrupt_primary", "corrupt_data", "truncated", "empty_aperture", "all_flagged",
             "nan_time", "no_pixels", "mixed"]
    ids = dict(zip(names, single))
    files = {}
    for i, case in enumerate(names):
        shape = dict(shape=(0, 0), star=(0, 0)) if case == "no_pixels" else {}   # a 0 x 0 pixel image
        files[case] = write_tpf(tpfs / f"{case}.fits", ids[case], inj=None if shape else inj, t_start=T1,
                                seed=20 + i, **shape)
    # a second quarter of "mixed" whose pixel-grid keywords have no value
    files["mixed_bad"] = write_tpf(tpfs / "mixed_q6_bad.fits", ids["mixed"], inj=inj, t_start=T5, quarter=6, seed=40)
    edit_header(files["crv_no_value"], 1, _1CRV5P=None, _2CRV5P=None)   # the reported file
    edit_header(files["mixed_bad"], 1, _1CRV5P=None, _2CRV5P=None)
    edit_header(files["crv_dropped"], 1, drop=("1CRV5P", "2CRV5P"))
    edit_header(files["bjdref_text"], 1, BJDREFI="unknown")
    edit_header(files["keplerid_text"], 0, KEPLERID="K-123")
    corrupt(files["corrupt_primary"], 0)
    corrupt(files["corrupt_data"], hdu_offset(files["corrupt_data"], 1))
    truncate(files["truncated"], 0.6)
    edit_data(files["empty_aperture"], aperture=0)
    edit_data(files["all_flagged"], quality=1)                 # AttitudeTweak: in the default bitmask
    edit_data(files["nan_time"], time=np.nan)
    pd.DataFrame({"kepid": [ids[c] for c in names], "kepoi_name": [f"K{9000 + i}.01" for i in range(len(names))],
                  "koi_period": P, "koi_time0bk": inj.epoch, "koi_duration": D}
                 ).to_csv(root / "ephemeris.csv", index=False)
    return {"root": root, "tpfs": tpfs, "eph": root / "ephemeris.csv", "ids": ids, "inj": inj}


#: kind of bad file -> words its reason must hold (after the file name)
BAD_FILES = {
    "crv_no_value": "header keyword 1CRV5P (CCD column of the pixel grid) has no value",
    "crv_dropped": "header keyword 1CRV5P (CCD column of the pixel grid) is missing",
    "bjdref_text": "header keyword BJDREFI (integer part of the BJD reference) = 'unknown' is not an integer",
    "corrupt_data": "unreadable or truncated FITS file",
    "truncated": "unreadable or truncated FITS file",
    "empty_aperture": "empty aperture: the APERTURE image has no collected pixel",
    "all_flagged": "no cadences left after the quality mask: of 400, 400 flagged",
    "nan_time": "TIME has no finite value (NaN in all 400 cadences)",
    "no_pixels": "empty aperture: the FLUX image has no pixel (shape (0, 0))",
}
#: files whose primary header gives no target id: reported by file name, without a target id
NO_ID_FILES = {"keplerid_text": "header KEPLERID='K-123' is not an integer id",
               "corrupt_primary": "unreadable FITS header"}


@pytest.fixture(scope="module")
def bad_built(bad_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad-out")
    report = tpf.build_stacks(bad_corpus["tpfs"], bad_corpus["eph"], out, n_jobs=2, progress=False)
    return out, report


def test_bad_tpf_without_pixel_grid_keywords_does_not_stop_prep(bad_built, bad_corpus):
    """Issue 13 item 1 regression: 1CRV5P/2CRV5P without a value made read_tpf raise
    ``TypeError: int() argument must be ... not 'NoneType'`` and the whole run wrote nothing."""
    out, report = bad_built
    rows = report.set_index("target_id")
    ids = bad_corpus["ids"]
    row = rows.loc[ids["crv_no_value"]]
    assert row["status"] == "failed" and row["reason"].startswith("crv_no_value.fits: header keyword 1CRV5P")
    for good in ("good_a", "good_b", "mixed"):
        assert rows.loc[ids[good], "status"] == "ok", rows.loc[ids[good], "reason"]
        stack = np.load(out / "stacks" / f"pixdiff_{ids[good]}.npy")
        assert_transit_at(stack, bad_corpus["inj"], [_times(T1)])


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_every_bad_file_is_reported_with_its_name_and_reason(bad_built, bad_corpus, case):
    out, report = bad_built
    kepid = bad_corpus["ids"][case]
    row = report.set_index("target_id").loc[kepid]
    assert row["status"] == "failed"
    assert row["reason"].startswith(f"{case}.fits: ") and BAD_FILES[case] in row["reason"], row["reason"]
    assert not (out / "stacks" / f"pixdiff_{kepid}.npy").exists()


@pytest.mark.parametrize("case", sorted(NO_ID_FILES))
def test_file_without_a_readable_target_id_is_reported_by_name(bad_built, case):
    out, report = bad_built
    row = report[report["files"] == f"{case}.fits"]
    assert len(row) == 1 and row["target_id"].isna().all() and (row["status"] == "failed").all()
    assert NO_ID_FILES[case] in row["reason"].iloc[0] and row["reason"].iloc[0].startswith(f"{case}.fits: ")


def test_bad_quarter_left_out_and_the_good_quarter_of_the_target_still_used(bad_built, bad_corpus):
    out, report = bad_built
    row = report.set_index("target_id").loc[bad_corpus["ids"]["mixed"]]
    assert row["status"] == "ok" and row["quarters_used"] == "Q5"
    assert row["files_unreadable"].startswith("mixed_q6_bad.fits: header keyword 1CRV5P")
    assert row["n_cadences"] == N1


def test_report_csv_names_every_bad_file_and_only_good_stacks_written(bad_built, bad_corpus):
    out, _ = bad_built
    csv = pd.read_csv(out / tpf.REPORT_FILE)
    text = " ".join(csv["reason"].fillna("").tolist() + csv["files_unreadable"].fillna("").tolist())
    for case in list(BAD_FILES) + list(NO_ID_FILES):
        assert f"{case}.fits: " in text, case
    assert "mixed_q6_bad.fits: " in text
    ids = bad_corpus["ids"]
    written = {int(p.stem.split("_")[1]) for p in (out / "stacks").glob("pixdiff_*.npy")}
    assert written == {ids["good_a"], ids["good_b"], ids["mixed"]}


def test_prep_entry_point_prints_each_bad_file_and_keeps_its_exit_status(bad_corpus, tracking_store, capsys):
    """`prep -P source=tpf` on the corpus: exit 0 (stacks written), every bad file named with its
    reason on stdout; with strict=true exit 1 (README, "prep's exit status")."""
    from entrypoints import prep

    args = ["--source", "tpf", "--tpf-dir", str(bad_corpus["tpfs"]), "--ephemeris", str(bad_corpus["eph"]),
            "--labels", "koi", "--out-dir", str(tracking_store / "bad-prep")]
    assert prep.main(args) == 0
    printed = capsys.readouterr().out
    ids = bad_corpus["ids"]
    for case, words in BAD_FILES.items():
        assert f"failed {ids[case]}: {case}.fits: {words}" in printed, case
    for case, words in NO_ID_FILES.items():
        assert f"failed {case}.fits: {case}.fits: " in printed and words in printed, case
    assert f"skipped file of {ids['mixed']}: mixed_q6_bad.fits: header keyword 1CRV5P" in printed
    assert "prep: 3 stacks written" in printed
    assert prep.main(args + ["--strict", "true"]) == 1


# ---------------------------------------------------------------- issue 13 item 2: the epoch's time system
# Injected transits whose epoch is written in BJD, BKJD or BTJD; the declared system (koi_time0bk:
# BKJD, pl_tranmid: BJD) is checked against the TPF's time range and BJDREFI/BJDREFF.

KEPLER_EPOCH = T1 + 0.4                                   # BKJD of the injected transit
TESS_START = 1325.3                                       # BTJD, sector 1
TESS_EPOCH = TESS_START + 0.8
IN_SYSTEM = {  # the injected epoch written in each system: BJD, BKJD = BJD - 2454833, BTJD = BJD - 2457000
    "kepler": {"BJD": KEPLER_EPOCH + BKJD_REF, "BKJD": KEPLER_EPOCH, "BTJD": KEPLER_EPOCH + BKJD_REF - BTJD_REF},
    "tess": {"BJD": TESS_EPOCH + BTJD_REF, "BKJD": TESS_EPOCH + BTJD_REF - BKJD_REF, "BTJD": TESS_EPOCH},
}


@pytest.fixture(scope="module")
def epoch_systems(tmp_path_factory):
    """One Kepler TPF per system in a KOI-layout CSV (+ one epoch that fits no system), one TESS TPF
    per system in a TOI-layout CSV; build_stacks run once on each."""
    root = tmp_path_factory.mktemp("epochs")
    out = {}
    for mission, layout in (("kepler", "koi"), ("tess", "toi")):
        folder = root / mission
        folder.mkdir()
        rows = []
        for i, (system, value) in enumerate(IN_SYSTEM[mission].items()):
            target = (8_000_001 if mission == "kepler" else 300_000_001) + i
            if mission == "kepler":
                inj = Injection((3, 4), 0.01, 2.5, KEPLER_EPOCH, 3.0)
                write_tpf(folder / f"{system}.fits", target, inj=inj, t_start=T1, seed=50 + i)
            else:
                inj = Injection((2, 3), 0.01, 1.7, TESS_EPOCH, 2.0)
                write_tpf(folder / f"{system}.fits", target, inj=inj, t_start=TESS_START, shape=(6, 7),
                          star=(2, 3), mission="TESS", quarter=1, seed=60 + i)
            rows.append((target, f"{i + 1}01.01", system, inj.period_d, value, inj.duration_h))
        if mission == "kepler":                           # 1e6 d: no system puts it near the quarter
            write_tpf(folder / "nowhere.fits", 8_000_009, inj=None, t_start=T1, seed=59)
            rows.append((8_000_009, "909.01", "none", 2.5, 1.0e6, 3.0))
        cols = (["kepid", "kepoi_name", "written_in", "koi_period", "koi_time0bk", "koi_duration"] if layout == "koi"
                else ["tid", "toi", "written_in", "pl_orbper", "pl_tranmid", "pl_trandurh"])
        table = pd.DataFrame(rows, columns=cols)
        table.to_csv(root / f"{mission}.csv", index=False)
        report = tpf.build_stacks(folder, root / f"{mission}.csv", root / f"{mission}-out", progress=False)
        out[mission] = (root / f"{mission}-out", report.set_index("target_id"), table.set_index(cols[0]))
    return out


@pytest.mark.parametrize("mission", ["kepler", "tess"])
@pytest.mark.parametrize("system", ["BJD", "BKJD", "BTJD"])
def test_epoch_in_any_time_system_folds_the_transit_into_bins_0_and_31(epoch_systems, mission, system):
    out, report, table = epoch_systems[mission]
    target = int(table.index[table["written_in"] == system][0])
    row = report.loc[target]
    assert row["status"] == "ok", row["reason"]
    declared = "BKJD" if mission == "kepler" else "BJD"
    assert row["epoch_system"] == system and row["epoch_declared"] == declared
    assert (row["epoch_converted_from"] == declared) == (system != declared)
    if system != declared:
        assert f"given as {declared} read as {system}" in row["epoch_note"]
    stack = np.load(out / "stacks" / f"pixdiff_{target}.npy")
    if mission == "kepler":
        inj, times = Injection((3, 4), 0.01, 2.5, KEPLER_EPOCH, 3.0), [_times(T1)]
    else:
        inj, times = Injection((2, 3), 0.01, 1.7, TESS_EPOCH, 2.0), [_times(TESS_START)]
    assert sorted(expected_transit_bins(inj)) == [0, 31]
    assert_transit_at(stack, inj, times)


def test_bjd_epoch_in_koi_time0bk_is_converted_not_folded_silently(epoch_systems):
    """Issue 13 item 2 regression: koi_time0bk = 2454964.9 (BJD) was taken as BKJD; the injected
    1% transit read 0.0002 deep (issue) and its dip fell in out-of-transit bins (on this TPF
    before the fix: -0.0007 in bins 0/31, the 1% dip in bin 25)."""
    out, report, table = epoch_systems["kepler"]
    target = int(table.index[table["written_in"] == "BJD"][0])
    stack = np.load(out / "stacks" / f"pixdiff_{target}.npy")
    depth = -stack[[0, 31], 3, 4].mean()
    assert abs(depth - 0.01) < 0.001, depth
    assert report.loc[target, "epoch_bjd"] == pytest.approx(KEPLER_EPOCH + BKJD_REF)


def test_epoch_fitting_no_time_system_refuses_the_target_naming_epoch_and_range(epoch_systems):
    out, report, _ = epoch_systems["kepler"]
    row = report.loc[8_000_009]
    assert row["status"] == "failed" and not (out / "stacks" / "pixdiff_8000009.npy").exists()
    t_last = T1 + (N1 - 1) * CADENCE_D
    assert row["reason"].startswith("target 8000009 (909.01): epoch 1000000.0 (declared BKJD) fits no time system")
    assert f"the TPF's time range {T1:.3f}-{t_last:.3f} BKJD" in row["reason"]


def test_converted_epoch_is_printed_and_in_the_report_artifact(epoch_systems, tracking_store, capsys):
    """The prep output says which epochs were converted; the report logged to MLflow has the columns."""
    from mlflow.tracking import MlflowClient

    from entrypoints import prep

    folder = epoch_systems["tess"][0].parent
    assert prep.main(["--source", "tpf", "--tpf-dir", str(folder / "tess"), "--ephemeris", str(folder / "tess.csv"),
                      "--out-dir", str(tracking_store / "tess-prep")]) == 0
    printed = capsys.readouterr().out
    _, _, table = epoch_systems["tess"]
    for system in ("BKJD", "BTJD"):
        target = int(table.index[table["written_in"] == system][0])
        assert f"converted epoch of {target} ({int(target) - 300_000_000}01.01): epoch " in printed
        assert f"given as BJD read as {system}" in printed
    run = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("pixel-cnn-prep").experiment_id])[0]
    local = MlflowClient().download_artifacts(run.info.run_id, "tpf/prep_report.csv", str(tracking_store))
    logged = pd.read_csv(local).set_index("target_id")
    assert logged["epoch_converted_from"].fillna("").tolist().count("BJD") == 2
    assert set(logged["epoch_system"]) == {"BJD", "BKJD", "BTJD"}


def test_summary_counts_bad_files_and_converted_epochs(bad_built, epoch_systems):
    _, report = bad_built
    # 8 failed targets with one bad file each, 2 files without a target id, 1 bad quarter of "mixed"
    assert tpf.stacks_summary(report)["n_files_bad"] == len(BAD_FILES) + len(NO_ID_FILES) + 1
    for mission in ("kepler", "tess"):
        _, rep, _ = epoch_systems[mission]
        assert tpf.stacks_summary(rep.reset_index())["n_epochs_converted"] == 2
