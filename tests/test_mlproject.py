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


def test_make_refuses_an_unknown_run_parameter_before_anything_runs(tmp_path):
    """`make cv CV_ARGS="-P presett=..."`: refused by name, with the close parameter, before prep or any run."""
    import os
    import subprocess

    db = tmp_path / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    proc = subprocess.run(["make", "--no-print-directory", "cv", "CV_ARGS=-P presett=phase2 -P seed=3"],
                          cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0
    assert "CV_ARGS: 'presett' is not a parameter of the cv entry point (did you mean 'preset'?)" in proc.stderr
    assert "mlflow run" not in proc.stdout and not db.exists()  # no prep, no run, not even a store
    from entrypoints.project_args import main, read_args

    assert read_args(["-P", "a=1", "-Pb=2", "--param-list", "c=3", "--experiment-name", "x"]) == (["a", "b", "c"], [])
    assert main(["prep", "PREP_ARGS", "-P", "labels=koi", "-P", "source=tpf"]) == 0
    assert main(["nope", "X_ARGS"]) == 2
    # malformed: a bare key=value (no -P) and a -P without a value are refused too
    assert read_args(["preset=phase2"])[1] == ["'preset=phase2' is not an option of mlflow run (did you mean -P preset=phase2?)"]
    assert read_args(["-P", "preset"])[1] == ["-P 'preset': a parameter is given as -P key=value"]
    assert read_args(["--experiment-name", "x=y", "-P", "seed=1"]) == (["seed"], [])
    assert main(["cv", "CV_ARGS", "preset=phase2"]) == 2
