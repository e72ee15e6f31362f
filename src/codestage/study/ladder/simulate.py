"""Simulated ladders drawn from a known law: to check a fit's recovery and interval calibration on
a ladder design before paying for it (the tests and bench/ladder_fit.py use them too).

Each run's checkpoint losses follow L(N, D) with multiplicative log-normal noise (independent per
point: a model of evaluation and seed noise, not of the learning-rate schedule); accuracies follow
the step-2 sigmoid of the noisy loss plus binomial sampling noise of `n_items` items.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TrueLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    a: float = 0.5          # sigmoid height above chance
    s: float = 4.0          # sigmoid slope (per unit of loss)
    L0: float = 2.5         # sigmoid midpoint
    chance: float = 0.25

    def loss(self, n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
        return self.E + self.A / np.asarray(n, dtype=np.float64) ** self.alpha + self.B / np.asarray(d, dtype=np.float64) ** self.beta

    def accuracy(self, loss: np.ndarray | float) -> np.ndarray:
        return self.chance + self.a / (1.0 + np.exp(self.s * (np.asarray(loss, dtype=np.float64) - self.L0)))


def simulate_rows(laws: dict[tuple[str, str], TrueLaw], sizes: list[float], tokens_per_param: list[float],
                  fractions: list[float] = (1.0,), noise: float = 0.01, n_items: int = 0,
                  seed: int = 0) -> list[dict]:
    """POINTS rows for every (arm, task) law, size, budget and checkpoint fraction."""
    rng = np.random.default_rng(seed)
    rows = []
    for (arm, task), law in laws.items():
        for n in sizes:
            for r in tokens_per_param:
                run = f"{arm}-{n:.3g}-{r:g}x"
                for frac in fractions:
                    d = n * r * frac
                    loss = float(law.loss(n, d) * np.exp(rng.normal(0.0, noise)))
                    acc = float(law.accuracy(loss))
                    if n_items:
                        acc = float(rng.binomial(n_items, acc) / n_items)
                    row = {"arm": arm, "task": task, "run": run, "fraction": frac, "params": n, "tokens": d,
                           "loss": loss, "accuracy": acc, "chance": law.chance}
                    if n_items:
                        row["n_items"] = n_items
                    rows.append(row)
    return rows


def write_rows(rows: list[dict], path: Path) -> Path:
    """Write rows as a POINTS CSV (columns in first-seen order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return path
