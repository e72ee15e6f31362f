"""Ways to refit a ladder task's bootstrap replicates, on the same replicates: time per replicate and
how many reach the minimum that the full multi-start fit (`fit_law`) finds on each replicate.

  python bench/ladder_refit_methods.py [--replicates 60] [--task task0] [--seed 0]
  python bench/ladder_refit_methods.py --points docs/results/ladder/run2/points.csv --task logiqa_zh --one-at-a-time

The task comes from bench/ladder_fit.py's simulated ladder, or from a real POINTS file (--points;
its per-item files are not resampled here, only its runs): shared exponents (8 parameters, 16
final points per replicate for a ladder of 8 runs per arm), runs resampled within each arm, Huber
delta 1e-3. Methods, each from `refit_start`:

  warm alone       MINPACK Levenberg-Marquardt per replicate from the full fit, bounded fallback
                   (the library's refit until 2026-12-01)
  one at a time    `refit_law`, the library's: the warm fit and one cold bounded fit from the
                   replicate's best grid start, the better of the two
  stacked, lsmr    all replicates as ONE scipy least_squares problem (parameters replicates x 8,
                   residuals replicates x 16): the Huber loss as psi residuals (`HuberPsi`), a sparse
                   block-diagonal Jacobian, method trf, tr_solver lsmr
  stacked, huber   the same on the plain log residuals with loss="huber", f_scale=delta
  stacked, exact   chunks of 10 replicates, dense Jacobian, tr_solver exact (cost grows as chunk^3)

A stacked problem's minimum is every replicate's minimum, but scipy's trust region, step acceptance
and stopping rules are shared by all blocks; this measures what that costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.optimize import least_squares

from ladder_fit import bench_rows


def _stacked(law, blocks, delta: float, kind: str, chunk: int):
    """One least_squares call per chunk of replicates; returns their parameters (replicates, 8)."""
    from codestage.study.ladder.law import N_LAW, log_law

    out = []
    for lo in range(0, len(blocks), chunk):
        part = blocks[lo:lo + chunk]
        k, n, p = len(part), len(part[0][1].y), law.n_params
        u = np.stack([d.u for _, d in part])
        v = np.stack([d.v for _, d in part])
        y = np.stack([d.y for _, d in part])
        pos = law.pos[np.stack([d.group for _, d in part])]                     # (k, n, 5)
        cols = (np.arange(k)[:, None, None] * p + pos).ravel()
        rows = np.repeat(np.arange(k * n), N_LAW)
        blk = np.arange(k)[:, None, None]

        def parts(x):
            log_loss, w1, w2 = log_law(x.reshape(k, p)[blk, pos], u, v)
            r = (log_loss - y).ravel()
            local = np.stack([w1, w2, 1 - w1 - w2, -u * w1, -v * w2], axis=-1).ravel()
            return r, local

        def jac_matrix(values):
            if kind == "exact":
                dense = np.zeros((k * n, k * p))
                dense[rows, cols] = values
                return dense
            return sparse.csr_matrix((values, (rows, cols)), shape=(k * n, k * p))

        def psi_parts(x):
            r, local = parts(x)
            a = np.abs(r)
            root = np.sqrt(np.where(a > delta, 2 * delta * a - delta * delta, 1.0))
            return np.where(a > delta, np.copysign(root, r), r), np.where(a > delta, delta / root, 1.0), local

        def psi_jac(x):
            _, dpsi, local = psi_parts(x)
            return jac_matrix(np.repeat(dpsi, N_LAW) * local)

        x0 = np.concatenate([x for x, _ in part])
        common = dict(method="trf", tr_solver="exact" if kind == "exact" else "lsmr", x_scale="jac", max_nfev=1000)
        if kind == "huber":
            r = least_squares(lambda x: parts(x)[0], x0, jac=lambda x: jac_matrix(parts(x)[1]), loss="huber",
                              f_scale=delta, **common)
        else:
            r = least_squares(lambda x: psi_parts(x)[0], x0, jac=psi_jac, **common)
        out.append(r.x.reshape(k, p))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=60)
    ap.add_argument("--task", default="task0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", type=Path, help="a POINTS file instead of the simulated bench ladder")
    ap.add_argument("--one-at-a-time", action="store_true", help="skip the stacked methods (slow)")
    args = ap.parse_args()

    from codestage.study.ladder.bootstrap import _draw_runs, _local_group, _runs_by_arm, _unit_rows
    from codestage.study.ladder.fit import FitSettings
    from codestage.study.ladder.law import LawData, _refit_warm, _residuals, fit_law, huber, log_law, refit_law, refit_start
    from codestage.study.ladder.points import load_points
    from codestage.study.ladder.simulate import write_rows
    from codestage.study.ladder.task import fit_task, task_rows

    if args.points:
        points = load_points(args.points)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            points = load_points(write_rows(bench_rows(), Path(tmp) / "points.csv"))
    s = FitSettings(bootstrap=args.replicates, workers=1)
    tf = fit_task(points, args.task, task_rows(points, args.task, s.arms), s, strict=True)
    p, unit = tf.problem, tf.problem.units[0]
    law, delta = unit.fit.law, p.delta
    rng = np.random.default_rng(args.seed)
    runs = _runs_by_arm(p)
    datas = []
    for _ in range(args.replicates):
        rows, _ = _draw_runs(p, runs, rng)
        s1 = _unit_rows(p, unit, rows[p.step1[rows]])
        datas.append(LawData.build(p.params[s1], p.tokens[s1], p.loss[s1], _local_group(unit, p.group[s1])))

    def cost(theta, d) -> float:
        return huber(log_law(law.per_group(theta)[d.group], d.u, d.v)[0] - d.y, delta) if theta is not None else np.inf

    warnings.simplefilter("ignore", RuntimeWarning)
    t0 = time.perf_counter()
    best = np.array([fit_law(d, law, delta).cost for d in datas])
    ref_s = time.perf_counter() - t0
    blocks = [(refit_start(unit.fit, d.y), d) for d in datas]
    def warm(d):
        res, jac = _residuals(law, d, d.y)
        return _refit_warm(unit.fit, d, d.y, delta, res, jac, *law.bounds(float(d.y.max())))

    methods = {
        "warm alone": lambda: [warm(d) for d in datas],
        "one at a time": lambda: [refit_law(unit.fit, d, d.y, delta) for d in datas],
        "stacked, lsmr": lambda: _stacked(law, blocks, delta, "psi", len(blocks)),
        "stacked, huber": lambda: _stacked(law, blocks, delta, "huber", len(blocks)),
        "stacked, exact": lambda: _stacked(law, blocks, delta, "exact", 10),
    }
    print(f"task {args.task}, {args.replicates} replicates, huber delta {delta:g}; multi-start fit_law (the "
          f"reference): {1e3 * ref_s / args.replicates:.0f} ms per replicate")
    for name, run in methods.items():
        if args.one_at_a_time and name.startswith("stacked"):
            continue
        t0 = time.perf_counter()
        thetas = run()
        ms = 1e3 * (time.perf_counter() - t0) / args.replicates
        rel = np.array([(cost(t, d) - b) / b for t, d, b in zip(thetas, datas, best)])
        print(f"  {name:15s} {ms:8.1f} ms per replicate; at the reference minimum (1e-6): {np.mean(rel <= 1e-6):.2f}, "
              f"worse by more than 1e-3: {np.mean(rel > 1e-3):.2f}")


if __name__ == "__main__":
    main()
