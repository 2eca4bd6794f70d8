"""Does an environment built from the model's own files answer like ``make serve``? (``make deploy-check``)

1. The README's request bodies (the ``serve-example`` and ``serve-fusion-example`` blocks, the
   part before ``| curl``), made from the checkout as the README says.
2. The model downloaded into ``--workdir`` (outside the checkout), and its environment built from
   its own files (``requirements.txt``, ``python_env.yaml``) with ``mlflow models prepare-env
   --env-manager ENV``; with ``--wheelhouse DIR``, offline: no index, wheels from DIR only
   (uv: ``UV_OFFLINE``/``UV_NO_INDEX``/``UV_FIND_LINKS``; pip: ``PIP_NO_INDEX``/``PIP_FIND_LINKS``).
3. Each body scored by the model served from that environment (its own ``mlflow models serve
   --env-manager local``, the ``mlflow-skinny`` installed there: nothing of the checkout runs; ``mlflow
   models serve --env-manager ENV`` would reuse the same environment; ``mlflow models predict``
   builds a new one in a temporary root on every call), by the environment's Python
   (``mlflow.pyfunc.load_model`` then ``predict`` of the body's stacks as float32 and as float64
   numpy arrays), both from ``--workdir``, and by ``mlflow models serve -m MODEL_URI --env-manager local`` as ``make serve``
   runs it, from the checkout (each server on 127.0.0.1, a free port, stopped by its process group;
   ``--reference-url URL``: a ``make serve`` already running there instead).
4. The answers compared record by record (numbers to 1e-6 relative), the environment's torch
   build and Python (and that it cannot import the checkout's ``pixel_cnn``), its size on disk
   (bytes, hard links counted once) and the build time.

Exit 0: every body answered the same and the environment's torch is a CPU build; 1: a difference
(printed); 2: a step failed (its output's tail printed). ``--report FILE`` writes it all as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ops.serving import served_model

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MLFLOW = str(VENV_BIN / "mlflow")
#: README blocks whose bodies are compared, and the branch a fusion model answers each with.
README_BLOCKS = ("serve-example", "serve-fusion-example")


class StepError(RuntimeError):
    """A step (body, environment build, serve, predict) failed; the message holds its output's tail."""


def _run(cmd, cwd, env, timeout=1800) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise StepError(f"{' '.join(map(str, cmd[:4]))} ... exited {proc.returncode}:\n"
                        f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def readme_bodies(readme: Path = PROJECT / "README.md", env: dict | None = None) -> dict[str, str]:
    """``{block name: JSON body}``: each README serve block's body-making command, run from the checkout."""
    text = readme.read_text()
    bodies = {}
    for name in README_BLOCKS:
        match = re.search(rf"<!-- {name}:start -->\s*```bash\n(.*?)```", text, re.S)
        if match is None:
            raise StepError(f"README.md has no {name} block")
        script = match.group(1).split("| curl")[0].rstrip().rstrip("\\").rstrip()
        proc = _run(["bash", "-c", script], PROJECT, env, timeout=300)
        json.loads(proc.stdout)  # a body, or fail here
        bodies[name] = proc.stdout.strip()
    return bodies


def offline_env(wheelhouse: Path) -> dict[str, str]:
    """Variables that make uv and pip install from ``wheelhouse`` only, never from an index; uv's cache
    is the wheelhouse's ``uv-cache`` (filled by ``make wheelhouse``: environments are then hard links)."""
    wheelhouse = Path(wheelhouse).resolve()
    return {"UV_OFFLINE": "1", "UV_NO_INDEX": "1", "UV_FIND_LINKS": str(wheelhouse), "UV_PYTHON_DOWNLOADS": "never",
            "UV_CACHE_DIR": str(wheelhouse / "uv-cache"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}


def disk_bytes(root: Path) -> int:
    """Bytes of the files under ``root``, each hard-linked file counted once (what ``du -sb`` reports)."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def build_env(model_dir: Path, env_manager: str, env: dict, cwd: Path) -> tuple[Path, float]:
    """``mlflow models prepare-env`` of ``model_dir``; returns the environment's folder and the seconds it took."""
    t0 = time.monotonic()
    proc = _run([MLFLOW, "models", "prepare-env", "-m", str(model_dir), "--env-manager", env_manager], cwd, env)
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    match = re.search(r"Creating a new environment in (\S+)|Environment (\S+) already exists", log)
    if match is None:
        raise StepError(f"prepare-env did not say where the environment is:\n{log[-2000:]}")
    return Path(match.group(1) or match.group(2)), wall


#: Run by the environment's Python: its Python and torch (CUDA build or None = CPU, where torch is),
#: whether the project's ``pixel_cnn`` is importable there (it must not be: the model is its own code),
#: then the model loaded with mlflow.pyfunc and each body's stacks scored as float32 and as float64 numpy
#: arrays (``{"inputs": ..., "params": ...}``), answers written as the scoring server writes them.
_ENV_PYTHON_SCRIPT = """
import importlib.util, json, sys
import numpy as np, mlflow, torch
facts = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
         "torch_file": torch.__file__, "pixel_cnn_importable": importlib.util.find_spec("pixel_cnn") is not None}
model_dir, bodies = sys.argv[1], json.loads(open(sys.argv[2]).read())
model = mlflow.pyfunc.load_model(model_dir)
out = {}
for name, body in bodies.items():
    body = json.loads(body)
    for dtype in ("float32", "float64"):
        x = np.asarray(body["inputs"], dtype=dtype)
        df = model.predict(x, params=body.get("params"))
        out[name + ":" + dtype] = {"predictions": json.loads(df.to_json(orient="records", double_precision=15))}
print(json.dumps({"facts": facts, "answers": out}))
"""


def env_python(env_dir: Path, model_dir: Path, bodies: dict[str, str], cwd: Path, env: dict) -> tuple[dict, dict]:
    """The environment's Python, in process, from ``cwd``: ``(facts, {"<body>:float32"|"<body>:float64": answer})``."""
    path = cwd / "bodies.json"
    path.write_text(json.dumps(bodies))
    proc = _run([str(env_bin(env_dir) / "python"), "-c", _ENV_PYTHON_SCRIPT, str(model_dir), str(path)], cwd, env,
                timeout=600)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["facts"], out["answers"]


def env_bin(env_dir: Path) -> Path:
    """The environment's scripts folder (``python``, ``mlflow``)."""
    return env_dir / ("Scripts" if os.name == "nt" else "bin")


def in_env(env: dict, env_dir: Path) -> dict:
    """``env`` as the environment's activation leaves it: its scripts first on PATH, ``VIRTUAL_ENV`` set.
    Python may cache bytecode there (``PYTHONDONTWRITEBYTECODE`` dropped): the environment is the
    model's, and a deployed one compiles once, not on every start."""
    out = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**out, "VIRTUAL_ENV": str(env_dir), "PATH": f"{env_bin(env_dir)}{os.pathsep}{env.get('PATH', '')}"}


def post_bodies(url: str, bodies: dict[str, str]) -> dict[str, dict]:
    """Each body POSTed to ``url``/invocations: ``{name: JSON answer}`` (``{"status": code, ...}`` when not 200)."""
    import httpx

    out = {}
    for name, body in bodies.items():
        r = httpx.post(f"{url}/invocations", content=body, headers={"Content-Type": "application/json"}, timeout=120)
        out[name] = r.json() if r.status_code == 200 else {"status": r.status_code, "body": r.text[:500]}
    return out


def served_answers(model_uri: str, bodies: dict[str, str], cwd: Path, env: dict,
                   mlflow_cli: Path | None = None, log_dir: Path | None = None) -> dict[str, dict]:
    """:func:`post_bodies` to ``mlflow models serve -m model_uri --env-manager local`` run from ``cwd`` with
    ``mlflow_cli`` (default the checkout's ``.venv``: ``make serve``) (:func:`ops.serving.served_model`:
    127.0.0.1, a free port, one worker, its log in ``log_dir``, default ``cwd``)."""
    try:
        with served_model(model_uri, env, cwd, timeout=600.0, mlflow_cli=mlflow_cli, log_dir=log_dir) as url:
            return post_bodies(url, bodies)
    except RuntimeError as exc:  # the server exited or never answered /ping: its log's tail
        raise StepError(str(exc)) from None


def same(a, b, rel: float = 1e-6) -> bool:
    """Equal JSON values, numbers to ``rel`` relative tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=rel)
    return a == b


def check(model_uri: str, env_manager: str, workdir: Path, wheelhouse: Path | None,
          reference_url: str | None = None) -> dict:
    """Every step above; returns the report (``ok``, ``bodies``, ``env``, ``seconds`` of each step).

    ``reference_url``: a ``make serve`` of ``model_uri`` already running there (else one is started).
    """
    import mlflow

    t0 = time.monotonic()
    seconds = {}

    def lap(step):
        nonlocal t0
        seconds[step] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()

    workdir.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    if wheelhouse is not None and not (Path(wheelhouse) / ".complete").exists():
        raise StepError(f"no wheelhouse at {wheelhouse}: run `make wheelhouse` first")
    bodies = readme_bodies(env=base)
    lap("readme_bodies")
    model_dir = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(workdir / "model")))
    lap("download")
    build = {**base, **(offline_env(wheelhouse) if wheelhouse is not None else {})}
    env_dir, wall = build_env(model_dir, env_manager, build, workdir)
    lap("prepare_env")
    if reference_url:
        reference = post_bodies(reference_url, bodies)
    else:
        reference = served_answers(model_uri, bodies, PROJECT, base, log_dir=workdir)
    lap("make_serve")
    # The environment's own mlflow (mlflow-skinny) serves the model, nothing of the checkout's .venv runs,
    # while its Python scores the same bodies in process (the two routes start together: both load torch).
    with ThreadPoolExecutor(2) as pool:
        http = pool.submit(served_answers, str(model_dir), bodies, workdir, in_env(build, env_dir),
                           env_bin(env_dir) / "mlflow")
        facts, python = env_python(env_dir, model_dir, bodies, workdir, in_env(build, env_dir))
        routes = {"environment, HTTP": http.result()}
    lap("environment_http_and_python")
    for dtype in ("float32", "float64"):
        routes[f"environment, Python {dtype}"] = {name: python[f"{name}:{dtype}"] for name in bodies}
    rows = {}
    for name in bodies:
        answers = {route: got[name] for route, got in routes.items()}
        rows[name] = {"make serve": reference[name], **answers,
                      "same": "predictions" in reference[name] and all(same(reference[name], a) for a in answers.values())}
    cpu = facts["cuda"] is None
    report = {
        "ok": all(r["same"] for r in rows.values()) and cpu and not facts["pixel_cnn_importable"],
        "model_uri": model_uri, "model_dir": str(model_dir), "env_manager": env_manager,
        "offline": wheelhouse is not None,
        "bodies": rows,
        "env": {"dir": str(env_dir), "prepare_env_s": round(wall, 1), "disk_bytes": disk_bytes(env_dir),
                "cpu_torch": cpu, **facts},
        "seconds": seconds,
    }
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-uri", default="models:/pixel-cnn@champion")
    p.add_argument("--env-manager", default="uv", choices=["uv", "virtualenv", "conda"])
    p.add_argument("--wheelhouse", default=None, help="build offline from these wheels only (make wheelhouse)")
    p.add_argument("--workdir", default=".deploy-check", help="where the model, bodies and answers go")
    p.add_argument("--reference-url", default=None,
                   help="compare with the make serve already running at this URL (default: start one)")
    p.add_argument("--report", default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    try:
        report = check(args.model_uri, args.env_manager, Path(args.workdir).resolve(),
                       Path(args.wheelhouse) if args.wheelhouse else None, args.reference_url)
    except StepError as exc:
        print(f"deploy-check: {exc}", file=sys.stderr)
        return 2
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    e = report["env"]
    print(f"environment {e['dir']} ({args.env_manager}{', offline' if report['offline'] else ''}): "
          f"Python {e['python']}, torch {e['torch']} (CUDA {e['cuda']}), {e['disk_bytes'] / 2**30:.2f} GiB, "
          f"prepare-env {e['prepare_env_s']} s")
    for name, row in report["bodies"].items():
        print(f"{name}: {'same' if row['same'] else 'DIFFERENT'}")
        for route, answer in row.items():
            if route != "same":
                print(f"  {route:28s} {json.dumps(answer.get('predictions', answer))}")
    if not e["cpu_torch"]:
        print("the environment's torch is a CUDA build", file=sys.stderr)
    if e["pixel_cnn_importable"]:
        print("the environment can import the project's pixel_cnn: the check does not show the model is self-contained",
              file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
