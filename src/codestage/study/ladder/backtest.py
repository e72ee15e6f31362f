"""How far to trust a ladder fit: the backtest (refit without held-out rungs, predict them) and
each task's predictability (the spread of its metrics over each run's last checkpoints)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from codestage.errors import ConfigError
from codestage.study.ladder.points import Points
from codestage.study.ladder.task import equal_fit_losses, fit_task, json_float

if TYPE_CHECKING:
    from codestage.study.ladder.fit import FitSettings


def holdout_runs(points: Points, spec: str, arms: tuple[str, ...]) -> set[tuple[str, str]]:
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


def backtest_task(points: Points, task: str, rows: np.ndarray, held: set[tuple[str, str]], s: FitSettings) -> dict[str, Any]:
    is_held = np.array([(a, r) in held for a, r in zip(points.arm[rows], points.run[rows])], dtype=bool)
    if not is_held.any():
        return {"why": "no held-out run has this task"}
    tf = fit_task(points, task, rows[~is_held], s, strict=False)
    if isinstance(tf, str):
        return {"why": f"the ladder without the held-out rungs cannot be fitted: {tf}"}
    out: dict[str, Any] = {"arms": {}}
    preds: dict[tuple[int, float, float], tuple[float, float]] = {}
    for a, arm in enumerate(s.arms):
        test = rows[is_held & points.final[rows] & (points.arm[rows] == arm)]
        fit, j = tf.step1[a]
        sig = tf.step2[a]
        cases = []
        equal = equal_fit_losses(tf, a, points.params[test], points.tokens[test])  # (fits, held-out points)
        for k, i in enumerate(test):
            loss_pred = float(np.exp(fit.log_predict(points.params[i:i + 1], points.tokens[i:i + 1], j)[0]))
            acc = points.accuracy[i]
            acc_pred = None if sig is None else float(sig.predict(loss_pred))
            cases.append({"run": str(points.run[i]), "params": float(points.params[i]), "tokens": float(points.tokens[i]),
                          "loss": float(points.loss[i]), "loss_pred": loss_pred,
                          "loss_pred_equal_fits": [float(equal[:, k].min()), float(equal[:, k].max())],
                          "loss_abs_error": abs(loss_pred - points.loss[i]),
                          "loss_rel_error": abs(loss_pred - points.loss[i]) / points.loss[i],
                          "accuracy": json_float(acc), "accuracy_pred": acc_pred,
                          "accuracy_abs_error": None if acc_pred is None or not np.isfinite(acc) else abs(acc_pred - acc)})
            preds[(a, float(points.params[i]), float(points.tokens[i]))] = (loss_pred - points.loss[i],
                                                                             math.nan if acc_pred is None else acc_pred - acc)
        acc_err = [c["accuracy_abs_error"] for c in cases if c["accuracy_abs_error"] is not None]
        rel_by_fit = np.mean(np.abs(equal - points.loss[test]) / points.loss[test], axis=1) if cases else None
        out["arms"][arm] = {
            "held_out": cases,
            "loss_abs_error": json_float(np.mean([c["loss_abs_error"] for c in cases])) if cases else None,
            "loss_rel_error": json_float(np.mean([c["loss_rel_error"] for c in cases])) if cases else None,
            "loss_rel_error_equal_fits": [float(rel_by_fit.min()), float(rel_by_fit.max())] if cases else None,
            "accuracy_abs_error": json_float(np.mean(acc_err)) if acc_err else None,
            "accuracy_why": None if acc_err else (tf.step2_why[a] or "no accuracy at the held-out points"),
        }
    if len(s.arms) == 2:
        pairs = []
        for (a, n, d), (e_loss, e_acc) in preds.items():
            if a == 1 and (0, n, d) in preds:
                base = preds[(0, n, d)]
                pairs.append({"params": n, "tokens": d, "loss_diff_error": e_loss - base[0],
                              "accuracy_diff_error": json_float(e_acc - base[1])})
        out["difference"] = {"pairs": pairs,
                             "loss_abs_error": json_float(np.mean([abs(p["loss_diff_error"]) for p in pairs])) if pairs else None}
    return out


def predictability(points: Points, rows: np.ndarray, last: int) -> dict[str, Any]:
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
                              "accuracy_std": json_float(np.std(acc, ddof=1)) if np.isfinite(acc).all() else None}
    if not runs:
        return {"why": "one point per run: predictability needs each run's last checkpoints (columns run and step or fraction)"}
    largest = max(runs, key=lambda r: runs[r]["params"] * runs[r]["tokens"])
    acc_std = [v["accuracy_std"] for v in runs.values() if v["accuracy_std"] is not None]
    return {"last": last, "runs": len(runs),
            "loss_std": float(np.mean([v["loss_std"] for v in runs.values()])),
            "loss_rel_std": float(np.mean([v["loss_rel_std"] for v in runs.values()])),
            "accuracy_std": json_float(np.mean(acc_std)) if acc_std else None,
            "largest_run": {"run": largest, **runs[largest]}}
