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
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from codestage.atomic import write_json
from codestage.errors import ConfigError, DataError
from codestage.study.ladder.backtest import backtest_task, holdout_runs, predictability
from codestage.study.ladder.bootstrap import RESAMPLE, TaskDraws, TaskProblem, run_task
from codestage.study.ladder.law import HUBER_DELTA, natural
from codestage.study.ladder.points import Points, describe
from codestage.study.ladder.task import TaskFit, equal_fit_difference, equal_fit_losses, fit_task, json_float, predict, task_rows

SCHEMA = "codestage.ladder.fit/1"
TARGET = (2.6e9, 4.2e10)     # the paper's PanGu-alpha 2.6B, ~42B tokens
_POOL_MIN_REPLICATES = 2000  # below this many replicate-tasks a process pool costs more than it saves
_CHUNK = 250                 # replicates per unit of parallel work (fixed: results never depend on the worker count)


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
    workers: int = 0          # 0: one per CPU core (the replicates are split in pieces of 250)

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


def _arm_report(points: Points, tf: TaskFit, arm: int, rows: np.ndarray) -> dict[str, Any]:
    p = tf.problem
    fit, j = tf.step1[arm]
    mine = p.group == arm
    s1 = mine & p.step1
    fitted = fit.log_predict(p.params[s1], p.tokens[s1], j)
    res = np.log(p.loss[s1]) - fitted
    nat = natural(fit.law, fit.theta)[j]
    points_out = [{"run": str(p.run[i]), "params": float(p.params[i]), "tokens": float(p.tokens[i]),
                   "loss": float(p.loss[i]), "accuracy": json_float(p.accuracy[i]), "final": bool(points.final[rows[i]]),
                   "step1": bool(p.step1[i]), "n_items": json_float(points.n_items[rows[i]]),
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


def _chunks(p: TaskProblem) -> list[TaskProblem]:
    """The task's replicates in pieces of at most _CHUNK, each seeded from the task's seed and its index,
    so a machine with more cores than tasks keeps them all busy and the draws are the same however many
    processes run them."""
    n = -(-p.n_boot // _CHUNK)
    return [replace(p, n_boot=min(_CHUNK, p.n_boot - i * _CHUNK),
                    seed=np.random.SeedSequence(p.seed.entropy, spawn_key=(*p.seed.spawn_key, i), pool_size=p.seed.pool_size))
            for i in range(n)]


def _run_bootstraps(problems: list[TaskProblem], workers: int) -> list[TaskDraws]:
    pieces = [_chunks(p) for p in problems]
    flat = [c for cs in pieces for c in cs]
    total = sum(p.n_boot for p in problems)
    workers = min(workers or (os.cpu_count() or 1), len(flat))
    if workers <= 1 or total < _POOL_MIN_REPLICATES:
        done = [run_task(c) for c in flat]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            done = list(pool.map(run_task, flat))
    out, k = [], 0
    for cs in pieces:
        part, k = done[k:k + len(cs)], k + len(cs)
        out.append(TaskDraws(np.concatenate([d.loss for d in part], axis=1),
                             np.concatenate([d.accuracy for d in part], axis=1), sum(d.redraws for d in part)))
    return out


def fit_ladder(points: Points, settings: FitSettings, *, folder: Path | None = None) -> dict[str, Any]:
    """The fit.json document for `points` (see docs/ladder.md for every field); `folder`, where
    fit.json goes, makes the paths it records relative to it (so the folder can move)."""
    s = settings
    s.check()
    _check_arms(points, s)
    held = holdout_runs(points, s.holdout, s.arms) if s.holdout else set()
    tasks = [t for t in points.tasks if task_rows(points, t, s.arms).size]
    seeds = np.random.SeedSequence(s.seed).spawn(len(tasks))
    fits: dict[str, TaskFit] = {}
    for task, seed in zip(tasks, seeds):
        rows = task_rows(points, task, s.arms)
        tf = fit_task(points, task, rows, s, strict=True, seed=seed)
        assert not isinstance(tf, str)
        fits[task] = tf
    draws = _run_bootstraps([fits[t].problem for t in tasks], s.workers) if s.bootstrap > 0 else []
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "inputs": describe(points, folder),
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
        rows = task_rows(points, task, s.arms)
        d = draws[k] if draws else None
        entry: dict[str, Any] = {"chance": points.chance.get(task), "arms": {}}
        point_preds = {}
        for a, arm in enumerate(s.arms):
            rep = _arm_report(points, tf, a, rows)
            loss, acc = predict(tf, a, s.target)
            point_preds[a] = (loss, acc)
            pred: dict[str, Any] = {"loss": loss, "loss_ci95": None, "accuracy": acc, "accuracy_ci95": None,
                                    "accuracy_why": None if acc is not None else tf.step2_why[a]}
            observed = tf.problem.loss[(tf.problem.group == a) & tf.problem.step1]
            pred["loss_below_ladder"] = bool(loss < observed.min())
            pred["equal_fits"] = _equal_fits(tf, a, s.target)
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
        entry["predictability"] = predictability(points, rows, s.last)
        if s.holdout:
            entry["backtest"] = backtest_task(points, task, rows, held, s)
            for arm in s.arms:
                bt = entry["backtest"].get("arms", {}).get(arm)
                entry["arms"][arm]["prediction"]["backtest"] = (
                    {k2: bt[k2] for k2 in ("loss_abs_error", "loss_rel_error", "loss_rel_error_equal_fits", "accuracy_abs_error")} if bt else None)
        if d is not None and s.resample == "runs":
            entry["bootstrap_redraws"] = d.redraws
        doc["tasks"][task] = entry
    if s.holdout:
        doc["holdout"] = {"spec": s.holdout, "runs": sorted(f"{a}/{r}" for a, r in held)}
    return doc


def _equal_fits(tf: TaskFit, arm: int, target: tuple[float, float]) -> dict[str, Any]:
    """What the step-1 fits that match the points as well as the best one (Huber loss within
    TIE_RTOL) predict at the target: the range the points cannot narrow, beside the bootstrap's."""
    losses = equal_fit_losses(tf, arm, np.array([target[0]]), np.array([target[1]]))[:, 0]
    out: dict[str, Any] = {"fits": int(losses.size), "loss_range": [float(losses.min()), float(losses.max())],
                           "accuracy_range": None}
    sig = tf.step2[arm]
    if sig is not None:
        acc = sig.predict(losses)
        out["accuracy_range"] = [float(acc.min()), float(acc.max())]
    return out


def _difference(preds: dict[int, tuple[float, float | None]], d: TaskDraws | None, tf: TaskFit) -> dict[str, Any]:
    (l0, a0), (l1, a1) = preds[0], preds[1]
    span = equal_fit_difference(tf, np.array([tf.problem.target[0]]), np.array([tf.problem.target[1]]))[:, 0]
    out: dict[str, Any] = {"loss": {"value": l1 - l0, "ci95": None, "p_value": None,
                                    "equal_fits_range": [float(span[0]), float(span[1])]}}
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
