"""Time of a ladder fit and of its bootstrap on a ladder of the GPU study's shape.

  python bench/ladder_fit.py [--bootstrap 10000] [--workers 0] [--resample runs] [--huber-delta 1e-3]

The ladder: 4 sizes (5M-40M parameters) x 2 token budgets (10 and 40 tokens/param) x 4 checkpoints
(25/50/75/100%) x 2 arms x 8 tasks = 512 points, simulated from known laws with 1% noise and
400-item binomial accuracies (codestage.study.ladder.simulate). Reported, in seconds:
  fit        reading POINTS and fitting steps 1 and 2 for all 16 (arm, task) pairs, no bootstrap
  bootstrap  the same with --bootstrap replicates (refits of both steps per replicate, arm and task),
             minus the fit; and the time per refit of one arm and task
  intervals  the width of the 95% interval of each target loss, relative to the prediction (a refit
             that stops at its start narrows them: the check that the speed was not bought that way)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_rows() -> list[dict]:
    """The bench ladder's POINTS rows (also used by bench/ladder_refit_methods.py)."""
    from codestage.study.ladder.simulate import TrueLaw, simulate_rows

    laws = {}
    for i in range(8):
        t = f"task{i}"
        laws[("NL", t)] = TrueLaw(E=0.8 + 0.05 * i, A=200.0, B=400.0, alpha=0.34, beta=0.28, L0=3.3 + 0.05 * i, s=3.0)
        laws[("CODE", t)] = TrueLaw(E=0.78 + 0.05 * i, A=200.0, B=380.0, alpha=0.34, beta=0.28, L0=3.3 + 0.05 * i, s=3.0)
    return simulate_rows(laws, [5e6, 1e7, 2e7, 4e7], [10, 40], [0.25, 0.5, 0.75, 1.0], noise=0.01, n_items=400, seed=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    ap.add_argument("--resample", default="runs")
    ap.add_argument("--huber-delta", type=float, default=1e-3)
    args = ap.parse_args()

    from codestage.study.ladder.fit import FitSettings, fit_ladder
    from codestage.study.ladder.points import load_points
    from codestage.study.ladder.simulate import write_rows

    rows = bench_rows()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_rows(rows, Path(tmp) / "points.csv")
        common = dict(resample=args.resample, huber_delta=args.huber_delta, workers=args.workers)
        t0 = time.perf_counter()
        fit_ladder(load_points(path), FitSettings(bootstrap=0, **common))
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        doc = fit_ladder(load_points(path), FitSettings(bootstrap=args.bootstrap, **common))
        total_s = time.perf_counter() - t0
    boot_s = total_s - fit_s
    refits = args.bootstrap * 16
    workers = args.workers or os.cpu_count() or 1
    preds = [a["prediction"] for e in doc["tasks"].values() for a in e["arms"].values()]
    failed = sum(p["bootstrap"]["failed"] for p in preds)
    widths = [(p["loss_ci95"][1] - p["loss_ci95"][0]) / p["loss"] for p in preds if p["loss_ci95"]]
    print(f"points: {len(rows)} (16 arm x task fits of 8 final + 32 checkpoint points), cores: {os.cpu_count()}, "
          f"workers: {min(workers, 8)}, resample: {args.resample}, huber delta: {args.huber_delta:g}")
    print(f"fit (no bootstrap): {fit_s:.2f} s")
    print(f"bootstrap: {args.bootstrap} replicates: {boot_s:.1f} s "
          f"({1e3 * boot_s * min(workers, 8) / refits:.2f} ms per arm-task refit of both steps per worker; "
          f"{failed} failed refits)")
    print(f"95% interval of the target loss, width / prediction, over the 16 arm x task pairs: median "
          f"{float(np.median(widths)):.3f}, range {min(widths):.3f}-{max(widths):.3f}")


if __name__ == "__main__":
    main()
