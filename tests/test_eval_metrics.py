"""BLEU on hand-computed cases, the code tokenization, pass@k, bits per byte, the set policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codestage.eval.metrics import (
    bits_per_byte,
    bleu_from_stats,
    bleu_stats,
    code_tokens,
    corpus_bleu,
    exact_set_correct,
    pass_at_k,
)


def test_code_tokens_are_fixed_and_model_independent() -> None:
    assert code_tokens("def f(x):\n    return x**2 >= 10.5 # c") == [
        "def", "f", "(", "x", ")", ":", "return", "x", "**", "2", ">=", "10.5", "#", "c",
    ]
    assert code_tokens("s = 'a b' + \"c\"") == ["s", "=", "'a b'", "+", '"c"']


def test_bleu_hand_computed() -> None:
    hyp, ref = "a b c d".split(), "a b c e".split()
    # smoothed precisions 4/5, 3/4, 2/3, 1/2; lengths equal so no brevity penalty
    assert corpus_bleu([hyp], [ref]) == pytest.approx((0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25)
    short, long = "a b".split(), "a b c d".split()
    # every smoothed precision is 1 (3-, 4-grams: (0+1)/(0+1)); brevity penalty exp(1 - 4/2)
    assert corpus_bleu([short], [long]) == pytest.approx(math.exp(-1))
    # corpus level sums the statistics before the geometric mean
    both = (6 / 7 * 4 / 5 * 2 / 3 * 1 / 2) ** 0.25 * math.exp(1 - 8 / 6)
    assert corpus_bleu([hyp, short], [ref, long]) == pytest.approx(both)
    assert corpus_bleu([ref], [ref]) == 1.0
    assert corpus_bleu([[]], [ref]) == 0.0


def test_bleu_stats_rows_add_up_and_vectorise() -> None:
    rows = np.array([bleu_stats("a b c d".split(), "a b c e".split()), bleu_stats("a b".split(), "a b c d".split())])
    assert rows[0].tolist() == [3, 2, 1, 0, 4, 3, 2, 1, 4, 4]
    batch = bleu_from_stats(np.stack([rows[0], rows.sum(axis=0)]))
    assert batch[0] == pytest.approx(bleu_from_stats(rows[0])) and batch[1] == pytest.approx(bleu_from_stats(rows.sum(axis=0)))


def test_pass_at_k() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 3) == 1.0 and pass_at_k(5, 3, 3) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_bits_per_byte_and_set_policy() -> None:
    assert bits_per_byte(-math.log(2) * 16, 8) == pytest.approx(2.0)
    assert exact_set_correct(1, (1,)) and not exact_set_correct(1, (1, 2)) and not exact_set_correct(0, ())
