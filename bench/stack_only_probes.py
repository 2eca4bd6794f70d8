"""What a model answers for a stack alone (no KOI parameters): pure noise, and the same noise with a transit.

Synthetic stacks ``(32, 4, 5)`` float32: Gaussian noise of ``--noise-ppm`` per pixel and bin (seed
``--seed``), then the same stacks with a dimming of 500, 1000 and 3000 ppm on the central 2 x 3
pixels in the in-transit bins 0 and 31. A model that sees the physics calls noise "nothing seen"
and a clear on-target transit a planet; the README's "What a stack-only answer means" quotes this.

    .venv/bin/python bench/stack_only_probes.py [--model-uri models:/pixel-cnn@champion] [--n 20] [--seed 0]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

DEPTHS_PPM = (500, 1000, 3000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default="models:/pixel-cnn@champion")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-ppm", type=float, default=200.0)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    model = mlflow.pyfunc.load_model(args.model_uri)
    threshold = None

    def probability(stack: np.ndarray) -> float:
        nonlocal threshold
        answer = model.predict(stack[None]).iloc[0]  # one row per stack: probability, label, threshold, ...
        threshold = answer["threshold"]
        return float(answer["probability"])

    rng = np.random.default_rng(args.seed)
    noise = [(rng.standard_normal((32, 4, 5)) * args.noise_ppm * 1e-6).astype(np.float32) for _ in range(args.n)]
    p = np.array([probability(s) for s in noise])
    print(f"{args.model_uri}: {args.n} noise stacks of {args.noise_ppm:.0f} ppm: P(planet) {p.min():.2f}-{p.max():.2f}, "
          f"median {np.median(p):.2f}; called CONFIRMED (>= threshold {threshold:.3f}): {np.mean(p >= threshold):.0%}")
    for depth in DEPTHS_PPM:
        q = []
        for s in noise:
            t = s.copy()
            t[[0, 31], 1:3, 1:4] -= depth * 1e-6
            q.append(probability(t))
        print(f"  + {depth} ppm transit on the central 2 x 3 pixels: median P(planet) {np.median(q):.4f} "
              f"({min(q):.4f}-{max(q):.4f})")


if __name__ == "__main__":
    main()
