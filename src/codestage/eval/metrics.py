"""Scores from per-item results: accuracy, smoothed corpus BLEU-4, bits per byte, pass@k.

BLEU is CodeXGLUE's: the NMT `compute_bleu` with Lin & Och (2004) add-one smoothing of every
n-gram precision, corpus-level, x100, computed on a fixed code tokenization that does not depend
on the model's tokenizer (the paper used each model's subword tokens, which makes models with
different vocabularies incomparable). Each item contributes additive sufficient statistics
(matches and possible matches per order, hypothesis and reference length), so the corpus score,
its bootstrap and paired comparisons all work from the same per-item rows.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import numpy as np

MAX_ORDER = 4

# Identifiers, numbers, string literals (kept whole), multi-character operators, then any other
# single non-space character. Deterministic, language-agnostic enough for Python code.
_CODE_TOKEN = re.compile(
    r"""[A-Za-z_][A-Za-z0-9_]*"""
    r"""|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?"""
    r'''|"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\''''
    r"""|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'"""
    r"""|\*\*=?|//=?|>>=?|<<=?|->|:=|[-+*/%&|^@<>=!]="""
    r"""|\S"""
)


def code_tokens(code: str) -> list[str]:
    """The fixed, model-independent tokenization BLEU is computed on."""
    return _CODE_TOKEN.findall(code)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu_stats(hypothesis: Sequence[str], reference: Sequence[str], max_order: int = MAX_ORDER) -> np.ndarray:
    """One item's sufficient statistics: [matches_1..N, possible_1..N, hyp_len, ref_len]."""
    row = np.zeros(2 * max_order + 2, dtype=np.int64)
    for n in range(1, max_order + 1):
        overlap = _ngrams(hypothesis, n) & _ngrams(reference, n)
        row[n - 1] = sum(overlap.values())
        row[max_order + n - 1] = max(len(hypothesis) - n + 1, 0)
    row[-2], row[-1] = len(hypothesis), len(reference)
    return row


def bleu_from_stats(totals: np.ndarray, smooth: bool = True) -> np.ndarray | float:
    """Corpus BLEU in [0, 1] from summed statistics; `totals` is one row or a (B, 2N+2) array."""
    totals = np.asarray(totals, dtype=np.float64)
    single = totals.ndim == 1
    t = np.atleast_2d(totals)
    order = (t.shape[1] - 2) // 2
    matches, possible = t[:, :order], t[:, order : 2 * order]
    hyp, ref = t[:, -2], t[:, -1]
    if smooth:
        precisions = (matches + 1.0) / (possible + 1.0)
    else:
        precisions = np.divide(matches, possible, out=np.zeros_like(matches), where=possible > 0)
    with np.errstate(divide="ignore"):
        logs = np.where(precisions > 0, np.log(np.where(precisions > 0, precisions, 1.0)), -np.inf)
    geo = np.where(np.all(precisions > 0, axis=1), np.exp(logs.mean(axis=1)), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ref > 0, hyp / np.where(ref > 0, ref, 1.0), np.inf)
        bp = np.where(ratio > 1.0, 1.0, np.where(ratio > 0, np.exp(1.0 - 1.0 / np.where(ratio > 0, ratio, 1.0)), 0.0))
    out = geo * bp
    return float(out[0]) if single else out



def bleu_statistic(sums: np.ndarray, n: int) -> np.ndarray:
    """Corpus BLEU as a bootstrap statistic (summed per-item BLEU statistics; `n` unused)."""
    return bleu_from_stats(sums)

def corpus_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]], smooth: bool = True) -> float:
    """Smoothed corpus BLEU-4 in [0, 1] over token lists (one reference per hypothesis)."""
    if len(hypotheses) != len(references):
        raise ValueError("corpus_bleu: as many hypotheses as references are needed")
    if not hypotheses:
        return 0.0
    totals = np.sum([bleu_stats(h, r) for h, r in zip(hypotheses, references)], axis=0)
    return float(bleu_from_stats(totals, smooth=smooth))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k), in a numerically stable form."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def bits_per_byte(logprob_nats: float, n_bytes: int) -> float:
    """-log2 P(text) / UTF-8 bytes: a tokenizer-independent continuous score for the reference."""
    if n_bytes <= 0:
        raise ValueError("bits_per_byte needs a non-empty text")
    return -logprob_nats / (math.log(2) * n_bytes)


def exact_set_correct(prediction: int, gold: Sequence[int]) -> bool:
    """Our multiple-choice policy: right iff the predicted option set ({prediction}) equals the gold set."""
    return len(gold) == 1 and prediction == gold[0]


def argmax_first(values: Sequence[float]) -> int:
    """Index of the largest value, the first on ties (as numpy.argmax)."""
    return int(np.argmax(np.asarray(values, dtype=np.float64)))
