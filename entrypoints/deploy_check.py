"""Does an environment built from the model's own files answer like ``make serve``? (``make deploy-check``)

1. The README's request bodies (the ``serve-example`` and ``serve-fusion-example`` blocks, the
   part before ``| curl``), made from the checkout as the README says.
2. The model downloaded into ``--workdir`` (outside the checkout), and its environment built from
   its own files (``requirements.txt``, ``python_env.yaml``) with ``mlflow models prepare-env
   --env-manager ENV``; with ``--wheelhouse DIR``, offline: no index, wheels from DIR only
   (uv: ``UV_OFFLINE``/``UV_NO_INDEX``/``UV_FIND_LINKS``; pip: ``PIP_NO_INDEX``/``PIP_FIND_LINKS``).
3. Each body scored by the model served from that environment (``mlflow models serve
   --env-manager ENV``, which reuses it; ``mlflow models predict`` would build a new one in a
   temporary root on every call), by the environment's Python (``mlflow.pyfunc.load_model`` then
   ``predict`` of the body's stacks as float32 and as float64 numpy arrays), both from
   ``--workdir``, and by ``mlflow models serve -m MODEL_URI --env-manager local`` as ``make serve``
   runs it, from the checkout (each server on 127.0.0.1, a free port, stopped by its process group).
4. The answers compared record by record (numbers to 1e-6 relative), the environment's torch
   build and Python, its size on disk (bytes, hard links counted once) and the build time.

Exit 0: every body answered the same and the environment's torch is a CPU build; 1: a difference
(printed); 2: a step failed (its output's tail printed). ``--report FILE`` writes it all as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    """Variables that make uv and pip install from ``wheelhouse`` only, never from an index."""
    wheelhouse = str(Path(wheelhouse).resolve())
    return {"UV_OFFLINE": "1", "UV_NO_INDEX": "1", "UV_FIND_LINKS": wheelhouse, "UV_PYTHON_DOWNLOADS": "never",
            "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse}


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


def env_python_facts(env_dir: Path, cwd: Path, env: dict) -> dict:
    """Python and torch of the environment: versions, CUDA build (None = CPU), where torch is installed."""
    code = ("import json, sys, torch; print(json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__, "
            "'cuda': torch.version.cuda, 'torch_file': torch.__file__}))")
    proc = _run([str(env_dir / "bin" / "python"), "-c", code], cwd, env, timeout=300)
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: Run by the environment's Python: the model loaded with mlflow.pyfunc, each body's stacks as float32
#: and as float64 arrays (``{"inputs": ..., "params": ...}``), answers as the scoring server writes them.
_ENV_PYTHON_SCRIPT = """
import json, sys
import numpy as np, mlflow
model_dir, bodies = sys.argv[1], json.loads(open(sys.argv[2]).read())
model = mlflow.pyfunc.load_model(model_dir)
out = {}
for name, body in bodies.items():
    body = json.loads(body)
    for dtype in ("float32", "float64"):
        x = np.asarray(body["inputs"], dtype=dtype)
        df = model.predict(x, params=body.get("params"))
        out[name + ":" + dtype] = {"predictions": json.loads(df.to_json(orient="records", double_precision=15))}
print(json.dumps(out))
"""


def env_python_answers(env_dir: Path, model_dir: Path, bodies: dict[str, str], cwd: Path, env: dict) -> dict:
    """``{"<body>:float32"|"<body>:float64": answer}``: the environment's Python, in process, numpy inputs."""
    path = cwd / "bodies.json"
    path.write_text(json.dumps(bodies))
    proc = _run([str(env_dir / "bin" / "python"), "-c", _ENV_PYTHON_SCRIPT, str(model_dir), str(path)], cwd, env,
                timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model_uri: str, env_manager: str, cwd: Path, env: dict, log_path: Path, timeout: float = 300.0):
    """``mlflow models serve -m model_uri --env-manager env_manager`` on 127.0.0.1, run from ``cwd``; yields its URL.

    With ``local``, the command of ``make serve``."""
    import httpx

    port = _free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([MLFLOW, "models", "serve", "-m", model_uri, "--env-manager", env_manager,
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise StepError(f"mlflow models serve exited {proc.returncode}: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise StepError("mlflow models serve did not answer /ping in time")
                time.sleep(0.5)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def served_answers(model_uri: str, env_manager: str, bodies: dict[str, str], cwd: Path, env: dict,
                   log_path: Path) -> dict[str, dict]:
    """Each body POSTed to the served model: ``{name: JSON answer}`` (``{"status": code, ...}`` when not 200)."""
    import httpx

    out = {}
    with serve(model_uri, env_manager, cwd, env, log_path) as url:
        for name, body in bodies.items():
            r = httpx.post(f"{url}/invocations", content=body, headers={"Content-Type": "application/json"},
                           timeout=120)
            out[name] = r.json() if r.status_code == 200 else {"status": r.status_code, "body": r.text[:500]}
    return out


def same(a, b, rel: float = 1e-6) -> bool:
    """Equal JSON values, numbers to ``rel`` relative tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=rel)
    return a == b


def check(model_uri: str, env_manager: str, workdir: Path, wheelhouse: Path | None) -> dict:
    """Every step above; returns the report (``ok``, ``bodies``, ``env``)."""
    import mlflow

    workdir.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    if wheelhouse is not None and not (Path(wheelhouse) / ".complete").exists():
        raise StepError(f"no wheelhouse at {wheelhouse}: run `make wheelhouse` first")
    bodies = readme_bodies(env=base)
    model_dir = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(workdir / "model")))
    build = {**base, **(offline_env(wheelhouse) if wheelhouse is not None else {})}
    build.setdefault("UV_CACHE_DIR", str(workdir / "uv-cache"))
    env_dir, wall = build_env(model_dir, env_manager, build, workdir)
    facts = env_python_facts(env_dir, workdir, build)
    reference = served_answers(model_uri, "local", bodies, PROJECT, base, workdir / "serve-local.log")
    routes = {"environment, HTTP": served_answers(str(model_dir), env_manager, bodies, workdir, build,
                                                  workdir / f"serve-{env_manager}.log")}
    python = env_python_answers(env_dir, model_dir, bodies, workdir, build)
    for dtype in ("float32", "float64"):
        routes[f"environment, Python {dtype}"] = {name: python[f"{name}:{dtype}"] for name in bodies}
    rows = {}
    for name in bodies:
        answers = {route: got[name] for route, got in routes.items()}
        rows[name] = {"make serve": reference[name], **answers,
                      "same": "predictions" in reference[name] and all(same(reference[name], a) for a in answers.values())}
    cpu = facts["cuda"] is None
    report = {
        "ok": all(r["same"] for r in rows.values()) and cpu,
        "model_uri": model_uri, "model_dir": str(model_dir), "env_manager": env_manager,
        "offline": wheelhouse is not None,
        "bodies": rows,
        "env": {"dir": str(env_dir), "prepare_env_s": round(wall, 1), "disk_bytes": disk_bytes(env_dir),
                "cpu_torch": cpu, **facts},
    }
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-uri", default="models:/pixel-cnn@champion")
    p.add_argument("--env-manager", default="uv", choices=["uv", "virtualenv", "conda"])
    p.add_argument("--wheelhouse", default=None, help="build offline from these wheels only (make wheelhouse)")
    p.add_argument("--workdir", default=".deploy-check", help="where the model, bodies and answers go")
    p.add_argument("--report", default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    try:
        report = check(args.model_uri, args.env_manager, Path(args.workdir).resolve(),
                       Path(args.wheelhouse) if args.wheelhouse else None)
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
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
