"""Bootstrap of a ladder fit: resample, refit both steps, predict the target, B times per task.

Two ways to resample the ladder (`resample`):

- `runs` (default): whole runs (each with all its checkpoints) are drawn with replacement within
  each arm, as a pairs bootstrap over the ladder's points; a draw with too few distinct (N, D) to
  identify the law is drawn again (the count is reported), so the intervals are conditional on an
  identifiable ladder.
- `residuals`: the design (which sizes and budgets were trained) is kept and each replicate adds
  the fit's own centred residuals, drawn with replacement within each arm and inflated by
  sqrt(n / (n - p)) (a fixed-design bootstrap). On ladders of 8 runs per arm it covers the truth
  a little less often than `runs` in simulation (docs/ladder.md), because a 5-parameter fit to 8
  points leaves residuals smaller than the noise.

Where per-item data exists the items of a task are also resampled in every replicate (the same
draw for every row and both arms: the evaluation set is shared, so the difference is paired), and
each row's loss and accuracy are recomputed from them. Refits start from the full fit (one start;
`refit_law` and `refit_sigmoid`, docs/ladder.md "How the replicates are refitted").
One task is one unit of work, so tasks can run in parallel processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codestage.study.ladder.law import LawData, LawFit, SigmoidFit, check_identifiable, log_predict, refit_law, refit_sigmoid
from codestage.study.ladder.points import ItemData

RESAMPLE = ("residuals", "runs")
_MAX_REDRAWS = 100


@dataclass(frozen=True)
class Unit:
    """One step-1 fit: the arms it covers (one, or all when exponents are shared)."""

    arms: tuple[int, ...]
    fit: LawFit


@dataclass(frozen=True)
class TaskProblem:
    """Everything one task's bootstrap needs (picklable)."""

    task: str
    arms: tuple[str, ...]
    group: np.ndarray          # arm index of each row
    run: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray       # NaN where absent
    step1: np.ndarray          # bool: row is a step-1 point
    units: tuple[Unit, ...]
    sigmoids: tuple[SigmoidFit | None, ...]  # per arm
    items: ItemData | None     # rows index this task's rows
    target: tuple[float, float]
    delta: float
    resample: str
    n_boot: int
    seed: np.random.SeedSequence


@dataclass
class TaskDraws:
    """B predictions per arm (NaN where a refit failed) and what happened."""

    loss: np.ndarray           # (arms, B), NaN where the step-1 refit failed
    accuracy: np.ndarray       # (arms, B), NaN where a refit failed or step 2 is absent
    redraws: int


def _unit_rows(p: TaskProblem, unit: Unit, rows: np.ndarray) -> np.ndarray:
    return rows[np.isin(p.group[rows], unit.arms)]


def _local_group(unit: Unit, group: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.array(unit.arms), group)


def _residual_setup(p: TaskProblem):
    """Centred, inflated residuals of each arm's step-1 and step-2 fits on the original data."""
    s1 = {}
    for unit in p.units:
        rows = _unit_rows(p, unit, np.flatnonzero(p.step1))
        g = _local_group(unit, p.group[rows])
        fitted = unit.fit.log_predict(p.params[rows], p.tokens[rows], g)
        res = np.log(p.loss[rows]) - fitted
        n, k = len(rows), unit.fit.law.n_params
        infl = np.sqrt(n / (n - k))
        pools = {}
        for arm in unit.arms:
            m = p.group[rows] == arm
            r = res[m] - res[m].mean()
            pools[arm] = (np.flatnonzero(m), r * infl)
        s1[unit.arms] = (rows, fitted, pools)
    s2 = {}
    for arm, sig in enumerate(p.sigmoids):
        if sig is None:
            continue
        rows = np.flatnonzero((p.group == arm) & np.isfinite(p.accuracy))
        e = p.accuracy[rows] - sig.predict(p.loss[rows])
        n, k = len(rows), sig.curve.n_params
        s2[arm] = (rows, (e - e.mean()) * np.sqrt(n / (n - k)))
    return s1, s2


def _runs_by_arm(p: TaskProblem) -> list[list[np.ndarray]]:
    """For each arm, the row indices of each of its runs."""
    out = []
    for arm in range(len(p.arms)):
        mine = np.flatnonzero(p.group == arm)
        out.append([mine[p.run[mine] == r] for r in np.unique(p.run[mine])])
    return out


def _draw_runs(p: TaskProblem, runs: list[list[np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Rows of runs drawn with replacement within each arm; redrawn while a unit is unidentifiable."""
    for attempt in range(_MAX_REDRAWS):
        rows = np.concatenate([arm_runs[i] for arm_runs in runs for i in rng.integers(0, len(arm_runs), len(arm_runs))])
        ok = True
        for unit in p.units:
            s1 = _unit_rows(p, unit, rows[p.step1[rows]])
            data = LawData.build(p.params[s1], p.tokens[s1], p.loss[s1], _local_group(unit, p.group[s1]))
            if check_identifiable(data, unit.fit.law) is not None:
                ok = False
                break
        if ok:
            return rows, attempt
    return rows, _MAX_REDRAWS


def run_task(p: TaskProblem) -> TaskDraws:
    """The task's B replicate predictions at the target, per arm."""
    rng = np.random.default_rng(p.seed)
    n_arms = len(p.arms)
    out_loss = np.full((n_arms, p.n_boot), np.nan)
    out_acc = np.full((n_arms, p.n_boot), np.nan)
    redraws = 0
    item_loss = item_acc = None
    if p.items is not None:
        n = len(p.items.ids)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=p.n_boot).astype(np.float64)
        item_loss = p.items.losses(counts)
        item_acc = p.items.accuracies(counts)
    s1_pool, s2_pool = _residual_setup(p) if p.resample == "residuals" else ({}, {})
    all_rows = np.arange(len(p.group))
    runs = _runs_by_arm(p) if p.resample == "runs" else []
    n_target, d_target = p.target
    for b in range(p.n_boot):
        loss_b = p.loss.copy()
        acc_b = p.accuracy.copy()
        if item_loss is not None:
            loss_b[p.items.rows] = item_loss[b]
            if item_acc is not None:
                acc_b[p.items.rows] = item_acc[b]
        if p.resample == "runs":
            rows, extra = _draw_runs(p, runs, rng)
            redraws += extra
        else:
            rows = all_rows
        pred_loss = np.full(n_arms, np.nan)
        for unit in p.units:
            if p.resample == "runs":
                s1 = _unit_rows(p, unit, rows[p.step1[rows]])
                y = np.log(loss_b[s1])
            else:
                s1, fitted, pools = s1_pool[unit.arms]
                y = fitted + np.log(loss_b[s1]) - np.log(p.loss[s1])
                for idx, res in pools.values():
                    y[idx] += res[rng.integers(0, len(res), len(res))]
            data = LawData.build(p.params[s1], p.tokens[s1], np.exp(y), _local_group(unit, p.group[s1]))
            theta = refit_law(unit.fit, data, y, p.delta)
            if theta is not None:
                for j, arm in enumerate(unit.arms):
                    pred_loss[arm] = np.exp(log_predict(unit.fit.law, theta, n_target, d_target, j))
        for arm, sig in enumerate(p.sigmoids):
            out_loss[arm, b] = pred_loss[arm]
            if sig is None or not np.isfinite(pred_loss[arm]):
                continue
            if p.resample == "runs":
                r2 = rows[(p.group[rows] == arm) & np.isfinite(acc_b[rows])]
                x, y2 = loss_b[r2], acc_b[r2]
            else:
                r2, res = s2_pool[arm]
                x = loss_b[r2]
                y2 = sig.predict(x) + res[rng.integers(0, len(res), len(res))] + (acc_b[r2] - p.accuracy[r2])
            q = refit_sigmoid(sig, x, y2)
            if q is not None:
                out_acc[arm, b] = float(np.clip(sig.curve(q, pred_loss[arm]), 0.0, 1.0))
    return TaskDraws(out_loss, out_acc, redraws)
