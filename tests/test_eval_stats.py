"""Bootstrap intervals: contain the estimate, seeded and deterministic; paired tests behave."""

from __future__ import annotations

import numpy as np
import pytest

from codestage.eval.metrics import bleu_from_stats
from codestage.eval.stats import bootstrap_ci, paired_bootstrap, ratio_stat


def test_bootstrap_ci_contains_point_and_is_deterministic() -> None:
    values = np.random.default_rng(1).integers(0, 2, size=200).astype(float)
    point, lo, hi = bootstrap_ci(values, seed=7)
    assert point == pytest.approx(values.mean()) and lo < point < hi
    assert bootstrap_ci(values, seed=7) == (point, lo, hi)
    assert bootstrap_ci(values, seed=8) != (point, lo, hi)
    assert 0.05 < hi - lo < 0.2  # about 4 standard errors of a proportion near 0.5 on 200 items


def test_constant_scores_have_zero_width() -> None:
    assert bootstrap_ci(np.ones(30)) == (1.0, 1.0, 1.0)


def test_ratio_and_bleu_statistics() -> None:
    rows = np.array([[3.0, 2.0], [1.0, 2.0], [2.0, 4.0]])
    point, lo, hi = bootstrap_ci(rows, ratio_stat)
    assert point == pytest.approx(6 / 8) and lo <= point <= hi
    stats = np.array([[3, 2, 1, 0, 4, 3, 2, 1, 4, 4], [2, 1, 0, 0, 2, 1, 0, 0, 2, 4]] * 10)
    p, lo, hi = bootstrap_ci(stats, lambda s, n: bleu_from_stats(s))
    assert p == pytest.approx(bleu_from_stats(stats.sum(axis=0))) and lo <= p <= hi


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, size=300).astype(float)
    same = paired_bootstrap(a, a)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    b = np.where(rng.random(300) < 0.5, 0.0, a)  # B loses about half of A's correct answers
    out = paired_bootstrap(a, b, seed=3)
    assert out["diff"] > 0.15 and out["ci95"][0] > 0 and out["p_value"] < 0.01
    assert paired_bootstrap(a, b, seed=3) == out
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10])
