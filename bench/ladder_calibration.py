"""Coverage of the ladder fit's bootstrap intervals on simulated ladders with a known truth
(the calibration tables of docs/ladder.md).

  python bench/ladder_calibration.py [--ladders 60] [--bootstrap 100] [--huber-delta 1e-3]
      [--resample runs] [--sizes 5e6,1e7,2e7,4e7] [--budgets 10,40] [--target 2.6e9,4.2e10]
      [--arms 1|2] [--per-arm-exponents] [--code-beta 0.28]

Truth: NL is E = 0.8, A = 200, B = 400, alpha = 0.34, beta = 0.28; with --arms 2, CODE is E = 0.78,
B = 380, beta = --code-beta (the rest equal). 1% log-normal noise per point, one checkpoint per run;
ladder i is simulated with seed 1000 + i and bootstrapped with seed i.
Printed: how often the 95% interval of NL's target loss holds the truth and its median width
relative to the truth; with two arms also the difference's coverage, median width and how often
its p-value is below 0.05.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ladders", type=int, default=60)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--huber-delta", type=float, default=1e-3)
    ap.add_argument("--resample", default="runs")
    ap.add_argument("--sizes", default="5e6,1e7,2e7,4e7")
    ap.add_argument("--budgets", default="10,40")
    ap.add_argument("--target", default="2.6e9,4.2e10", help="N,D")
    ap.add_argument("--arms", type=int, choices=(1, 2), default=1)
    ap.add_argument("--code-beta", type=float, default=0.28)
    ap.add_argument("--per-arm-exponents", action="store_true")
    args = ap.parse_args()

    from codestage.study.ladder.fit import FitSettings, fit_ladder
    from codestage.study.ladder.points import load_points
    from codestage.study.ladder.simulate import TrueLaw, simulate_rows, write_rows

    nl = TrueLaw(E=0.8, A=200.0, B=400.0, alpha=0.34, beta=0.28)
    code = TrueLaw(E=0.78, A=200.0, B=380.0, alpha=0.34, beta=args.code_beta)
    target = tuple(float(x) for x in args.target.split(","))
    laws = {("NL", "t"): nl} if args.arms == 1 else {("NL", "t"): nl, ("CODE", "t"): code}
    arms = ("NL",) if args.arms == 1 else ("NL", "CODE")
    sizes = [float(x) for x in args.sizes.split(",")]
    budgets = [float(x) for x in args.budgets.split(",")]
    truth_nl = float(nl.loss(*target))
    truth_diff = float(code.loss(*target)) - truth_nl
    hits, widths, diff_hits, diff_widths, significant = [], [], [], [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.ladders):
            rows = simulate_rows(laws, sizes, budgets, noise=0.01, seed=1000 + i)
            points = load_points(write_rows(rows, Path(tmp) / f"ladder{i}.csv"))
            doc = fit_ladder(points, FitSettings(target=target, arms=arms, bootstrap=args.bootstrap, seed=i, workers=1,
                                                 resample=args.resample, huber_delta=args.huber_delta,
                                                 share_exponents=not args.per_arm_exponents))
            task = doc["tasks"]["t"]
            lo, hi = task["arms"]["NL"]["prediction"]["loss_ci95"]
            hits.append(lo <= truth_nl <= hi)
            widths.append((hi - lo) / truth_nl)
            if args.arms == 2:
                d = task["difference"]["loss"]
                diff_hits.append(d["ci95"][0] <= truth_diff <= d["ci95"][1])
                diff_widths.append(d["ci95"][1] - d["ci95"][0])
                significant.append(d["p_value"] < 0.05)
    print(f"{args.ladders} ladders ({len(sizes)} sizes x {len(budgets)} budgets), target N={target[0]:g}, "
          f"D={target[1]:g}, {args.bootstrap} replicates, "
          f"resample {args.resample}, huber delta {args.huber_delta:g}, "
          f"{'per-arm' if args.per_arm_exponents else 'shared'} exponents, {time.perf_counter() - t0:.0f} s")
    print(f"NL target loss: coverage {np.mean(hits):.2f}, median width / truth {np.median(widths):.2f}")
    if args.arms == 2:
        print(f"difference (true {truth_diff:+.3f}): coverage {np.mean(diff_hits):.2f}, median width "
              f"{np.median(diff_widths):.2f}, p < 0.05 in {100 * np.mean(significant):.0f}%")


if __name__ == "__main__":
    main()
