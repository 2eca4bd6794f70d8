"""Security defaults and reproducibility: loopback binds, weights that cannot run code, seeds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from pixel_cnn.vetter.ensemble import Ensemble, save_members
from pixel_cnn.vetter.networks import get_preset
from tests.support import PROJECT

SERVER_COMMANDS = re.compile(r"mlflow (ui|server|models serve)|uvicorn|gunicorn|http\.server|weed ")


def test_every_server_the_makefile_starts_binds_host_which_defaults_to_loopback():
    files = [PROJECT / "Makefile", *sorted((PROJECT / "mk").glob("*.mk"))]
    text = "\n".join(f.read_text() for f in files)
    assert re.search(r"^HOST \?= 127\.0\.0\.1$", text, re.M)
    servers = [ln for ln in text.splitlines() if SERVER_COMMANDS.search(ln) and not ln.lstrip().startswith("#")]
    assert servers, "no server command found"
    for line in servers:
        assert "$(HOST)" in line or "127.0.0.1" in line, f"server without a loopback/HOST bind: {line.strip()}"
        assert "0.0.0.0" not in line


class _Tripwire:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_weights_with_a_pickled_object_are_refused_and_not_run(tmp_path):
    preset = get_preset("seed")
    from pixel_cnn.vetter.networks import build_model

    artifacts = save_members(tmp_path, preset, [build_model(preset).state_dict()], 0.5, {})
    assert Ensemble.from_files(artifacts["config"], artifacts["weights"]).members  # the real format loads
    marker = tmp_path / "EXECUTED"
    torch.save([_Tripwire(marker)], artifacts["weights"])
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        Ensemble.from_files(artifacts["config"], artifacts["weights"])
    assert not marker.exists()


def test_load_generator_refuses_non_loopback_targets():
    from ops.loadtest import run_load

    with pytest.raises(ValueError, match="not a loopback address"):
        run_load("http://10.1.2.3:5001", [b"{}"], n_requests=1, concurrency=1)
