"""Catalogue scale (issue 22): prep source=tpf and batch scoring on a real Dask cluster, TPFs read from S3.

Kept fast for CI (each check once, small inputs): one cluster for the module (`make dask`: a
scheduler and 2 workers, separate processes on 127.0.0.1, stopped by PID with `make dask-stop`)
and one SeaweedFS (`weed mini`, the project's S3 server) holding a few of the real TPFs of
``../shared/data/kepler-tpf`` (one whole quarter, three partial ones), a truncated upload and an
object the reader may not read, under two prefixes:

* ``mast/``: MAST's bucket layout (``kepler/public/target_pixel_files/<KIC[:4]>/<KIC>/``), one
  target's prefix empty (missing), one target's object truncated, one target's forbidden;
* ``flat/``: the same good objects side by side, the truncated one and a forbidden one.

The driver and the workers read S3 as an identity that may list the bucket and read only the
allowed prefixes, endpoint and keys from the usual AWS environment variables. The batch scoring
test uses the session's shared registered model (conftest.py ``shared_model``).
Speed figures are in ``make bench-scale`` (bench/scale_bench.py), not here.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from ops import dask_cluster, services
from tests.support import in_store, made_up

BUCKET = "tpfs"
READER = {"accessKey": "reader-test", "secretKey": "reader-test-secret"}
ADMIN = {"accessKey": "admin-test", "secretKey": "admin-test-secret"}
#: target -> the real file (under the TPF folder) uploaded as its object; ``None``: see below
GOOD = {6922244: "kplr006922244-2009166043257_lpd-targ.fits",                # Kepler-8, whole Q1
        6804648: "partial-quarters/kplr006804648-q10-first1000cad.fits",      # K06771.01, 1,000 cadences
        12644822: "partial-quarters/kplr012644822-q12-500cad.fits",           # Kepler-682, 500 cadences
        12644769: "partial-quarters/kplr012644769-q12-500cad.fits"}           # no transit in 500 cadences
TRUNCATED = (5562784, "kplr005562784-2011271113734_lpd-targ.fits.gz")         # uploaded: half, gunzipped
FORBIDDEN = (9002278, "kplr009002278-2010174085026_lpd-targ.fits.gz")         # the reader may not read it
#: A KOI host with no TPF anywhere in the bucket (MAST layout: its prefix is empty).
MISSING_KEPID = 757450
WANTED = sorted([*GOOD, TRUNCATED[0], FORBIDDEN[0], MISSING_KEPID])


def _mast_dir(kepid: int) -> str:
    kic = f"{kepid:09d}"
    return f"mast/kepler/public/target_pixel_files/{kic[:4]}/{kic}/"


@pytest.fixture(scope="module")
def tpf_folder(data_dir) -> Path:
    return data_dir.parent / "kepler-tpf"


@pytest.fixture(scope="module")
def tpf_ephemeris(data_dir, tmp_path_factory) -> Path:
    """The real KOI table's rows of the wanted stars."""
    koi = pd.read_csv(data_dir / "koi_cumulative.csv", comment="#", low_memory=False)
    path = tmp_path_factory.mktemp("eph") / "koi_subset.csv"
    koi[koi["kepid"].isin(WANTED)].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def s3(tpf_folder):
    """`weed mini` on free loopback ports with an admin and a reader identity; the objects uploaded.

    Yields the reader's client environment (``AWS_ENDPOINT_URL``, keys); stopped by PID.
    """
    root = Path(tempfile.mkdtemp(prefix="pixel-cnn-s3-"))
    host = "127.0.0.1"
    ports = {n: services._free_port(host) for n in services.WEED_PORTS}
    grpc = {n: services._free_port(host) for n in [*services.WEED_PORTS, "s3"]}
    s3_port = services._free_port(host)
    readable = [*GOOD, TRUNCATED[0], MISSING_KEPID]  # FORBIDDEN's prefix is not in the list
    conf = root / "identities.json"
    conf.write_text(json.dumps({"identities": [
        {"name": "admin", "credentials": [ADMIN], "actions": ["Admin", "Read", "Write", "List"]},
        {"name": "reader", "credentials": [READER],
         "actions": [f"List:{BUCKET}", f"Read:{BUCKET}/flat/kplr*",
                     *(f"Read:{BUCKET}/{_mast_dir(k).rstrip('/')}*" for k in readable)]}]}))
    flags = [f"-dir={root / 'data'}", f"-ip={host}", f"-ip.bind={host}", f"-bucket={BUCKET}",
             f"-s3.port={s3_port}", f"-s3.config={conf}", "-webdav=false", "-admin.ui=false",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
             f"-s3.port.grpc={grpc['s3']}"]
    for name, port in ports.items():
        flags += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc[name]}"]
    (root / "data").mkdir()
    proc = services._spawn([str(services.venv_bin() / "weed"), "mini", *flags], root / "weed.log")
    endpoint = f"http://{host}:{s3_port}"
    try:
        admin = services.s3_client(endpoint, ADMIN["accessKey"], ADMIN["secretKey"])
        services._wait(lambda: services._bucket_ready(admin, BUCKET), 120, "SeaweedFS", root / "weed.log", proc)
        for kepid, rel in GOOD.items():
            body, name = (tpf_folder / rel).read_bytes(), Path(rel).name
            admin.put_object(Bucket=BUCKET, Key=f"flat/{name}", Body=body)
            admin.put_object(Bucket=BUCKET, Key=_mast_dir(kepid) + name, Body=body)
        whole = gzip.decompress((tpf_folder / TRUNCATED[1]).read_bytes())  # an interrupted upload: the
        name = TRUNCATED[1].removesuffix(".gz")                             # first half (header intact)
        for key in (f"flat/{name}", _mast_dir(TRUNCATED[0]) + name):
            admin.put_object(Bucket=BUCKET, Key=key, Body=whole[: len(whole) // 2])
        body = (tpf_folder / FORBIDDEN[1]).read_bytes()
        for key in (f"flat/withheld/{FORBIDDEN[1]}", _mast_dir(FORBIDDEN[0]) + FORBIDDEN[1]):
            admin.put_object(Bucket=BUCKET, Key=key, Body=body)
        yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": READER["accessKey"],
               "AWS_SECRET_ACCESS_KEY": READER["secretKey"], "AWS_DEFAULT_REGION": "us-east-1",
               "pid": proc.pid, "root": root}
    finally:
        services.stop_pid(proc.pid)
        shutil.rmtree(root, ignore_errors=True)
    assert not services._alive(proc.pid)


@pytest.fixture(scope="module")
def s3_env(s3):
    """This process reads S3 as the reader (the cluster's workers get the same variables at start)."""
    keys = [k for k in s3 if k.startswith("AWS_")]
    saved = {k: os.environ.get(k) for k in keys + ["AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"]}
    os.environ.update({k: s3[k] for k in keys})
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.environ["AWS_CONFIG_FILE"] = str(s3["root"] / "none")
    yield s3
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def cluster(s3_env):
    """`make dask DASK_WORKERS=2` on free loopback ports (state in a fresh folder); `make dask-stop` after,
    and every recorded PID checked gone."""
    root = Path(tempfile.mkdtemp(prefix="pixel-cnn-dask-"))
    with made_up("dask", "dask-stop", f"DASK_DIR={root}", root, dask_cluster.read_state,
                 "worker-0 (was running), worker-1 (was running), scheduler (was running)",
                 "DASK_WORKERS=2", "DASK_PORT=0", "DASK_DASHBOARD_PORT=0", "DASK_MEMORY_LIMIT=2GiB") as (state, up):
        state["make_stdout"], state["make_stderr"] = up.stdout, up.stderr
        yield state


def _engine(cluster):
    from pixel_cnn.io.engine import Engine

    return Engine(cluster["address"], log=lambda m: None)


@pytest.fixture(scope="module")
def joblib_reference(s3_env, tpf_ephemeris, tmp_path_factory):
    """build_stacks of the MAST-layout prefix on the joblib engine (prep's default, n_jobs=1): the bytes
    to match."""
    from pixel_cnn.io import tpf
    from pixel_cnn.io.engine import Engine

    out = tmp_path_factory.mktemp("joblib-ref")
    with Engine("", n_jobs=1) as engine:
        report = tpf.build_stacks(f"s3://{BUCKET}/mast", tpf_ephemeris, out, engine=engine, progress=False,
                                  layout="mast", targets=WANTED)
    return {"out": out, "report": report.set_index("target_id")}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "stacks").glob("*.npy"))}


# ---------------------------------------------------------------- the cluster, S3 reasons


def test_make_dask_starts_scheduler_and_workers_on_loopback(cluster):
    assert cluster["address"].startswith("tcp://127.0.0.1:")
    assert set(cluster["pids"]) == {"scheduler", "worker-0", "worker-1"}
    assert dask_cluster.status(Path(cluster["root"])) == {"scheduler": True, "worker-0": True, "worker-1": True}
    assert f"SCHEDULER={cluster['address']}" in cluster["make_stdout"]
    assert f"dashboard {cluster['dashboard']}" in cluster["make_stderr"]
    assert cluster["dashboard"].startswith("http://127.0.0.1:")
    assert httpx.get(cluster["dashboard"], timeout=10).status_code == 200  # the dashboard answers
    assert dask_cluster.n_workers_connected(cluster["address"]) == 2
    assert f"export PIXEL_CNN_SCHEDULER={cluster['address']}\n" in (Path(cluster["root"]) / "env").read_text()
    cfg = dask_cluster.ClusterConfig(root=Path(cluster["root"]), scheduler_port=0, dashboard_port=0)
    with pytest.raises(services.ServiceError, match="already running"):  # a second start in the same folder
        dask_cluster.start(cfg)


def test_s3_missing_truncated_forbidden_are_per_target_reasons(joblib_reference):
    """MAST layout on the joblib engine: every wanted target has its row; the bad ones a reason each."""
    report = joblib_reference["report"]
    assert sorted(report.index) == WANTED
    assert report.loc[MISSING_KEPID, "reason"] == f"no TPF under s3://{BUCKET}/{_mast_dir(MISSING_KEPID)}"
    truncated = report.loc[TRUNCATED[0]]
    assert truncated["status"] == "failed" and "truncated" in truncated["reason"]
    assert truncated["reason"].startswith(TRUNCATED[1].removesuffix(".gz"))
    forbidden = report.loc[FORBIDDEN[0]]
    assert forbidden["status"] == "failed" and forbidden["reason"].startswith(
        f"{FORBIDDEN[1]}: access to s3://{BUCKET}/{_mast_dir(FORBIDDEN[0])}{FORBIDDEN[1]} forbidden")
    assert report.loc[12644769, "status"] == "failed" and "no in-transit cadences" in report.loc[12644769, "reason"]
    ok = sorted(report.index[report["status"] == "ok"])
    assert ok == [6804648, 6922244, 12644822]
    assert sorted(_files(joblib_reference["out"])) == sorted(f"pixdiff_{k}.npy" for k in ok)


def test_a_missing_and_a_forbidden_object_of_one_target_leave_its_good_file_in_use(s3_env, tpf_ephemeris):
    from pixel_cnn.io.ephemeris import load_ephemeris
    from pixel_cnn.io.target import process_target

    eph, _, _ = load_ephemeris(tpf_ephemeris)
    good = f"s3://{BUCKET}/flat/{GOOD[6922244]}"
    gone = f"s3://{BUCKET}/flat/kplr006922244-2009350155506_lpd-targ.fits"
    withheld = f"s3://{BUCKET}/flat/withheld/{FORBIDDEN[1]}"  # exists, not readable
    result = process_target(6922244, [good, gone, withheld], eph[6922244])
    assert result.report["status"] == "ok" and result.stack is not None
    reasons = result.report["files_unreadable"].split("; ")
    assert f"kplr006922244-2009350155506_lpd-targ.fits: no such object {gone} (missing)" in reasons
    assert any(r.startswith(f"{FORBIDDEN[1]}: access to {withheld} forbidden") for r in reasons), reasons


# ---------------------------------------------------------------- prep source=tpf on the cluster


def test_a_worker_killed_mid_job_every_target_accounted_for_same_bytes_as_joblib(cluster, joblib_reference,
                                                                                 tpf_ephemeris, tmp_path):
    """SIGKILL a worker process while it holds a task; its nanny restarts it, the scheduler re-runs the task.

    The job still gives a row for every target and exactly the joblib run's bytes (stacks and report);
    nothing half-written (the driver alone writes, into a folder swapped in whole). Runs first on the
    cluster, while the workers are cold (their first task also imports the TPF code: easy to catch).
    """
    from pixel_cnn.io import tpf

    killed = {}

    def kill_when_busy(engine):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            processing = engine.client.processing()
            busy = [w for w, keys in processing.items() if keys]
            if busy:
                pid = engine.client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, n_processing=len(processing[busy[0]]))
                return
            time.sleep(0.02)

    with _engine(cluster) as engine:
        assert engine.name == "dask" and engine.n_workers == 2
        watcher = threading.Thread(target=kill_when_busy, args=(engine,), daemon=True)
        watcher.start()
        report = tpf.build_stacks(f"s3://{BUCKET}/mast", tpf_ephemeris, tmp_path, engine=engine, progress=False,
                                  layout="mast", targets=WANTED)
        watcher.join(timeout=5)
    assert killed and killed["n_processing"] >= 1, "no worker was killed while it held a task"
    assert not services._alive(killed["pid"])
    assert sorted(report["target_id"]) == WANTED  # every target accounted for
    ref = joblib_reference["out"]
    assert _files(tmp_path) == _files(ref)
    assert (tmp_path / tpf.REPORT_FILE).read_bytes() == (ref / tpf.REPORT_FILE).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [tpf.FLUX_IMAGES, "prep_report.csv", "stacks"]  # no temporary
    deadline = time.monotonic() + 60  # the nanny brought a worker back: the cluster has 2 again
    while dask_cluster.n_workers_connected(cluster["address"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert dask_cluster.n_workers_connected(cluster["address"]) == 2


def test_prep_entry_point_flat_s3_prefix_on_dask_logs_engine_and_counts_from_the_driver(
        cluster, joblib_reference, tpf_ephemeris, shared_model, tmp_path, capsys):
    """`prep source=tpf tpf_dir=s3://.../flat scheduler=...`: headers read on the workers, the stacks the
    joblib run's bytes, bad objects as reasons, one MLflow run (the driver's) with the engine and counts.

    Logged into the session's shared store (its schema already made: a fresh store costs seconds)."""
    from mlflow.tracking import MlflowClient

    from entrypoints import prep

    out = tmp_path / "out"
    with in_store(shared_model["root"]):
        client = MlflowClient()

        def every_run():
            return client.search_runs([e.experiment_id for e in client.search_experiments()])

        before = {r.info.run_id for r in every_run()}
        rc = prep.main(["--source", "tpf", "--tpf-dir", f"s3://{BUCKET}/flat", "--ephemeris", str(tpf_ephemeris),
                        "--labels", "koi", "--out-dir", str(out), "--scheduler", cluster["address"]])
        new = [r for r in every_run() if r.info.run_id not in before]
        experiments = {client.get_experiment(r.info.experiment_id).name for r in new}
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    assert f"Dask: scheduler {cluster['address']}, 2 workers; dashboard http://127.0.0.1:" in captured.err
    assert f"prep: engine dask (2 workers, scheduler {cluster['address']})" in captured.out
    truncated = TRUNCATED[1].removesuffix(".gz")
    assert f"failed {TRUNCATED[0]}: {truncated}" in captured.out and "truncated" in captured.out
    assert f"failed {FORBIDDEN[1]}: {FORBIDDEN[1]}: access to s3://{BUCKET}/flat/withheld/{FORBIDDEN[1]} forbidden" \
        in captured.out
    assert _files(out) == _files(joblib_reference["out"])  # the same stacks, byte for byte
    assert len(new) == 1  # one run, from the driver; the workers log nothing
    assert experiments == {"pixel-cnn-prep"}
    run = new[0]
    assert run.data.tags["engine"] == "dask" and run.data.tags["dask_scheduler"] == cluster["address"]
    assert run.data.tags["dask_dashboard"].startswith("http://127.0.0.1:")
    assert run.data.metrics["n_workers"] == 2
    assert run.data.metrics["n_targets_ok"] == 3 and run.data.metrics["n_targets_failed"] == 3


# ---------------------------------------------------------------- batch scoring of a catalogue


def test_catalogue_scoring_on_2_workers_same_bytes_as_one_process_model_loaded_once_per_worker(
        cluster, shared_model, data_dir, tmp_path, monkeypatch, capsys):
    """The shared registered model (fusion: KOI parameters looked up per star) on the cluster's 2 workers,
    library and command line, against one process."""
    import torch

    from pixel_cnn import predict, scoring
    from pixel_cnn.predict import load_koi
    from pixel_cnn.tracking.registry import load, pinned_uri

    stacks = tmp_path / "stacks"  # 20 real files, placeholders among them
    stacks.mkdir()
    picked = sorted((data_dir / "stacks").glob("pixdiff_[0-9]*.npy"))[:19] + [data_dir / "stacks" / "pixdiff_13261401.npy"]
    for path in picked:
        shutil.copyfile(path, stacks / path.name)
    n_placeholders = sum(np.load(p).shape[0] != 32 for p in picked)
    sheet_file = [stacks / next(p.name for p in picked if np.load(p).shape[0] == 32)]
    koi = load_koi(data_dir / "koi_cumulative.csv")  # as the command line reads it (DV diagnostics joined)
    store = shared_model["env"]["MLFLOW_TRACKING_URI"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the workers (score_chunk): the same arithmetic
    try:
        with in_store(shared_model["root"]):
            uri = pinned_uri(shared_model["uri"])
            assert uri.startswith("models:/pixel-cnn/")
            scorer = scoring.ModelScorer(load(uri), koi, label="L")
            serial = scoring.score_paths([stacks], scorer, progress=False, chunk=4)
            serial64 = scoring.score_paths([stacks], scorer, progress=False)  # the command line's chunks
            one_sheet = scoring.score_paths(sheet_file, scorer, progress=False, sheets_dir=tmp_path / "sheets-1")
            with _engine(cluster) as engine:
                seen = []
                by_dask = scoring.score_catalogue([stacks], uri, engine, koi, progress=False, tracking_uri=store,
                                                  on_row=lambda r: seen.append(r["file"]), chunk=4, label="L")
                sheets_dask = scoring.score_catalogue(sheet_file, uri, engine, koi, progress=False,
                                                      tracking_uri=store, sheets_dir=tmp_path / "sheets-dask",
                                                      label="L")
    finally:
        torch.set_num_threads(threads)
    written = {name: scoring.write_table(report.table, tmp_path / f"{name}.csv").read_bytes()
               for name, report in (("serial", serial), ("dask", by_dask), ("serial64", serial64))}
    assert written["serial"] == written["dask"]
    assert serial.n_skipped == n_placeholders >= 1 and serial.n_scored == 20 - n_placeholders  # each with its reason
    assert serial.table.loc[serial.table["status"] == "skipped", "reason"].str.contains("1 phase bins").all()
    assert serial.table["koi"].astype(str).str.startswith("K").sum() >= 1  # KOI parameters were used
    assert seen == list(by_dask.table["file"])  # rows handed on in file order
    assert len(by_dask.workers) == 2 and set(by_dask.workers.values()) == {1}  # both workers, one load each
    assert [p.name for p in sheets_dask.sheets] == [p.name for p in one_sheet.sheets] == [f"{sheet_file[0].stem}.png"]
    assert sheets_dask.sheets[0].read_bytes() == one_sheet.sheets[0].read_bytes()  # drawn on a worker, same PNG
    # the command line on the cluster: the same table; exit 1 (the placeholders are skipped)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("PIXEL_CNN_DATA", str(data_dir))
    rc = predict.main([str(stacks), "--model-uri", shared_model["uri"], "--tracking-uri", store,
                       "--scheduler", cluster["address"], "--quiet", "--out", str(tmp_path / "cli.csv")])
    err = capsys.readouterr().err
    assert rc == 1, err[-2000:]
    assert "scoring on dask (2 workers)" in err and "dashboard http://127.0.0.1:" in err
    assert (tmp_path / "cli.csv").read_bytes() == written["serial64"]
