"""Hashes of what cv produces for each vetter: the check that a refactor changes no number.

    .venv/bin/python bench/vetter_hashes.py [VETTER ...]      # default: seed phase2 fusion

For each vetter, 5-fold cv (seed 42, 3 inner folds) of the benchmark dataset, in process, with
one OpenMP thread: SHA-256 (16 hex digits) of every fold network's weights, of the summary
metrics (names and values, sorted) and of the out-of-fold table (CSV, 17 significant digits).
Equal hashes on one machine before and after a change = the same weights and the same metrics,
bit for bit. Prints one JSON line per vetter.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixel_cnn.branches.vetters import get_vetter  # noqa: E402
from pixel_cnn.evaluation.cv import run_cv  # noqa: E402
from pixel_cnn.io.dataset import koi_table_path, prepare_dataset  # noqa: E402
from pixel_cnn.io.koi import load_koi_with_dv  # noqa: E402


def _h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def vetter_hashes(name: str, dataset) -> dict:
    spec = get_vetter(name)
    koi = load_koi_with_dv(koi_table_path()) if spec.needs_koi_table else None
    start = time.perf_counter()
    result = run_cv(dataset, spec.branches(koi=koi), n_folds=5, seed=42, vetter=name)
    weights = hashlib.sha256()
    for fold in result.folds:
        if fold.pixel is not None:
            for key, tensor in fold.pixel.model.items():
                weights.update(key.encode())
                weights.update(tensor.detach().cpu().numpy().tobytes())
    summary = json.dumps({k: float(v) for k, v in result.summary.items()}, sort_keys=True).encode()
    return {"vetter": name, "weights": weights.hexdigest()[:16], "summary": _h(summary),
            "oof": _h(result.oof.to_csv(index=False, float_format="%.17g").encode()),
            "pr_auc_oof": result.summary["pr_auc_oof"], "wall_s": round(time.perf_counter() - start, 1)}


def main(argv: list[str]) -> int:
    dataset = prepare_dataset(None, "seed")
    for name in argv or ["seed", "phase2", "fusion"]:
        print(json.dumps(vetter_hashes(name, dataset)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
