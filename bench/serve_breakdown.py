"""Where one served request's time goes: ``python bench/serve_breakdown.py [MODEL_URI]``.

Splits the latency of ``mlflow models serve`` for one real stack per request into
the HTTP round trip of an empty endpoint (``/ping``), MLflow's request handling in
process (``mlflow.pyfunc.scoring_server.invocations``: JSON parsing, schema casting,
``predict``, JSON output) and, inside ``predict``, our preprocessing and the fused
forward pass. Medians over the 97 benchmark stacks (x3), ms, on this machine; run it
on a quiet machine. Needs a registered model (``make cv``) in ``$MLFLOW_TRACKING_URI``.
Prints a table and writes ``bench/results/serve_breakdown.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def median_ms(fn, items) -> float:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main(argv=None) -> int:
    import httpx
    import mlflow
    from mlflow.pyfunc.scoring_server import invocations

    from pixel_cnn.io.dataset import prepare_dataset
    from ops.loadtest import stack_bodies
    from pixel_cnn.tracking.registry import CHAMPION_URI, vetter_of
    from pixel_cnn.vetter.representation import build_inputs
    from ops.serving import served_model

    uri = (argv or sys.argv[1:] or [CHAMPION_URI])[0]
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT / 'mlflow.db'}")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    bodies = stack_bodies(prepare_dataset(None, "seed").stack_list(), per_request=1) * 3
    model = mlflow.pyfunc.load_model(uri)
    schema = model.metadata.get_input_schema()
    ensemble = vetter_of(model).pixel
    arrays = [np.asarray(json.loads(b)["inputs"], dtype=np.float32) for b in bodies]
    inputs = [build_inputs(list(a), ensemble.preset.representation, ensemble.preset.image_size) for a in arrays]
    for body in bodies[:20]:  # warm-up
        invocations(body, "application/json", model, schema)
    out = {
        "invocations_in_process_ms": median_ms(lambda b: invocations(b, "application/json", model, schema), bodies),
        "json_decode_ms": median_ms(json.loads, bodies),
        "pyfunc_predict_ms": median_ms(model.predict, arrays),
        "preprocessing_ms": median_ms(
            lambda a: build_inputs(list(a), ensemble.preset.representation, ensemble.preset.image_size, nan="reject"),
            arrays),
        "forward_fused_ms": median_ms(ensemble.predict_inputs, inputs),
    }
    with served_model(uri, env, Path(tempfile.mkdtemp())) as url, \
            httpx.Client() as client:
        for _ in range(50):
            client.get(f"{url}/ping")
        out["http_ping_round_trip_ms"] = median_ms(lambda _: client.get(f"{url}/ping"), range(300))
        post = lambda b: client.post(f"{url}/invocations", content=b, headers={"Content-Type": "application/json"})
        for body in bodies[:50]:
            post(body)
        out["http_invocations_round_trip_ms"] = median_ms(post, bodies)
    width = max(map(len, out))
    for key, value in out.items():
        print(f"{key:<{width}}  {value:7.2f}")
    path = PROJECT / "bench" / "results" / "serve_breakdown.json"
    path.write_text(json.dumps({"model_uri": uri, "cores": os.cpu_count(), **out}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
