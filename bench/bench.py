"""`make bench`: speed and cost, measured side by side as ratios in one run.

Writes ``bench/results/<date>.json`` and ``bench/results/<date>.md`` and prints the table.
These machines are noisy, so the headline figures are ratios of two things
measured in the same run; every absolute figure comes with the core count
and library versions. Nothing here asserts a time.

Usage: ``python bench/bench.py [--quick] [--skip serve,tune,...]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import torch  # noqa: E402

from pixel_cnn.io.dataset import prepare_dataset, write_dataset  # noqa: E402
from pixel_cnn.vetter.networks import DEFAULT_PRESET, build_model, get_preset  # noqa: E402
from pixel_cnn.vetter.representation import build_inputs  # noqa: E402
from pixel_cnn.branches.pixel import train_fold  # noqa: E402


def versions() -> dict[str, str]:
    import mlflow
    import optuna
    import sklearn

    return {"python": platform.python_version(), "torch": torch.__version__, "mlflow": mlflow.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "optuna": optuna.__version__}


def store_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(key, None)
    return env


def use_store(root: Path) -> None:
    import mlflow

    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(key, None)
    os.environ.update({k: v for k, v in store_env(root).items() if k.startswith("MLFLOW_")})
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    os.chdir(root)


# ------------------------------------------------------------------ tracking overhead


def bench_tracking(prepared: Path, preset_name: str, root: Path, n_folds: int) -> dict:
    """cv wall time with full tracking (cv_job, registered) / the same cv with tracking off.

    Both sides do the same science, the fold attributions included (``run_cv(attributions=True)``,
    as cv_job runs it), so the ratio is the cost of logging alone. The sqlite store is created
    first and timed apart (``tracking_store_init_s``): a new ``mlflow.db`` runs MLflow's schema
    migrations once, not on every cv.
    Also the full cv / the same without the vetting sheets of its worst OOF calls
    (``mistakes=False``): what the sheets add to ``make cv`` (target <= 1.10).

    """
    from pixel_cnn.jobs.cv import cv as cv_job
    from pixel_cnn.branches.pixel import PixelBranch
    from pixel_cnn.evaluation.cv import run_cv
    from pixel_cnn.io.dataset import read_dataset

    from mlflow.tracking import MlflowClient

    use_store(root)
    t0 = time.perf_counter()
    MlflowClient().search_experiments()  # creates the sqlite store (schema migrations): once per store
    store_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    dataset, _ = read_dataset(prepared)
    run_cv(dataset, [PixelBranch(get_preset(preset_name))], n_folds=n_folds, seed=42, attributions=True)
    untracked = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_cv(dataset, [PixelBranch(get_preset(preset_name))], n_folds=n_folds, seed=42)
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    cv_job(str(prepared), preset_name, {}, n_folds=n_folds, seed=42, register=True, alias="bench")
    tracked = time.perf_counter() - t0
    # The sheets of the worst OOF calls: the same cv without them, then with them again (both after the
    # first tracked cv, which pays the store's one-time costs: experiment, registered model).
    walls = {}
    for sheets in (False, True):
        t0 = time.perf_counter()
        cv_job(str(prepared), preset_name, {}, n_folds=n_folds, seed=42, register=True,
                alias=f"bench-sheets-{str(sheets).lower()}", mistakes=sheets)
        walls[sheets] = time.perf_counter() - t0
    return {"cv_untracked_s": untracked, "cv_tracked_s": tracked, "cv_plain_s": plain,
            "tracking_overhead_ratio": tracked / untracked, "tracking_and_attributions_ratio": tracked / plain,
            "tracking_store_init_s": store_init, "cv_tracked_no_sheets_s": walls[False],
            "cv_tracked_sheets_s": walls[True], "mistake_sheets_overhead_ratio": walls[True] / walls[False]}


# ------------------------------------------------------------------ start-up


def bench_startup(prepared: Path, root: Path) -> dict:
    """`mlflow run . -e cv` launch -> start of the first fold's training (fold run's start_time).

    Split: python + library imports (a bare `import` of the entry point), MLflow project set-up
    (launch -> the cv run's start_time, which `mlflow run` creates before the command starts;
    the entry point's own imports are counted there too), and data loading + input building.
    """
    from mlflow.tracking import MlflowClient

    from pixel_cnn.io.dataset import read_dataset

    env = store_env(root)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import entrypoints.cv"], cwd=PROJECT, env=env, check=True)
    imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    dataset, _ = read_dataset(prepared)
    preset = get_preset(DEFAULT_PRESET)
    build_inputs(dataset.stack_list(), preset.representation, preset.image_size)
    data_s = time.perf_counter() - t0

    launch_ms = time.time() * 1000
    proc = subprocess.run([str(Path(sys.executable).parent / "mlflow"), "run", str(PROJECT), "-e", "cv",
                           "--env-manager", "local", "-P", f"dataset={prepared}", "-P", "epochs=1",
                           "-P", "n_folds=2"], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"mlflow run failed: {proc.stderr[-2000:]}")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exps = [e.experiment_id for e in client.search_experiments()]
    parent = client.search_runs(exps, "tags.`mlflow.project.entryPoint` = 'cv'", order_by=["attributes.start_time DESC"])[0]
    first_fold = client.search_runs(exps, f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                    order_by=["attributes.start_time ASC"])[0]
    return {
        "startup_s": (first_fold.info.start_time - launch_ms) / 1000,
        "startup_imports_s": imports,
        "startup_mlflow_project_s": (parent.info.start_time - launch_ms) / 1000,
        "startup_data_s": data_s,
    }


# ------------------------------------------------------------------ training throughput


def best_of(fns: dict, rounds: int) -> dict[str, float]:
    """Seconds of each callable: one warm-up call, then ``rounds`` calls interleaved; the minimum.

    The least-disturbed run is the best estimate of the cost on a shared machine
    (the ``timeit`` convention); interleaving exposes each side to the same load.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def bench_training(dataset, preset_name: str, epochs: int, rounds: int = 3) -> dict:
    """Images/s of train_fold (sampling, augmentation, schedule) vs a bare torch loop, same tensors."""
    preset = get_preset(preset_name, epochs=epochs)
    x = build_inputs(dataset.stack_list(), preset.representation, preset.image_size)
    y = dataset.labels
    xt, yt = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.float32)

    def bare() -> None:
        torch.manual_seed(0)
        model = build_model(preset)
        opt = torch.optim.AdamW(model.parameters(), lr=preset.lr)
        model.train()
        for _ in range(epochs):
            for i in range(0, len(xt), preset.batch_size):
                xb, yb = xt[i:i + preset.batch_size], yt[i:i + preset.batch_size]
                if len(xb) < 2:  # BatchNorm needs two samples (train_fold skips these too)
                    continue
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()

    secs = best_of({"ours": lambda: train_fold(x, y, preset, seed=0), "bare": bare}, rounds)
    ours, bare_ips = epochs * len(x) / secs["ours"], epochs * len(x) / secs["bare"]
    return {"train_images_per_s": ours, "train_images_per_s_bare_torch": bare_ips,
            "train_throughput_ratio": ours / bare_ips}


# ------------------------------------------------------------------ batch scoring


def bench_scoring(dataset, model_uri: str, n: int, rounds: int = 3) -> dict:
    """pyfunc predict on n raw stacks of mixed sizes vs raw torch forward of the fold models on prepared tensors."""
    import mlflow

    from pixel_cnn.tracking.registry import vetter_of

    rng = np.random.default_rng(0)
    stacks = dataset.stack_list()
    batch = [stacks[i] for i in rng.integers(0, len(stacks), n)]
    obj = np.empty(n, dtype=object)
    obj[:] = batch
    model = mlflow.pyfunc.load_model(model_uri)
    assert len(model.predict(obj)) == n
    ens = vetter_of(model).pixel
    x = torch.as_tensor(build_inputs(batch, ens.preset.representation, ens.preset.image_size))

    def raw() -> None:  # the fold networks one by one, as trained: no preprocessing, no fusion
        with torch.no_grad():
            torch.stack([torch.sigmoid(m(x)) for m in ens.members]).mean(0)

    secs = best_of({"pyfunc": lambda: model.predict(obj), "raw": raw}, rounds)
    # arithmetic per image of the whole ensemble (torch's FLOP counter: 2 per multiply-add)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        [m(x[:1]) for m in ens.members]
    flop = counter.get_total_flops()
    return {"batch_scoring_images_per_s": n / secs["pyfunc"], "batch_scoring_raw_torch_images_per_s": n / secs["raw"],
            "batch_scoring_ratio": secs["raw"] / secs["pyfunc"], "batch_scoring_members": len(ens.members),
            "ensemble_mflop_per_image": flop / 1e6, "batch_scoring_gflop_per_s": flop * n / secs["pyfunc"] / 1e9}


# ------------------------------------------------------------------ batch scoring into a table, vetting sheets


def bench_batch(model_uri: str, root: Path, n_sheets: int, rounds: int = 3) -> dict:
    """`python -m pixel_cnn.predict` work without the start-up: rows/s into the table, sheets/s.

    Rows: :func:`pixel_cnn.scoring.score_paths` over the data folder's ``stacks/`` (every file:
    the real stacks and the placeholders, which get a row with their reason), best of ``rounds``
    after a warm-up. Sheets: the same on ``n_sheets`` real stacks with ``sheets_dir`` (each sheet:
    Integrated Gradients of every member, the figure, the PNG), once after a warm-up sheet.
    """
    from pixel_cnn import scoring
    from pixel_cnn.io.dataset import resolve_data_dir
    from pixel_cnn.tracking.registry import load

    scorer = scoring.ModelScorer(load(model_uri))
    stacks_dir = resolve_data_dir() / "stacks"
    n_files = len(scoring.stack_files([stacks_dir])[0])
    secs = best_of({"rows": lambda: scoring.score_paths([stacks_dir], scorer, progress=False)}, rounds)
    table = scoring.score_paths([stacks_dir], scorer, progress=False).table
    good = [stacks_dir / f for f in table.loc[table["status"] == "scored", "file"]]
    scoring.score_paths(good[:1], scorer, sheets_dir=root / "sheets-warmup", progress=False)
    t0 = time.perf_counter()
    report = scoring.score_paths(good[:n_sheets], scorer, sheets_dir=root / "sheets", progress=False)
    sheet_s = time.perf_counter() - t0
    return {"batch_rows_per_s": n_files / secs["rows"], "batch_rows_files": n_files,
            "batch_rows_skipped": int((table["status"] == "skipped").sum()),
            "sheets_per_s": len(report.sheets) / sheet_s, "sheets_n": len(report.sheets)}


# ------------------------------------------------------------------ serving


#: Uvicorn workers of the served model, as `make serve` starts it (SERVE_WORKERS there).
SERVE_WORKERS = int(os.environ.get("SERVE_WORKERS", "2"))


def bench_serving(dataset, model_uri: str, root: Path, n_requests: int) -> dict:
    """`mlflow models serve`, one stack per request: p50/p99 latency and throughput at c=1 and c=8.

    Measured as `make serve` runs it (``--workers SERVE_WORKERS``, one OpenMP/torch thread
    per worker), then with MLflow's default single worker for comparison (``serve1_*``).
    ``serve_scaling_ratio`` = requests/s at concurrency 8 / at concurrency 1 (workers as served).
    """
    from ops.loadtest import run_load, stack_bodies
    from ops.serving import served_model

    bodies = stack_bodies(dataset.stack_list(), per_request=1)  # the real stacks, cycled
    env = {**store_env(root), "OMP_NUM_THREADS": "1"}
    out = {}
    for prefix, workers in (("serve", SERVE_WORKERS), ("serve1", 1)):
        with served_model(model_uri, env, root, workers=workers) as url:
            run_load(url, bodies, n_requests=50 * workers, concurrency=2 * workers)  # warm-up: every worker
            for c in (1, 8):
                stats = run_load(url, bodies, n_requests=n_requests, concurrency=c)
                out.update({f"{prefix}_p50_ms_c{c}": stats.p50_ms, f"{prefix}_p99_ms_c{c}": stats.p99_ms,
                            f"{prefix}_rps_c{c}": stats.throughput_rps, f"{prefix}_errors_c{c}": stats.n_errors})
        out[f"{prefix}_scaling_ratio"] = out[f"{prefix}_rps_c8"] / out[f"{prefix}_rps_c1"]
    out["serve_server"] = f"mlflow models serve --workers {SERVE_WORKERS} (uvicorn), one torch thread per worker"
    return out


# ------------------------------------------------------------------ tuning


def bench_tune(root: Path, quick: bool, max_epochs: int) -> dict:
    """Trials/min with and without pruning: bench/tune_bench.py (20-trial studies, 5 folds)."""
    script = PROJECT / "bench" / "tune_bench.py"
    out_json = root / "tune.json"
    cmd = [sys.executable, str(script), "--out", str(out_json)]
    cmd += ["--quick"] if quick else ["--max-epochs", str(max_epochs)]
    subprocess.run(cmd, cwd=PROJECT, env=store_env(root), check=True)
    return json.loads(out_json.read_text())


# ------------------------------------------------------------------ catalogue scale (Dask + S3)


def bench_scale(root: Path, quick: bool) -> dict:
    """TPF targets/s on 1 and 2 Dask workers, S3 MB/s, catalogue rows/s: bench/scale_bench.py."""
    out_json = root / "scale.json"
    cmd = [sys.executable, str(PROJECT / "bench" / "scale_bench.py"), "--out", str(out_json),
           "--rounds", "1" if quick else "3"]
    subprocess.run(cmd, cwd=PROJECT, env=store_env(root), check=True)
    return {k: v for k, v in json.loads(out_json.read_text()).items() if k not in ("date", "cores", "rounds")}


# ------------------------------------------------------------------ report


ROWS = [
    ("tracking_overhead_ratio", "cv wall time, full MLflow tracking / tracking off (same science)", "≤ 1.15"),
    ("tracking_and_attributions_ratio", "the same / cv without attributions (the definition before)", ""),
    ("mistake_sheets_overhead_ratio", "cv wall time with the worst-call vetting sheets / without", "≤ 1.1"),
    ("startup_s", "`mlflow run . -e cv` launch → first training step (s)", ""),
    ("train_throughput_ratio", "train_fold images/s / bare torch loop", "≥ 0.8"),
    ("batch_scoring_ratio", "pyfunc predict (raw stacks) / raw torch forward", "≥ 0.5"),
    ("batch_scoring_images_per_s", "pyfunc predict, images/s (mixed-size raw stacks)", ""),
    ("batch_scoring_gflop_per_s", "pyfunc predict, GFLOP/s of the ensemble's arithmetic", ""),
    ("batch_rows_per_s", "batch scoring into the table (`predict --out`), files/s", ""),
    ("sheets_per_s", "vetting sheets (`predict --sheets`), sheets/s", ""),
    ("serve_p50_ms_c1", "served p50 latency, concurrency 1 (ms), `make serve` workers", "≤ 10"),
    ("serve_p99_ms_c1", "served p99 latency, concurrency 1 (ms)", ""),
    ("serve_rps_c1", "served requests/s, concurrency 1", ""),
    ("serve_p50_ms_c8", "served p50 latency, concurrency 8 (ms)", ""),
    ("serve_p99_ms_c8", "served p99 latency, concurrency 8 (ms)", ""),
    ("serve_rps_c8", "served requests/s, concurrency 8", ""),
    ("serve_scaling_ratio", "served requests/s, concurrency 8 / concurrency 1", "≥ 1.5"),
    ("serve_errors_c8", "served errors at concurrency 8", "0"),
    ("serve1_p50_ms_c1", "single worker (MLflow's default): p50, concurrency 1 (ms)", ""),
    ("serve1_scaling_ratio", "single worker: requests/s, concurrency 8 / concurrency 1", ""),
    ("tune_trials_per_min_pruned", "tuning trials/min, with pruning", ""),
    ("tune_trials_per_min_unpruned", "tuning trials/min, without pruning", ""),
    ("targets_per_s_w1", "prep source=tpf from S3 on a Dask cluster, targets/s, 1 worker", ""),
    ("targets_per_s_w2", "the same, 2 workers", ""),
    ("targets_ratio_w2_w1", "targets/s, 2 workers / 1 worker", ""),
    ("s3_mb_per_s_4", "TPF objects from the local S3 server, MB/s (4 streams)", ""),
    ("score_rows_per_s_w2", "catalogue scoring on 2 Dask workers, files/s", ""),
    ("score_ratio_w2_serial", "catalogue scoring, 2 Dask workers / one process", ""),
]


def markdown(results: dict) -> str:
    lines = [f"Bench {results['date']} · {results['cores']} cores · preset `{results['preset']}` · "
             + ", ".join(f"{k} {v}" for k, v in results["versions"].items()), "",
             "| measure | value | target |", "|---|---|---|"]
    for key, text, target in ROWS:
        value = results.get(key)
        shown = "not measured" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"| {text} | {shown} | {target} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness, not the machine")
    parser.add_argument("--skip", default="", help="comma-separated: tracking,startup,training,scoring,batch,serve,tune,scale")
    parser.add_argument("--out-dir", default=str(PROJECT / "bench" / "results"))
    parser.add_argument("--tune-max-epochs", type=int, default=16,
                        help="epochs cap of the tuning studies (keeps `make bench` near 15 minutes)")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    quick = args.quick

    root = Path(tempfile.mkdtemp(prefix="pixel-cnn-bench-"))
    dataset = prepare_dataset(None, "seed")
    prepared = write_dataset(dataset, root / "processed")
    preset = DEFAULT_PRESET
    results: dict = {"date": dt.date.today().isoformat(), "cores": os.cpu_count(), "versions": versions(),
                     "preset": preset, "quick": quick}
    steps = [
        ("tracking", lambda: bench_tracking(prepared, preset, root / "tracking", 2 if quick else 5)),
        ("startup", lambda: bench_startup(prepared, root / "startup")),
        ("training", lambda: bench_training(dataset, preset, 2 if quick else 10)),
        ("scoring", lambda: bench_scoring(dataset, "models:/pixel-cnn@bench", 100 if quick else 1000)),
        ("batch", lambda: bench_batch("models:/pixel-cnn@bench", root / "tracking", 4 if quick else 20)),
        ("serve", lambda: bench_serving(dataset, "models:/pixel-cnn@bench", root / "tracking", 100 if quick else 2000)),
        ("tune", lambda: bench_tune(root / "tune", quick, args.tune_max_epochs)),
        ("scale", lambda: bench_scale(root / "scale", quick)),
    ]
    for name, step in steps:
        if name in skip:
            continue
        for sub in ("tracking", "startup", "tune", "scale"):
            (root / sub).mkdir(exist_ok=True)
        if name in ("scoring", "batch", "serve"):
            use_store(root / "tracking")
        t0 = time.perf_counter()
        print(f"bench: {name} ...", flush=True)
        results.update(step())
        print(f"bench: {name} done in {time.perf_counter() - t0:.1f} s", flush=True)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = results["date"] + ("-quick" if quick else "")
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out_dir / f"{stem}.md").write_text(table)
    print(table)
    print(f"bench: wrote {out_dir / (stem + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
