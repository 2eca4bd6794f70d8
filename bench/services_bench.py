"""Benchmark: limits of the shared stack on this machine (not a test).

Starts a fresh stack (PostgreSQL + SeaweedFS + mlflow server, free loopback
ports, temporary folder), measures, stops it by PID. Prints and writes JSON::

    stack_start_s                 `services.start` wall time (fresh initdb included)
    log_metric_ms_median / _p95   one `MlflowClient.log_metric` round trip (server + PostgreSQL)
    log_batch_1000_s              one `log_batch` of 1000 metrics
    create_run_ms_median          `create_run` round trip
    upload_MBps_proxied / _direct     `log_artifact` of a SIZE MB file: through the server / straight to S3
    download_MBps_proxied / _direct   `download_artifacts` of it back
    sqlite_log_metric_ms_median   the same call on a local sqlite store, for comparison

Usage (from the project root)::

    .venv/bin/python bench/services_bench.py [--size-mb 64] [--n-calls 200] [--out bench/results/services.json]

Timings depend on the machine and its load (a shared 2-core box here): report them with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _calls(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def measure_tracking(client, exp_id: str, n_calls: int) -> dict:
    from mlflow.entities import Metric

    run = client.create_run(exp_id)
    lm = _calls(lambda i: client.log_metric(run.info.run_id, "m", float(i), step=i), n_calls)
    cr = _calls(lambda i: client.create_run(exp_id), max(10, n_calls // 10))
    ts = int(time.time() * 1000)
    t = time.perf_counter()
    client.log_batch(run.info.run_id, metrics=[Metric("b", float(i), ts, i) for i in range(1000)])
    batch = time.perf_counter() - t
    return {"log_metric_ms_median": statistics.median(lm), "log_metric_ms_p95": _p95(lm),
            "create_run_ms_median": statistics.median(cr), "log_batch_1000_s": batch}


def measure_artifacts(client, exp_id: str, blob: Path, tmp: Path, tag: str) -> dict:
    run = client.create_run(exp_id)
    size_mb = blob.stat().st_size / 2**20
    t = time.perf_counter()
    client.log_artifact(run.info.run_id, str(blob))
    up = time.perf_counter() - t
    dst = tmp / f"down-{tag}"
    dst.mkdir()
    t = time.perf_counter()
    client.download_artifacts(run.info.run_id, blob.name, str(dst))
    down = time.perf_counter() - t
    return {f"upload_MBps_{tag}": size_mb / up, f"download_MBps_{tag}": size_mb / down}


def main(argv=None) -> int:
    from mlflow.tracking import MlflowClient

    from ops import services

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--n-calls", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "services.json"))
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pixel-cnn-services-bench-"))
    os.chmod(tmp, 0o755)
    root = tmp / "stack"
    results: dict = {"size_mb": args.size_mb, "n_calls": args.n_calls, "cpus": os.cpu_count()}
    try:
        t = time.perf_counter()
        state = services.start(services.Config(root=root, pg_port=0, s3_port=0, mlflow_port=0,
                                               weed_ports={"free": True}, workers=2, timeout=300))
        results["stack_start_s"] = time.perf_counter() - t
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # the server authenticates
            os.environ[key] = services.client_env(state)[key]
        client = MlflowClient(tracking_uri=state["tracking_uri"])
        exp_id = client.create_experiment("bench-proxied")
        results.update(measure_tracking(client, exp_id, args.n_calls))
        blob = tmp / "blob.bin"
        blob.write_bytes(os.urandom(args.size_mb * 2**20))
        results.update(measure_artifacts(client, exp_id, blob, tmp, "proxied"))
        # direct: this client talks to the bucket itself
        for key, value in services.client_env(state).items():
            if key.startswith(("AWS_", "MLFLOW_S3")):
                os.environ[key] = value
        direct = client.create_experiment("bench-direct", artifact_location=f"s3://{state['bucket']}/bench")
        results.update(measure_artifacts(client, direct, blob, tmp, "direct"))
        local = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'local.db'}")
        lexp = local.create_experiment("bench-sqlite", artifact_location=str(tmp / "local-artifacts"))
        lrun = local.create_run(lexp)
        lm = _calls(lambda i: local.log_metric(lrun.info.run_id, "m", float(i), step=i), args.n_calls)
        results["sqlite_log_metric_ms_median"] = statistics.median(lm)
    finally:
        services.stop(root)
        shutil.rmtree(tmp, ignore_errors=True)
    results = {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
