"""Fit a ladder: per task and arm, step 1 (loss from N, D) and step 2 (accuracy from loss), predict
the target with bootstrap intervals, the difference between arms with a p-value, a backtest on
held-out rungs and the predictability of each task; the result is the fit.json document.

Nothing here knows how the points were made: `fit_ladder(load_points(path), FitSettings(...))`.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from codestage.atomic import write_json
from codestage.errors import ConfigError, DataError
from codestage.study.ladder.bootstrap import RESAMPLE, TaskDraws, TaskProblem, Unit, run_task
from codestage.study.ladder.law import (HUBER_DELTA, Law, LawData, LawFit, SigmoidFit, check_identifiable, fit_law,
                                        fit_sigmoid, natural)
from codestage.study.ladder.points import ItemData, Points, describe

SCHEMA = "codestage.ladder.fit/1"
TARGET = (2.6e9, 4.2e10)     # the paper's PanGu-alpha 2.6B, ~42B tokens
MIN_SLOPE_DROP = 0.01        # step 2: a curve that moves accuracy less than this over the data is flat
_POOL_MIN_REPLICATES = 2000  # below this many replicate-tasks a process pool costs more than it saves


@dataclass(frozen=True)
class FitSettings:
    target: tuple[float, float] = TARGET
    arms: tuple[str, ...] = ("NL", "CODE")
    bootstrap: int = 1000
    seed: int = 0
    resample: str = "runs"
    huber_delta: float = HUBER_DELTA
    share_exponents: bool = True
    step1_points: str = "final"
    holdout: str | None = None
    last: int = 3
    workers: int = 0          # 0: one per CPU core (up to the number of tasks)

    def check(self) -> None:
        n, d = self.target
        if not (math.isfinite(n) and math.isfinite(d) and n > 0 and d > 0):
            raise ConfigError(f"target: N and D must be positive and finite, got N={n!r}, D={d!r}")
        if not self.arms or len(set(self.arms)) != len(self.arms) or len(self.arms) > 2:
            raise ConfigError(f"arms: give one or two distinct arms, got {', '.join(self.arms) or 'none'}")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap: must be >= 0, got {self.bootstrap}")
        if self.resample not in RESAMPLE:
            raise ConfigError(f"resample: {self.resample!r} is not one of {', '.join(RESAMPLE)}")
        if self.step1_points not in ("final", "all"):
            raise ConfigError(f"step1_points: {self.step1_points!r} is not 'final' or 'all'")
        if not self.huber_delta > 0:
            raise ConfigError(f"huber_delta: must be > 0, got {self.huber_delta}")
        if self.last < 2:
            raise ConfigError(f"last: predictability needs at least 2 checkpoints, got {self.last}")


def parse_target(text: str) -> tuple[float, float]:
    """'N=2.6e9,D=4.2e10' -> (2.6e9, 4.2e10); anything else is a ConfigError that shows the form."""
    form = "expected N=<params>,D=<tokens>, e.g. N=2.6e9,D=4.2e10"
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in ("N", "D"):
            raise ConfigError(f"--target {text!r}: {form}")
        if key in values:
            raise ConfigError(f"--target {text!r}: {key} is given twice")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"--target {text!r}: {key}={raw.strip()!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"--target {text!r}: {key} must be positive and finite")
        values[key] = value
    if set(values) != {"N", "D"}:
        raise ConfigError(f"--target {text!r}: {form}")
    return values["N"], values["D"]


# ---------------------------------------------------------------- helpers
def _f(x: Any) -> float | None:
    """A JSON-safe float (None for NaN/inf)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ci(draws: np.ndarray) -> tuple[list[float] | None, int]:
    ok = draws[np.isfinite(draws)]
    if ok.size < 2:
        return None, int(draws.size - ok.size)
    lo, hi = np.quantile(ok, [0.025, 0.975])
    return [float(lo), float(hi)], int(draws.size - ok.size)


def _p_sign(draws: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value for 'no difference': how often the difference changes sign,
    p = min(1, 2 (1 + min(#{d <= 0}, #{d >= 0})) / (B + 1))."""
    ok = draws[np.isfinite(draws)]
    if ok.size == 0:
        return None
    k = min(int((ok <= 0).sum()), int((ok >= 0).sum()))
    return min(1.0, 2.0 * (k + 1) / (ok.size + 1))


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


def _fit_step2(loss: np.ndarray, acc: np.ndarray, chance: float | None) -> tuple[SigmoidFit | None, str | None]:
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


# ---------------------------------------------------------------- one task
@dataclass
class _TaskFit:
    problem: TaskProblem
    step1: dict[int, tuple[LawFit, int]]     # arm -> (fit, group index within it)
    step2: list[SigmoidFit | None]
    step2_why: list[str | None]


def _task_rows(points: Points, task: str, arms: tuple[str, ...]) -> np.ndarray:
    return np.flatnonzero((points.task == task) & np.isin(points.arm, arms))


def _fit_task(points: Points, task: str, rows: np.ndarray, s: FitSettings, strict: bool,
              seed: np.random.SeedSequence | None = None) -> _TaskFit | str:
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
        sig, why = _fit_step2(points.loss[rows][m], points.accuracy[rows][m], chance)
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
    return _TaskFit(problem, step1, sigmoids, whys)


def _arm_report(points: Points, tf: _TaskFit, arm: int, rows: np.ndarray) -> dict[str, Any]:
    p = tf.problem
    fit, j = tf.step1[arm]
    mine = p.group == arm
    s1 = mine & p.step1
    fitted = fit.log_predict(p.params[s1], p.tokens[s1], j)
    res = np.log(p.loss[s1]) - fitted
    nat = natural(fit.law, fit.theta)[j]
    points_out = [{"run": str(p.run[i]), "params": float(p.params[i]), "tokens": float(p.tokens[i]),
                   "loss": float(p.loss[i]), "accuracy": _f(p.accuracy[i]), "final": bool(points.final[rows[i]]),
                   "step1": bool(p.step1[i]), "n_items": _f(points.n_items[rows[i]]),
                   "line": int(points.line[rows[i]])} for i in np.flatnonzero(mine)]
    out: dict[str, Any] = {
        "n_points": int(mine.sum()), "n_runs": int(len(set(p.run[mine]))), "points": points_out,
        "step1": {"params": nat, "shared_exponents": fit.law.shared, "huber_loss": fit.cost, "starts": fit.starts,
                  "converged": fit.converged, "n_points": int(s1.sum()),
                  "rmse_log": float(np.sqrt(np.mean(res ** 2))), "max_abs_log_residual": float(np.abs(res).max()),
                  "residuals": [{"run": str(p.run[i]), "params": float(p.params[i]), "tokens": float(p.tokens[i]),
                                 "loss": float(p.loss[i]), "fitted": float(np.exp(f)), "log_residual": float(r)}
                                for i, f, r in zip(np.flatnonzero(s1), fitted, res)]},
    }
    sig = tf.step2[arm]
    if sig is None:
        out["step2"] = None
        out["step2_why"] = tf.step2_why[arm]
    else:
        m = mine & np.isfinite(p.accuracy)
        out["step2"] = {"params": sig.curve.natural(sig.p), "chance": sig.curve.chance, "n_points": int(m.sum()),
                        "rmse": sig.rmse, "loss_range": [float(p.loss[m].min()), float(p.loss[m].max())]}
    return out


def _predict(tf: _TaskFit, arm: int, target: tuple[float, float]) -> tuple[float, float | None]:
    fit, j = tf.step1[arm]
    loss = float(np.exp(fit.log_predict(np.array([target[0]]), np.array([target[1]]), j)[0]))
    sig = tf.step2[arm]
    return loss, (None if sig is None else float(sig.predict(loss)))


# ---------------------------------------------------------------- backtest
def _holdout_runs(points: Points, spec: str, arms: tuple[str, ...]) -> set[tuple[str, str]]:
    """The (arm, run) pairs a --holdout spec names: 'largest', params values, run ids (comma list)."""
    rows = np.flatnonzero(np.isin(points.arm, arms))
    pairs = set(zip(points.arm[rows].tolist(), points.run[rows].tolist()))
    held: set[tuple[str, str]] = set()
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token == "largest":
            for arm in arms:
                mine = rows[points.arm[rows] == arm]
                top = points.params[mine].max()
                held |= {(arm, r) for r in points.run[mine][points.params[mine] == top].tolist()}
        elif any(r == token for _, r in pairs):
            held |= {(a, r) for a, r in pairs if r == token}
        else:
            try:
                value = float(token)
            except ValueError:
                value = math.nan
            match = rows[np.isclose(points.params[rows], value, rtol=1e-6, atol=0)] if math.isfinite(value) else rows[:0]
            if match.size == 0:
                rungs = ", ".join(f"{v:g}" for v in sorted(set(points.params[rows].tolist())))
                raise ConfigError(f"--holdout {token!r}: no rung with that params value or run id "
                                  f"(params: {rungs}; or 'largest'{'; or a run id' if points.has_runs else ''})")
            held |= set(zip(points.arm[match].tolist(), points.run[match].tolist()))
    return held


def _backtest_task(points: Points, task: str, rows: np.ndarray, held: set[tuple[str, str]], s: FitSettings) -> dict[str, Any]:
    is_held = np.array([(a, r) in held for a, r in zip(points.arm[rows], points.run[rows])], dtype=bool)
    if not is_held.any():
        return {"why": "no held-out run has this task"}
    tf = _fit_task(points, task, rows[~is_held], s, strict=False)
    if isinstance(tf, str):
        return {"why": f"the ladder without the held-out rungs cannot be fitted: {tf}"}
    out: dict[str, Any] = {"arms": {}}
    preds: dict[tuple[int, float, float], tuple[float, float]] = {}
    for a, arm in enumerate(s.arms):
        test = rows[is_held & points.final[rows] & (points.arm[rows] == arm)]
        fit, j = tf.step1[a]
        sig = tf.step2[a]
        cases = []
        for i in test:
            loss_pred = float(np.exp(fit.log_predict(points.params[i:i + 1], points.tokens[i:i + 1], j)[0]))
            acc = points.accuracy[i]
            acc_pred = None if sig is None else float(sig.predict(loss_pred))
            cases.append({"run": str(points.run[i]), "params": float(points.params[i]), "tokens": float(points.tokens[i]),
                          "loss": float(points.loss[i]), "loss_pred": loss_pred,
                          "loss_abs_error": abs(loss_pred - points.loss[i]),
                          "loss_rel_error": abs(loss_pred - points.loss[i]) / points.loss[i],
                          "accuracy": _f(acc), "accuracy_pred": acc_pred,
                          "accuracy_abs_error": None if acc_pred is None or not np.isfinite(acc) else abs(acc_pred - acc)})
            preds[(a, float(points.params[i]), float(points.tokens[i]))] = (loss_pred - points.loss[i],
                                                                             math.nan if acc_pred is None else acc_pred - acc)
        acc_err = [c["accuracy_abs_error"] for c in cases if c["accuracy_abs_error"] is not None]
        out["arms"][arm] = {
            "held_out": cases,
            "loss_abs_error": _f(np.mean([c["loss_abs_error"] for c in cases])) if cases else None,
            "loss_rel_error": _f(np.mean([c["loss_rel_error"] for c in cases])) if cases else None,
            "accuracy_abs_error": _f(np.mean(acc_err)) if acc_err else None,
            "accuracy_why": None if acc_err else (tf.step2_why[a] or "no accuracy at the held-out points"),
        }
    if len(s.arms) == 2:
        pairs = []
        for (a, n, d), (e_loss, e_acc) in preds.items():
            if a == 1 and (0, n, d) in preds:
                base = preds[(0, n, d)]
                pairs.append({"params": n, "tokens": d, "loss_diff_error": e_loss - base[0],
                              "accuracy_diff_error": _f(e_acc - base[1])})
        out["difference"] = {"pairs": pairs,
                             "loss_abs_error": _f(np.mean([abs(p["loss_diff_error"]) for p in pairs])) if pairs else None}
    return out


# ---------------------------------------------------------------- predictability
def _predictability(points: Points, rows: np.ndarray, last: int) -> dict[str, Any]:
    """Spread of loss and accuracy over each run's last checkpoints (Bhagia et al.), both arms pooled."""
    runs = {}
    for arm, r in sorted(set(zip(points.arm[rows].tolist(), points.run[rows].tolist()))):
        idx = rows[(points.arm[rows] == arm) & (points.run[rows] == r)]
        if len(idx) < 2:
            continue
        idx = idx[np.argsort(points.order[idx])][-last:]
        acc = points.accuracy[idx]
        runs[f"{arm}/{r}"] = {"params": float(points.params[idx[0]]), "tokens": float(points.tokens[idx[-1]]),
                              "checkpoints": int(len(idx)), "loss_std": float(np.std(points.loss[idx], ddof=1)),
                              "loss_rel_std": float(np.std(points.loss[idx], ddof=1) / np.mean(points.loss[idx])),
                              "accuracy_std": _f(np.std(acc, ddof=1)) if np.isfinite(acc).all() else None}
    if not runs:
        return {"why": "one point per run: predictability needs each run's last checkpoints (columns run and step or fraction)"}
    largest = max(runs, key=lambda r: runs[r]["params"] * runs[r]["tokens"])
    acc_std = [v["accuracy_std"] for v in runs.values() if v["accuracy_std"] is not None]
    return {"last": last, "runs": len(runs),
            "loss_std": float(np.mean([v["loss_std"] for v in runs.values()])),
            "loss_rel_std": float(np.mean([v["loss_rel_std"] for v in runs.values()])),
            "accuracy_std": _f(np.mean(acc_std)) if acc_std else None,
            "largest_run": {"run": largest, **runs[largest]}}


# ---------------------------------------------------------------- the whole ladder
def _check_arms(points: Points, s: FitSettings) -> None:
    have = points.arms
    missing = [a for a in s.arms if a not in have]
    if missing and len(s.arms) == 2 and len(have) == 1:
        raise DataError(f"{points.path}: only arm {have[0]} in POINTS; the difference {s.arms[1]} - {s.arms[0]} "
                        f"needs both (give --arms {have[0]} to fit one arm without a difference)")
    if missing:
        raise DataError(f"{points.path}: arm{'s' if len(missing) > 1 else ''} {', '.join(missing)} not in POINTS "
                        f"(arms there: {', '.join(have)}; choose with --arms)")
    for task in points.tasks:
        lacking = [a for a in s.arms if not ((points.task == task) & (points.arm == a)).any()]
        if lacking and len(lacking) < len(s.arms):
            raise DataError(f"{points.path}: task {task!r} has no rows for arm {', '.join(lacking)}; "
                            "every task needs every arm")


def _run_bootstraps(problems: list[TaskProblem], workers: int) -> list[TaskDraws]:
    total = sum(p.n_boot for p in problems)
    workers = workers or (os.cpu_count() or 1)
    workers = min(workers, len(problems))
    if workers <= 1 or total < _POOL_MIN_REPLICATES:
        return [run_task(p) for p in problems]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(run_task, problems))


def fit_ladder(points: Points, settings: FitSettings) -> dict[str, Any]:
    """The fit.json document for `points` (see docs/ladder.md for every field)."""
    s = settings
    s.check()
    _check_arms(points, s)
    held = _holdout_runs(points, s.holdout, s.arms) if s.holdout else set()
    tasks = [t for t in points.tasks if _task_rows(points, t, s.arms).size]
    seeds = np.random.SeedSequence(s.seed).spawn(len(tasks))
    fits: dict[str, _TaskFit] = {}
    for task, seed in zip(tasks, seeds):
        rows = _task_rows(points, task, s.arms)
        tf = _fit_task(points, task, rows, s, strict=True, seed=seed)
        assert not isinstance(tf, str)
        fits[task] = tf
    draws = _run_bootstraps([fits[t].problem for t in tasks], s.workers) if s.bootstrap > 0 else []
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "inputs": describe(points),
        "target": {"params": s.target[0], "tokens": s.target[1], "compute": 6.0 * s.target[0] * s.target[1],
                   "params_kind": points.params_kind},
        "arms": list(s.arms),
        "difference": f"{s.arms[1]} - {s.arms[0]}" if len(s.arms) == 2 else None,
        "settings": {**asdict(s), "target": list(s.target), "arms": list(s.arms),
                     "law": "L(N, D) = E + A / N^alpha + B / D^beta, log-space Huber fit",
                     "sigmoid": "accuracy = b + a / (1 + exp(s (L - L0))), b = chance when known",
                     "loss": "huber", "ci": "percentile 2.5-97.5 of the bootstrap replicates",
                     "p_value": "two-sided sign test on the bootstrap replicates of the difference"},
        "tasks": {},
    }
    for k, task in enumerate(tasks):
        tf = fits[task]
        rows = _task_rows(points, task, s.arms)
        d = draws[k] if draws else None
        entry: dict[str, Any] = {"chance": points.chance.get(task), "arms": {}}
        point_preds = {}
        for a, arm in enumerate(s.arms):
            rep = _arm_report(points, tf, a, rows)
            loss, acc = _predict(tf, a, s.target)
            point_preds[a] = (loss, acc)
            pred: dict[str, Any] = {"loss": loss, "loss_ci95": None, "accuracy": acc, "accuracy_ci95": None,
                                    "accuracy_why": None if acc is not None else tf.step2_why[a]}
            observed = tf.problem.loss[(tf.problem.group == a) & tf.problem.step1]
            pred["loss_below_ladder"] = bool(loss < observed.min())
            if d is not None:
                pred["loss_ci95"], failed = _ci(d.loss[a])
                pred["bootstrap"] = {"replicates": s.bootstrap, "failed": failed}
                if acc is not None:
                    pred["accuracy_ci95"], fail_a = _ci(d.accuracy[a])
                    pred["bootstrap"]["accuracy_failed"] = fail_a
            else:
                pred["ci_why"] = "no bootstrap (--bootstrap 0)"
            rep["prediction"] = pred
            entry["arms"][arm] = rep
        if len(s.arms) == 2:
            entry["difference"] = _difference(point_preds, d, tf)
        entry["predictability"] = _predictability(points, rows, s.last)
        if s.holdout:
            entry["backtest"] = _backtest_task(points, task, rows, held, s)
            for arm in s.arms:
                bt = entry["backtest"].get("arms", {}).get(arm)
                entry["arms"][arm]["prediction"]["backtest"] = (
                    {k2: bt[k2] for k2 in ("loss_abs_error", "loss_rel_error", "accuracy_abs_error")} if bt else None)
        if d is not None and s.resample == "runs":
            entry["bootstrap_redraws"] = d.redraws
        doc["tasks"][task] = entry
    if s.holdout:
        doc["holdout"] = {"spec": s.holdout, "runs": sorted(f"{a}/{r}" for a, r in held)}
    return doc


def _difference(preds: dict[int, tuple[float, float | None]], d: TaskDraws | None, tf: _TaskFit) -> dict[str, Any]:
    (l0, a0), (l1, a1) = preds[0], preds[1]
    out: dict[str, Any] = {"loss": {"value": l1 - l0, "ci95": None, "p_value": None}}
    if d is not None:
        diff = d.loss[1] - d.loss[0]
        out["loss"]["ci95"], _ = _ci(diff)
        out["loss"]["p_value"] = _p_sign(diff)
    if a0 is None or a1 is None:
        out["accuracy"] = None
        out["accuracy_why"] = "; ".join(f"{tf.problem.arms[i]}: {w}" for i, w in enumerate(tf.step2_why) if w)
    else:
        out["accuracy"] = {"value": a1 - a0, "ci95": None, "p_value": None}
        if d is not None:
            diff = d.accuracy[1] - d.accuracy[0]
            out["accuracy"]["ci95"], _ = _ci(diff)
            out["accuracy"]["p_value"] = _p_sign(diff)
    return out


def write_fit(doc: dict[str, Any], out: Path) -> Path:
    """DIR/fit.json, atomically; refuses NaN (every missing number is null with a reason)."""
    json.dumps(doc, allow_nan=False)  # raises ValueError on NaN/inf: a bug, not bad input
    path = Path(out) / "fit.json"
    write_json(path, doc)
    return path
