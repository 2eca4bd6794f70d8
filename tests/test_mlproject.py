"""MLproject: every entry point's parameters are used by its command; defaults match the code."""

from __future__ import annotations

from pathlib import Path

from pixel_cnn.branches.vetters import CV_DEFAULT

PROJECT = Path(__file__).resolve().parents[1]


def test_mlproject_defaults_and_every_parameter_used():
    import yaml

    project = yaml.safe_load((PROJECT / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    entry_points = project["entry_points"]
    assert entry_points["cv"]["parameters"]["preset"]["default"] == CV_DEFAULT
    assert entry_points["bench_quality"]["parameters"]["presets"]["default"] == "seed,phase,phase2,tabular,fusion"
    for name, entry in entry_points.items():
        for param in entry.get("parameters", {}):
            assert "{" + param + "}" in entry["command"], f"{name}: {param} unused"
