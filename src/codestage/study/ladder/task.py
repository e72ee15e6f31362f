"""One task of a ladder fit: step 1 for each arm (or both arms with shared exponents) and step 2
for each arm on the given rows, or the reason the rows cannot support them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from codestage.errors import DataError
from codestage.study.ladder.bootstrap import TaskProblem, Unit
from codestage.study.ladder.law import Law, LawData, LawFit, SigmoidFit, check_identifiable, fit_law, fit_sigmoid, log_law
from codestage.study.ladder.points import ItemData, Points

if TYPE_CHECKING:
    from codestage.study.ladder.fit import FitSettings

MIN_SLOPE_DROP = 0.01        # step 2: a curve that moves accuracy less than this over the data is flat


def json_float(x: Any) -> float | None:
    """A JSON-safe float (None for NaN/inf)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _step2_gate(loss: np.ndarray, acc: np.ndarray, chance: float | None, n_params: int) -> str | None:
    """Why step 2 should not be fitted to these points, or None."""
    if acc.size == 0:
        return "no accuracy in POINTS for this arm and task"
    distinct = len({(round(a, 12), round(b, 12)) for a, b in zip(loss, acc)})
    if distinct < n_params + 1 or len(set(np.round(acc, 12))) < 3:
        return (f"too few distinct points ({distinct} (loss, accuracy) pairs, {len(set(np.round(acc, 12)))} accuracy "
                f"values) for the {n_params}-parameter sigmoid")
    span = f"accuracies {acc.min():.3f}-{acc.max():.3f}" + (f", chance {chance:.3f}" if chance is not None else "")
    if np.ptp(loss) == 0:
        return "every point has the same loss"
    slope = stats.linregress(loss, acc)
    p_one = slope.pvalue / 2 if slope.slope < 0 else 1 - slope.pvalue / 2
    if not (slope.slope < 0 and p_one < 0.05):
        flat = " (flat at chance)" if chance is not None and abs(float(np.mean(acc)) - chance) < 0.02 else ""
        return f"accuracy does not fall with loss{flat}: slope {slope.slope:+.3g}, one-sided p={p_one:.2f}; {span}"
    return None


def fit_step2(loss: np.ndarray, acc: np.ndarray, chance: float | None) -> tuple[SigmoidFit | None, str | None]:
    n_params = 3 if chance is not None else 4
    why = _step2_gate(loss, acc, chance, n_params)
    if why:
        return None, why
    fit, why = fit_sigmoid(loss, acc, chance)
    if fit is None:
        return None, why
    drop = float(fit.predict(loss.min()) - fit.predict(loss.max()))
    if drop < MIN_SLOPE_DROP:
        return None, f"the fitted sigmoid is flat over the observed losses (accuracy moves {drop:.4f})"
    return fit, None


@dataclass
class TaskFit:
    """One task's fits, and what its bootstrap needs."""

    problem: TaskProblem
    step1: dict[int, tuple[LawFit, int]]     # arm -> (fit, group index within it)
    step2: list[SigmoidFit | None]
    step2_why: list[str | None]


def task_rows(points: Points, task: str, arms: tuple[str, ...]) -> np.ndarray:
    return np.flatnonzero((points.task == task) & np.isin(points.arm, arms))


def fit_task(points: Points, task: str, rows: np.ndarray, s: FitSettings, strict: bool,
              seed: np.random.SeedSequence | None = None) -> TaskFit | str:
    """Fit steps 1 and 2 of one task on `rows`; a reason string instead when the data cannot
    support the law (a DataError when `strict`)."""
    group = np.array([s.arms.index(a) for a in points.arm[rows]])
    step1_mask = points.final[rows] if s.step1_points == "final" else np.ones(len(rows), dtype=bool)
    unit_arms = [tuple(range(len(s.arms)))] if s.share_exponents and len(s.arms) > 1 else [(i,) for i in range(len(s.arms))]
    units, step1 = [], {}
    for arms in unit_arms:
        m = step1_mask & np.isin(group, arms)
        law = Law(groups=len(arms), shared=len(arms) > 1)
        data = LawData.build(points.params[rows][m], points.tokens[rows][m], points.loss[rows][m],
                             np.searchsorted(np.array(arms), group[m]))
        problem = check_identifiable(data, law)
        if problem:
            g, why = problem
            names = ", ".join(s.arms[a] for a in arms) if g is None else s.arms[arms[g]]
            if strict:
                raise DataError(f"{points.path}: arm {names}, task {task}: {why} (step 1 uses "
                                f"{'final checkpoints' if s.step1_points == 'final' else 'every row'})")
            return f"arm {names}: {why}"
        fit = fit_law(data, law, s.huber_delta)
        units.append(Unit(arms, fit))
        for j, a in enumerate(arms):
            step1[a] = (fit, j)
    sigmoids, whys = [], []
    chance = points.chance.get(task)
    for a in range(len(s.arms)):
        m = (group == a) & np.isfinite(points.accuracy[rows])
        sig, why = fit_step2(points.loss[rows][m], points.accuracy[rows][m], chance)
        sigmoids.append(sig)
        whys.append(why)
    items = points.items.get(task)
    local_items = None
    if items is not None:
        keep = np.isin(items.rows, rows)
        pos = np.searchsorted(rows, items.rows[keep])
        local_items = ItemData(pos, items.ids, items.num[keep], None if items.den is None else items.den[keep],
                               None if items.correct is None else items.correct[keep])
    problem = TaskProblem(task=task, arms=s.arms, group=group, run=points.run[rows], params=points.params[rows],
                          tokens=points.tokens[rows], loss=points.loss[rows], accuracy=points.accuracy[rows],
                          step1=step1_mask, units=tuple(units), sigmoids=tuple(sigmoids), items=local_items,
                          target=s.target, delta=s.huber_delta, resample=s.resample, n_boot=s.bootstrap,
                          seed=seed if seed is not None else np.random.SeedSequence(s.seed))
    return TaskFit(problem, step1, sigmoids, whys)


def equal_fit_losses(tf: TaskFit, arm: int, params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Losses at (params, tokens) under each of the arm's equally good step-1 fits (`LawFit.equal_fits`),
    shape (fits, points); arms fitted together share the row order, so rows pair across arms."""
    fit, j = tf.step1[arm]
    u, v = np.log(np.asarray(params, dtype=np.float64)), np.log(np.asarray(tokens, dtype=np.float64))
    return np.exp(np.stack([log_law(fit.law.per_group(theta)[j], u, v)[0] for theta in fit.equal_fits]))


def equal_fit_difference(tf: TaskFit, params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(lowest, highest) loss difference arm 1 - arm 0 over the equally good fits, per point: paired
    fit by fit where the arms share one fit, else the extremes of each arm's range."""
    l0 = equal_fit_losses(tf, 0, params, tokens)
    l1 = equal_fit_losses(tf, 1, params, tokens)
    if tf.step1[0][0] is tf.step1[1][0]:
        d = l1 - l0
        return np.stack([d.min(axis=0), d.max(axis=0)])
    return np.stack([l1.min(axis=0) - l0.max(axis=0), l1.max(axis=0) - l0.min(axis=0)])


def predict(tf: TaskFit, arm: int, target: tuple[float, float]) -> tuple[float, float | None]:
    fit, j = tf.step1[arm]
    loss = float(np.exp(fit.log_predict(np.array([target[0]]), np.array([target[1]]), j)[0]))
    sig = tf.step2[arm]
    return loss, (None if sig is None else float(sig.predict(loss)))
