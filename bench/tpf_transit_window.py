"""How much transit depth the stack keeps: duration-based in-transit cadences vs whole phase bins.

Synthetic, no FITS: one Kepler quarter of long cadence (4400 cadences, 90 d), one pixel,
a box transit of 1000 ppm, white noise 100 ppm per cadence. For each period and duration
the in-transit bins (0 and 31) are read back with the two rules of
``pixel_cnn.stacks.phasefold.bin_stack``: window = the transit duration (this project) or no window
(whole-bin median, the benchmark script's). Also times ``process_target`` on a
Kepler-sized TPF file (4400 cadences x 11 x 11 pixels) built with lightkurve's factory.

    .venv/bin/python bench/tpf_transit_window.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pixel_cnn.stacks import phasefold  # noqa: E402
from pixel_cnn.io.ephemeris import Ephemeris  # noqa: E402
from pixel_cnn.io.target import process_target  # noqa: E402

DEPTH, NOISE, N, CAD = 1e-3, 1e-4, 4400, 0.0204


def recovered(period: float, duration_h: float, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    t = 131.5 + np.arange(N) * CAD
    phase = phasefold.phase_fold(t, period, 131.5 + 0.37 * period)
    in_tr, in_sec = phasefold.transit_windows(phase, period, duration_h)
    flux = (1.0 + rng.normal(0, NOISE, N) - DEPTH * in_tr).reshape(N, 1, 1) * 1e4
    rel, _ = phasefold.relative_flux(flux, phasefold.reference_mask(phase, in_tr))
    out = []
    for window in (in_tr | in_sec, np.zeros(N, bool)):
        stack, _ = phasefold.bin_stack(phase, rel, window)
        out.append(-np.nanmean(stack[[0, 31], 0, 0]) / DEPTH)
    return out[0], out[1]


def main() -> None:
    print("fraction of the 1000 ppm depth in bins 0/31 (mean of the two), one quarter, seed 0")
    print(f"{'P [d]':>7} {'D [h]':>6} {'bin width [h]':>13} {'duration rule':>14} {'whole bins':>11}")
    for period in (1.5, 5.0, 10.0, 30.0):
        for duration in (2.0, 4.0, 8.0):
            if duration / 24 > 0.2 * period:
                continue
            a, b = recovered(period, duration)
            print(f"{period:7.1f} {duration:6.1f} {period * 24 / 32:13.1f} {a:14.2f} {b:11.2f}")

    from pixel_cnn.io.dataset import load_koi_table, load_seed_labels, resolve_data_dir

    root = resolve_data_dir()
    koi = load_koi_table(root / "koi_cumulative.csv")
    bench_koi = koi[koi.kepid.isin(load_seed_labels(root / "seed_labels.csv").kepid)]
    for name, table in (("benchmark (seed_labels) KOIs", bench_koi), ("all KOIs", koi)):
        share = (table.koi_duration / 24 / 2) / (table.koi_period / 32)  # in-transit share of bin 0
        share = share.dropna()
        print(f"{name}: {len(share)}; in-transit share of bin 0 median {share.median():.2f}, "
              f"below 0.5 (whole-bin median mostly out of transit) for {(share < 0.5).mean():.0%}")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tpf_fixtures import Injection, write_tpf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.fits"
        inj = Injection((5, 5), 0.001, 10.0, 135.0, 4.0)
        start = time.perf_counter()
        write_tpf(path, 757450, inj=inj, t_start=131.5, n=N, shape=(11, 11), star=(5, 5))
        made = time.perf_counter() - start
        eph = Ephemeris(757450, "bench", inj.period_d, inj.epoch + phasefold.BKJD_REF, inj.duration_h)
        process_target(757450, [str(path)], eph)  # warm-up (imports)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            result = process_target(757450, [str(path)], eph)
            times.append(time.perf_counter() - start)
        print(f"process_target, one Kepler-sized quarter (4400 x 11 x 11): median "
              f"{np.median(times):.2f} s of 3 (file written in {made:.1f} s); status {result.report['status']}")


if __name__ == "__main__":
    main()
