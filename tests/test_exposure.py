"""The rule "nothing open beyond loopback", checked where it is decided (no process is started)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ops import dask_tls, services
from ops.exposure import ExposureError, is_loopback
from tests.support import PROJECT


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.4", False),
    ("192.168.1.20", False), ("fe80::1", False), ("mlflow.example.org", False), ("127.0.0.1.nip.io", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_open_tracking_server_is_refused_beyond_loopback(tmp_path):
    for host in ("0.0.0.0", "10.0.0.4", "::"):
        with pytest.raises(services.ServiceError, match=f"listen on '{host}', beyond loopback.*refused"):
            services.Config(root=tmp_path, host=host, auth="none")
        assert services.Config(root=tmp_path, host=host).auth == "basic"  # the default authenticates
    assert services.Config(root=tmp_path, host="127.0.0.1", auth="none").auth == "none"
    with pytest.raises(services.ServiceError, match="auth 'open'"):
        services.Config(root=tmp_path, auth="open")
    # the command line refuses before anything is created or started
    root = tmp_path / "stack"
    proc = subprocess.run([sys.executable, "-m", "entrypoints.services", "start", "--dir", str(root),
                           "--host", "0.0.0.0", "--auth", "none"], cwd=PROJECT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "beyond loopback" in proc.stderr and "drop AUTH=none" in proc.stderr
    assert not root.exists()


def test_dask_without_tls_is_refused_beyond_loopback():
    dask_tls.require_tls("127.0.0.1", tls=False)  # loopback: allowed
    dask_tls.require_tls("0.0.0.0", tls=True)
    for host in ("0.0.0.0", "10.0.0.4", "node1"):
        with pytest.raises(ExposureError, match="dask scheduler would listen .* without authentication"):
            dask_tls.require_tls(host, tls=False)
    assert dask_tls.address("10.0.0.4", 8786) == "tls://10.0.0.4:8786"
    assert dask_tls.address("::1", 8786, tls=False) == "tcp://[::1]:8786"


def test_seaweedfs_stays_on_loopback_when_the_stack_is_shared(tmp_path):
    """SeaweedFS's filer/master/volume ports are unauthenticated: beyond loopback only the tracking server is."""
    shared = services.Config(root=tmp_path, host="0.0.0.0")  # proxied: clients never talk to S3
    assert shared.s3_host == "127.0.0.1"
    assert services.Config(root=tmp_path, host="127.0.0.1").s3_host == "127.0.0.1"
    assert services.Config(root=tmp_path, host="::1", mode="direct").s3_host == "::1"
    with pytest.raises(services.ServiceError, match="SeaweedFS .* beyond loopback.*ARTIFACTS=proxied"):
        services.Config(root=tmp_path, host="10.0.0.4", mode="direct")
