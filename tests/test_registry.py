"""Issue 21: the champion never moves by accident, every model answers the same request, `mlflow ui`
opens on the runs, the registry says what each version is.

One throwaway store: a tiny phase2 cv registers version 1 (no champion yet: @champion), then the
README's comparison command (another preset, `alias=auto` as `mlflow run` passes it) registers
version 2 as @challenger; `make promote`'s gate evaluates both with `mlflow.models.evaluate`.
"""

from __future__ import annotations

import re

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.support import in_store, served_model

JSON = {"Content-Type": "application/json"}
KOI = {"koi_period": 9.91724268, "koi_duration": 3.2241, "koi_depth": 457.9, "koi_model_snr": 38.8}


def _alias(client, alias: str) -> str:
    """The version (as a string: MLflow 3.17 returns an int) that ``pixel-cnn@alias`` points at."""
    return str(client.get_model_version_by_alias("pixel-cnn", alias).version)


def _cv_argv(dataset, preset, seed, alias="auto"):
    """The argv MLproject's `cv` command gives entrypoints.cv for `-P preset=...` (overrides not given = 'preset')."""
    return ["--dataset", str(dataset), "--preset", preset, "--n-folds", "2", "--seed", str(seed),
            "--repeats", "1", "--inner-folds", "0", "--register", "true", "--alias", alias,
            "--lr", "preset", "--dropout", "preset", "--weight-decay", "preset", "--epochs", "1",
            "--batch-size", "preset", "--base-channels", "preset"]


@pytest.fixture(scope="module")
def store(tmp_path_factory, prepared_dir):
    """Two tiny registered cvs: phase2 (v1, @champion: none before) then seed (v2, the README's comparison)."""
    import contextlib
    import io

    from entrypoints.cv import main as cv_main

    root = tmp_path_factory.mktemp("registry-store")
    with in_store(root) as env:
        out = {}
        for key, preset, seed in (("first", "phase2", 3), ("second", "seed", 4)):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert cv_main(_cv_argv(prepared_dir, preset, seed)) == 0
            out[key] = buf.getvalue()
        yield {"root": root, "env": env, "stdout": out, "client": MlflowClient(env["MLFLOW_TRACKING_URI"])}


def test_readme_comparison_registers_a_challenger_and_leaves_the_champion(store):
    client = store["client"]
    assert "@champion" in store["stdout"]["first"] and "no @champion yet" in store["stdout"]["first"]
    second = store["stdout"]["second"]
    assert "registered pixel-cnn version 2 @challenger" in second
    assert "@champion stays version 1" in second and "make promote" in second
    assert _alias(client, "champion") == "1" and _alias(client, "challenger") == "2"


def test_only_make_cv_default_moves_champion_without_gate():
    from pixel_cnn.evaluation.cv import INNER_FOLDS
    from pixel_cnn.jobs.cv import is_default_cv

    none = {"lr": None, "epochs": None}
    assert is_default_cv("fusion", none, 5, 42, 1, INNER_FOLDS)
    assert not is_default_cv("phase2", none, 5, 42, 1, INNER_FOLDS)
    assert not is_default_cv("fusion", {"lr": 1e-4}, 5, 42, 1, INNER_FOLDS)
    assert not is_default_cv("fusion", none, 5, 7, 1, INNER_FOLDS)
    assert not is_default_cv("fusion", none, 2, 42, 1, INNER_FOLDS)


def test_versions_carry_scores_preset_digests_and_descriptions(store):
    client = store["client"]
    model = client.get_registered_model("pixel-cnn")
    assert "@champion" in model.description and "promotion gate" in model.description
    for version in ("1", "2"):
        mv = client.get_model_version("pixel-cnn", version)
        run = client.get_run(mv.tags["cv_run_id"])
        for key in ("pr_auc_oof", "roc_auc_oof", "recall_at_p99_oof", "brier_oof", "threshold"):
            assert float(mv.tags[key]) == pytest.approx(run.data.metrics[key], abs=1e-4), key
        assert mv.tags["dataset_digest"] == run.data.tags["dataset_digest"]
        assert mv.tags["preset"] == run.data.tags["preset"]
        text = mv.description
        assert f"**{mv.tags['preset']}** vetter" in text
        assert f"{run.data.metrics['pr_auc_oof']:.3f}" in text and "average precision" in text
        assert mv.tags["dataset_digest"] in text
        assert f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in text


def test_parent_logs_a_small_headline_and_prefixes_the_rest(store):
    from pixel_cnn.tracking.cv import HEADLINE_METRICS
    from pixel_cnn.tracking.runs import EXPERIMENT_KIND

    client = store["client"]
    mv = client.get_model_version("pixel-cnn", "1")
    run = client.get_run(mv.tags["cv_run_id"])
    plain = {k for k in run.data.metrics if "/" not in k}
    assert plain == set(HEADLINE_METRICS), plain
    prefixes = {k.split("/")[0] for k in run.data.metrics if "/" in k}
    assert prefixes <= {"folds", "oof", "combiner"}
    assert {"folds/pr_auc_mean", "folds/pr_auc_std", "oof/f1_oof", "oof/pr_auc_oof_ci_low",
            "folds/val_positive_rate_r0_f0"} <= set(run.data.metrics)
    # every experiment a job wrote to opens on its runs in `mlflow ui` (not the GenAI overview)
    for name in ("pixel-cnn-cv",):
        assert client.get_experiment_by_name(name).tags["mlflow.experimentKind"] == EXPERIMENT_KIND
    # overrides not given are logged as what they mean, never as ''
    assert run.data.params["lr"] == "preset" and "" not in run.data.params.values()


def test_experiment_kind_is_a_value_mlflow_ui_knows():
    """The tag value is one of the UI's experiment kinds (read from MLflow's built UI bundle)."""
    from pathlib import Path

    from pixel_cnn.tracking.runs import EXPERIMENT_KIND

    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    assert any(f'CUSTOM_MODEL_DEVELOPMENT="{EXPERIMENT_KIND}"' in p.read_text(errors="ignore")
               for p in build.glob("main.*.js"))


def test_promote_prints_both_side_by_side_and_keeps_champion_unless_gate_passes(store, capsys):
    from entrypoints.promote import main as promote_main
    from pixel_cnn.tracking.gate import EXPERIMENT_GATE

    client = store["client"]
    with in_store(store["root"]):
        assert promote_main([]) == 0
    out = capsys.readouterr().out
    v1, v2 = (client.get_model_version("pixel-cnn", v) for v in ("1", "2"))
    s1, s2 = float(v1.tags["pr_auc_oof"]), float(v2.tags["pr_auc_oof"])
    assert "@challenger v2 (seed)" in out and "@champion v1 (phase2)" in out
    assert "PR-AUC (average precision), pooled OOF" in out and "recall at precision 0.99" in out
    assert f"{s1:.4f}" in out and f"{s2:.4f}" in out
    moved = s2 >= s1 + 1e-4
    assert ("@champion -> v2" in out) == moved and ("@champion unchanged" in out) != moved
    assert _alias(client, "champion") == ("2" if moved else "1")
    # the decision is on record: a gate run with one mlflow.models.evaluate run per version
    exp = client.get_experiment_by_name(EXPERIMENT_GATE)
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][-1]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.data.tags["model_version"] for r in children} == {"1", "2"}
    for child in children:  # mlflow.models.evaluate on the OOF predictions gives the cv's figures
        mv = client.get_model_version("pixel-cnn", child.data.tags["model_version"])
        assert child.data.metrics["pr_auc_oof"] == pytest.approx(float(mv.tags["pr_auc_oof"]), abs=1e-4)
        assert child.data.metrics["recall_at_p99_oof"] == pytest.approx(float(mv.tags["recall_at_p99_oof"]), abs=1e-4)
    assert parent.data.tags["passed"] == str(moved).lower()
    if moved:  # put the champion back for the other tests
        client.set_registered_model_alias("pixel-cnn", "champion", "1")


def test_gate_refuses_versions_of_different_datasets():
    from pixel_cnn.tracking.gate import Evaluated, decide

    champ = Evaluated("1", {"dataset_digest": "a" * 64}, {"pr_auc_oof": 0.5})
    chal = Evaluated("2", {"dataset_digest": "b" * 64}, {"pr_auc_oof": 0.9})
    passed, reason = decide("pixel-cnn", chal, champ)
    assert not passed and "different datasets" in reason
    passed, reason = decide("pixel-cnn", Evaluated("2", {"dataset_digest": "a" * 64}, {"pr_auc_oof": 0.9}), champ)
    assert passed and "0.9000 > 0.5000" in reason


def test_explicit_champion_alias_goes_through_the_gate(store):
    """`cv -P alias=champion` of a model no better than the champion leaves it where it was."""
    from pixel_cnn.tracking import registry

    client = store["client"]
    with in_store(store["root"]):
        better, worse = sorted((client.get_model_version("pixel-cnn", v) for v in ("1", "2")),
                               key=lambda mv: -float(mv.tags["pr_auc_oof"]))
        client.set_registered_model_alias("pixel-cnn", "champion", better.version)
        info = mlflow.models.get_model_info(f"models:/pixel-cnn/{worse.version}")
        out = registry.register_cv_version(info, dict(worse.tags), "champion", is_default_cv=False)
        assert out["alias"] == "challenger" and str(out["champion"]) == str(better.version)
        assert "did not pass the gate" in out["reason"] and "is not above" in out["reason"]
        # make cv's default run (the main job) moves it without the gate
        out = registry.register_cv_version(info, dict(worse.tags), "auto", is_default_cv=True)
        assert out["alias"] == "champion" and str(out["champion"]) == str(out["version"])
        client.set_registered_model_alias("pixel-cnn", "champion", "1")
        client.set_registered_model_alias("pixel-cnn", "challenger", "2")


@pytest.mark.slow
def test_pixel_model_served_says_koi_parameters_unused_and_refuses_unknown_names(store, real_dataset):
    """Every registered model answers the same request: KOI params to a pixel-only model -> said in the answer;
    an unknown parameter name -> 400 naming it (MLflow alone would drop it with a log warning)."""
    stack = real_dataset.stacks[9967771].tolist()
    with served_model("models:/pixel-cnn@champion", store["env"], store["root"]) as url:
        plain = httpx.post(f"{url}/invocations", json={"inputs": [stack]}, headers=JSON, timeout=60)
        r = httpx.post(f"{url}/invocations", json={"inputs": [stack], "params": KOI}, headers=JSON, timeout=60)
        bad = httpx.post(f"{url}/invocations", json={"inputs": [stack], "params": {"koi_perod": 9.9}},
                         headers=JSON, timeout=60)
    assert plain.status_code == 200 and set(plain.json()["predictions"][0]) == {"probability", "label", "threshold"}
    assert r.status_code == 200, r.text[:300]
    answer = r.json()["predictions"][0]
    assert answer["tabular_probability"] is None and answer["branch"] == "pixel" and answer["inputs_used"] == "stack"
    assert "no tabular branch" in answer["tabular_reason"] and "koi_period" in answer["tabular_reason"]
    assert answer["probability"] == pytest.approx(plain.json()["predictions"][0]["probability"], abs=1e-12)
    assert bad.status_code == 400 and "unknown parameter 'koi_perod'" in bad.text and len(bad.text) < 600


def test_unknown_parameter_refused_in_process_and_other_models_untouched(store, real_dataset):
    from mlflow.models.utils import _enforce_params_schema  # noqa: F401 - MLflow's own, unpatched
    from mlflow.types import ParamSchema, ParamSpec

    from mlflow.exceptions import MlflowException

    with in_store(store["root"]):
        model = mlflow.pyfunc.load_model("models:/pixel-cnn@champion")
    x = real_dataset.stacks[9967771][None].astype(np.float32)
    with pytest.raises(MlflowException, match="unknown parameter 'foo'") as caught:
        model.predict(x, params={"foo": 1.0})
    assert caught.value.get_http_status_code() == 400
    out = model.predict(x, params={"koi_period": 9.9})
    assert out["tabular_probability"].isna().all() and "koi_period" in out["tabular_reason"].iloc[0]
    # a model with another params schema keeps MLflow's behaviour (the unknown name dropped)
    import mlflow.pyfunc as pyfunc_module

    other = ParamSchema([ParamSpec("temperature", "double", 0.5)])
    assert pyfunc_module._enforce_params_schema({"foo": 1, "temperature": 0.1}, other) == {"temperature": 0.1}


def test_registration_never_reads_a_version_without_scores_as_better(store):
    """A hand-made version with no cv behind it cannot pass the gate silently: no OOF, no tag -> refused."""
    from pixel_cnn.tracking import registry

    client = store["client"]
    with in_store(store["root"]):
        run = client.create_run(client.get_experiment_by_name("pixel-cnn-cv").experiment_id)
        mv = client.create_model_version("pixel-cnn", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.set_registered_model_alias("pixel-cnn", "hand", mv.version)
        with pytest.raises(ValueError, match="no pooled OOF PR-AUC"):
            registry.promote("pixel-cnn", "hand", "champion")
        assert _alias(client, "champion") == "1"
        client.delete_registered_model_alias("pixel-cnn", "hand")


def test_prep_run_named_after_what_it_prepared(real_dataset, data_dir):
    from pixel_cnn.jobs.prep import prep_run_name

    name = prep_run_name(data_dir, "seed", real_dataset)
    assert re.fullmatch(rf"prep {data_dir.name} labels=seed n=97 digest=[0-9a-f]{{8}}", name), name


def test_license_is_an_spdx_string():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])


def test_ui_link_opens_the_cv_runs_in_the_model_training_view(tracking_store):
    """`make ui` prints the address of the cv experiment with MLflow's `workflowType` query parameter
    (the UI otherwise opens on its GenAI overview); before any cv, the experiments list."""
    from mlflow.tracking import MlflowClient

    from entrypoints.ui_link import WORKFLOW_QUERY, ui_link

    assert ui_link("http://h:1") == f"http://h:1/#/experiments?{WORKFLOW_QUERY}"
    cv_id = MlflowClient().create_experiment("pixel-cnn-cv")
    assert ui_link("http://127.0.0.1:5000/") == f"http://127.0.0.1:5000/#/experiments/{cv_id}?{WORKFLOW_QUERY}"
