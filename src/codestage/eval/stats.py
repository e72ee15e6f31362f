"""Uncertainty: seeded percentile bootstrap intervals and paired bootstrap tests over items.

Every score is a function of column sums of a per-item matrix (accuracy: mean of 0/1; BLEU:
summed sufficient statistics; bits per byte: summed bits / summed bytes), so one routine
resamples items with replacement, sums, and applies the statistic to each replicate. Paired
comparisons resample the same item indices for both runs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

N_BOOT = 2000
Statistic = Callable[[np.ndarray, int], np.ndarray]  # (replicates x columns of sums, n) -> values


def mean_stat(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[..., 0] / n


def ratio_stat(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[..., 0] / sums[..., 1]


def _replicate_sums(rows: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, d) column sums of `rows` resampled with replacement; chunked to bound memory."""
    rng = np.random.default_rng(seed)
    n = rows.shape[0]
    out = np.empty((n_boot, rows.shape[1]), dtype=np.float64)
    chunk = max(1, 4_000_000 // max(n, 1))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = rows[idx].sum(axis=1)
    return out


def _as_rows(values: np.ndarray | list) -> np.ndarray:
    rows = np.asarray(values, dtype=np.float64)
    return rows[:, None] if rows.ndim == 1 else rows


def bootstrap_ci(
    values: np.ndarray | list,
    statistic: Statistic = mean_stat,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(point estimate, low, high): percentile bootstrap interval of `statistic` over items."""
    rows = _as_rows(values)
    n = rows.shape[0]
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one item")
    point = float(statistic(rows.sum(axis=0), n))
    reps = statistic(_replicate_sums(rows, n_boot, seed), n)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return point, point, point
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return point, float(lo), float(hi)


def paired_bootstrap(
    values_a: np.ndarray | list,
    values_b: np.ndarray | list,
    statistic: Statistic = mean_stat,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Paired difference statistic(A) - statistic(B) over the same items: point, interval, and a
    two-sided p-value for "no difference" from the null-centred bootstrap distribution
    (p = (1 + #{|d* - d| >= |d|}) / (1 + B))."""
    a, b = _as_rows(values_a), _as_rows(values_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError("paired_bootstrap needs the same items in both runs")
    n = a.shape[0]
    if n == 0:
        raise ValueError("paired_bootstrap needs at least one item")
    point = float(statistic(a.sum(axis=0), n) - statistic(b.sum(axis=0), n))
    both = _replicate_sums(np.concatenate([a, b], axis=1), n_boot, seed)
    diffs = statistic(both[:, : a.shape[1]], n) - statistic(both[:, a.shape[1] :], n)
    diffs = diffs[np.isfinite(diffs)]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha]) if diffs.size else (point, point)
    extreme = int(np.sum(np.abs(diffs - point) >= abs(point) - 1e-12)) if diffs.size else 0
    p = (1 + extreme) / (1 + diffs.size)
    return {"diff": point, "ci95": [float(lo), float(hi)], "p_value": float(min(1.0, p)), "n": n}
