"""A real TLS Dask cluster (`make dask DASK_TLS=on`: `dask scheduler` + one `dask worker` on 127.0.0.1, stopped by PID).

Certificates from ``ops.dask_tls.ensure_certificates``. A client without the cluster's
certificate is refused by the scheduler (TLS handshake: no certificate, or one from another
CA); with it, the prep step that reads and validates the real stacks runs on the worker.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ops import dask_tls
from tests.support import PROJECT, VENV_BIN

pytestmark = pytest.mark.slow


def _log_says(log: Path, text: str, timeout: float = 10) -> bool:
    """True once the process log contains ``text`` (case-insensitive)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text.lower() in log.read_text(errors="replace").lower():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A TLS cluster on 127.0.0.1 started in process by ``ops.dask_cluster.start`` (what `make dask DASK_TLS=on`
    runs; one worker, the stack's own certificates under ``tls/``), stopped by PID with ``dask_cluster.stop``
    (what `make dask-stop` runs); yields its address, files, folder, state and scheduler log."""
    from ops import dask_cluster

    root = tmp_path_factory.mktemp("dask-tls")
    cfg = dask_cluster.ClusterConfig(root=root, n_workers=1, scheduler_port=0, dashboard_port=0, tls=True)
    state = dask_cluster.start(cfg)
    try:
        assert state["tls"] and state["address"].startswith("tls://127.0.0.1:")
        yield {"address": state["address"], "port": state["ports"]["scheduler"], "files": dask_tls.files(root / "tls"),
               "root": root, "state": state, "logs": {"scheduler": root / "logs" / "scheduler.log"}}
    finally:
        dask_cluster.stop(root)
    assert not any(dask_cluster.status(root).values())


def test_beyond_loopback_without_tls_is_refused_before_anything_starts(tmp_path):
    from ops import dask_cluster
    from ops.services import ServiceError

    with pytest.raises(ServiceError, match="beyond loopback"):
        dask_cluster.start(dask_cluster.ClusterConfig(root=tmp_path / "c", host="0.0.0.0", tls=False))
    assert not (tmp_path / "c").exists()


def test_the_env_file_connects_a_job_with_the_client_certificate(tls_cluster):
    """`. .services/dask/env` then a job: its `Client(address)` reads Dask's TLS settings from the
    environment and joins; without them the same call is refused."""
    exports = dict(line.removeprefix("export ").split("=", 1)
                   for line in (tls_cluster["root"] / "env").read_text().splitlines() if line.startswith("export "))
    assert exports["PIXEL_CNN_SCHEDULER"] == tls_cluster["address"]
    script = ("import os; from distributed import Client\n"
              "with Client(os.environ['PIXEL_CNN_SCHEDULER'], timeout=10) as c:\n"
              "    c.wait_for_workers(1, timeout=60); print(len(c.scheduler_info()['workers']))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    ok = subprocess.run([str(VENV_BIN / "python"), "-c", script], env={**clean, **exports},
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == "1", ok.stderr[-2000:]
    bare = {**clean, "PIXEL_CNN_SCHEDULER": exports["PIXEL_CNN_SCHEDULER"]}
    refused = subprocess.run([str(VENV_BIN / "python"), "-c", script], env=bare, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0


def test_client_without_certificate_is_refused(tls_cluster):
    from distributed import Client

    port = tls_cluster["port"]
    # A TLS client that trusts the cluster's CA but presents no certificate: the scheduler
    # (ssl.CERT_REQUIRED) aborts the handshake; under TLS 1.3 the alert arrives on first read.
    ctx = ssl.create_default_context(cafile=str(tls_cluster["files"].ca_cert))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
            with ctx.wrap_socket(raw) as conn:
                conn.sendall(b"\x00" * 8)
                if conn.recv(1) == b"":
                    raise ConnectionResetError("closed by the scheduler")
    log = tls_cluster["logs"]["scheduler"]
    assert _log_says(log, "peer did not return a certificate"), log.read_text()[-3000:]
    # A certificate from another CA (the client trusts the real CA, so only the scheduler can refuse).
    other = dask_tls.ensure_certificates(tls_cluster["root"] / "other-ca")
    from distributed.security import Security

    forged = Security(require_encryption=True, tls_ca_file=str(tls_cluster["files"].ca_cert),
                      tls_client_cert=str(other.cert("client")), tls_client_key=str(other.key("client")))
    with pytest.raises((OSError, TimeoutError)):
        Client(tls_cluster["address"], security=forged, timeout=5)
    assert _log_says(log, "certificate verify failed"), log.read_text()[-3000:]
    # Plain TCP to the TLS port: no Dask handshake either.
    with pytest.raises((OSError, TimeoutError)):
        Client(f"tcp://127.0.0.1:{port}", timeout=5)


def test_client_with_certificate_runs_the_prep_step_on_the_worker(tls_cluster, data_dir):
    """prep's per-file step (read + validate every stack) on the worker; same outcome as locally, file by file."""
    from distributed import Client, wait

    from pixel_cnn.io.dataset import DataError, load_stack

    paths = sorted(str(p) for p in (data_dir / "stacks").glob("pixdiff_*.npy"))
    assert len(paths) >= 100
    with Client(tls_cluster["address"], security=dask_tls.security(tls_cluster["files"]), timeout=30) as client:
        client.wait_for_workers(1, timeout=90)
        workers = set(client.scheduler_info()["workers"])
        assert workers and all(w.startswith("tls://127.0.0.1:") for w in workers)  # joined over TLS
        futures = client.map(load_stack, paths)
        wait(futures, timeout=300)
        where = {w for ws in client.who_has([f for f in futures if f.status == "finished"]).values() for w in ws}
        remote = [(f.result(), None) if f.status == "finished" else (None, f.exception()) for f in futures]
    assert where and where <= workers  # computed on the worker process, not in this one
    n_ok = 0
    for path, (stack, error) in zip(paths, remote):
        try:
            local = load_stack(path)
        except DataError as exc:  # the placeholder files: refused the same way there
            assert isinstance(error, DataError) and str(error) == str(exc), path
            continue
        assert error is None, f"{path}: {error}"
        np.testing.assert_array_equal(stack, local)
        n_ok += 1
    assert 0 < n_ok < len(paths)  # real stacks loaded, placeholders refused


def test_tls_files_are_private_and_reused(tls_cluster):
    files = tls_cluster["files"]
    assert files.directory.stat().st_mode & 0o777 == 0o700
    for role in dask_tls.ROLES:
        assert files.key(role).stat().st_mode & 0o777 == 0o600
    assert files.ca_key.stat().st_mode & 0o777 == 0o600
    before = {p.name: p.read_bytes() for p in files.directory.iterdir()}
    dask_tls.ensure_certificates(files.directory)  # nothing expires soon: nothing is reissued
    assert {p.name: p.read_bytes() for p in files.directory.iterdir()} == before
    # renew=True: a new CA, and every certificate reissued under it
    spare = dask_tls.ensure_certificates(files.directory.parent / "spare")
    old_ca = spare.ca_cert.read_bytes()
    dask_tls.ensure_certificates(spare.directory, renew=True)
    assert spare.ca_cert.read_bytes() != old_ca
    from cryptography import x509

    ca = x509.load_pem_x509_certificate(spare.ca_cert.read_bytes())
    for role in dask_tls.ROLES:
        x509.load_pem_x509_certificate(spare.cert(role).read_bytes()).verify_directly_issued_by(ca)


def test_the_prep_job_runs_on_the_tls_cluster_with_the_env_file(tls_cluster, data_dir, tmp_path):
    """`. .services/dask/env` then `python -m entrypoints.prep --source tpf --scheduler $PIXEL_CNN_SCHEDULER`:
    a real TPF (Kepler-682, 500 cadences) folded on the TLS cluster's worker; the run's engine is dask."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from tests.support import store_env

    exports = dict(line.removeprefix("export ").split("=", 1)
                   for line in (tls_cluster["root"] / "env").read_text().splitlines() if line.startswith("export "))
    tpfs = tmp_path / "tpfs"
    tpfs.mkdir()
    name = "kplr012644822-q12-500cad.fits"
    (tpfs / name).write_bytes((data_dir.parent / "kepler-tpf" / "partial-quarters" / name).read_bytes())
    koi = pd.read_csv(data_dir / "koi_cumulative.csv", comment="#", low_memory=False)
    koi[koi["kepid"] == 12644822].to_csv(tmp_path / "ephemeris.csv", index=False)
    env = {**{k: v for k, v in store_env(tmp_path).items() if not k.startswith("DASK_")}, **exports,
           "PYTHONPATH": str(PROJECT)}
    proc = subprocess.run([str(VENV_BIN / "python"), "-m", "entrypoints.prep", "--source", "tpf", "--tpf-dir",
                           str(tpfs), "--ephemeris", str(tmp_path / "ephemeris.csv"), "--labels", "koi", "--out-dir",
                           str(tmp_path / "out"), "--scheduler", exports["PIXEL_CNN_SCHEDULER"]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert f"prep: engine dask (1 workers, scheduler {tls_cluster['address']})" in proc.stdout, proc.stdout[-2000:]
    assert list((tmp_path / "out").rglob("*.npy")), proc.stdout[-2000:]
    run = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).search_experiments()])[0]
    assert run.data.tags["engine"] == "dask" and run.data.tags["dask_scheduler"] == tls_cluster["address"]
