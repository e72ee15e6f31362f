"""The scorer's speed machinery changes no number: packed rows, batching (rows or token budget),
threaded tokenization and the aligned mask layout all give the plain single-sequence forward's
log-likelihoods on real task prompts under both protocols: within 1e-5 per request in float32,
plus 1e-7 per scored token for the float32 rounding of the sum (measured: at most 6e-6 over 225
tokens)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import codestage.eval.requests as requests
from codestage.tokenizer import load_tokenizer
from codestage.eval.protocols import choice_requests, exemplar_picker
from codestage.eval.registry import get_task
from codestage.eval.loglikelihood import block_mask
from codestage.eval.requests import MIN_SHARED_PREFIX, Request, Row, fit, make_batches, shared_prefix, tokenize
from codestage.eval.scoring import Scorer
from codestage.model import load_model

TOL = 1e-5
TOL_PER_TOKEN = 1e-7


@pytest.fixture(scope="module")
def scorer(micro_model_dir: Path) -> Scorer:
    return Scorer(load_model(micro_model_dir), load_tokenizer(micro_model_dir), batch_size=4)


def _groups(protocol: str, shots: int = 0) -> list[list[Request]]:
    """The first items of three bundled tasks, as the harness builds their requests."""
    groups = []
    for name, n in (("logiqa_en", 3), ("jecqa_kd", 3), ("cosqa", 3), ("scienceqa", 2)):
        task = get_task(name)
        items = task.load()
        pick = exemplar_picker(task, items, shots, 0)
        groups += [choice_requests(task, it, protocol, pick(it)) for it in items[:n]]
    groups.append([Request("", " an empty context"), Request("x = ", "1\n")])
    return groups


@torch.no_grad()
def _reference(scorer: Scorer, groups: list[list[Request]], truncation: str) -> list[list[tuple[float, int, bool]]]:
    """One unpadded, unbatched forward per request over its fitted tokens; log-softmax in float64."""
    out = []
    for group in groups:
        row = []
        for ctx, cont in scorer.encode_pairs(group):
            f = fit(ctx, cont, truncation, scorer.max_length)
            logits = scorer.model(torch.tensor([f.tokens[:-1]])).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            targets = f.tokens[f.start:]
            idx = torch.arange(f.start - 1, len(f.tokens) - 1)
            picked = logp[idx, torch.tensor(targets)]
            greedy = bool((logits[idx].argmax(-1) == torch.tensor(targets)).all())
            row.append((float(picked.sum()), len(targets), greedy))
        out.append(row)
    return out


def _check(got, want) -> None:
    for g_row, w_row in zip(got, want, strict=True):
        for s, (lp, n, greedy) in zip(g_row, w_row, strict=True):
            assert s.n_tokens == n
            assert abs(s.logprob - lp) <= TOL + TOL_PER_TOKEN * n, (s.logprob, lp, n)
            assert s.is_greedy == greedy


@pytest.mark.slow  # > 5 s
@pytest.mark.parametrize("protocol", ["lm-eval", "paper"])
def test_every_layout_equals_the_plain_forward(scorer: Scorer, protocol: str) -> None:
    groups = _groups(protocol)
    truncation = "right" if protocol == "paper" else "left"
    want = _reference(scorer, groups, truncation)
    scorer.stats.clear()
    packed = scorer.loglikelihood(groups, truncation=truncation)
    if protocol == "lm-eval":  # items that fit the 256-token model share their question: packed rows, fewer tokens
        assert scorer.stats["packed_rows"] >= 5 and scorer.stats["tokens"] < scorer.stats["unpacked_tokens"]
    _check(packed, want)
    model, tok = scorer.model, scorer.tokenizer
    variants = [
        Scorer(model, tok, batch_size=1, pack=False),
        Scorer(model, tok, batch_size=32),
        Scorer(model, tok, batch_size=2, max_batch_tokens=4096),
    ]
    aligned = Scorer(model, tok, batch_size=3)
    aligned.runner.mask_align = 16  # the CUDA layout: mask rows are a view of a 16-aligned tensor
    for other in [*variants, aligned]:
        _check(other.loglikelihood(groups, truncation=truncation), want)


@pytest.mark.slow  # > 5 s
def test_one_shot_prompts_and_truncation(scorer: Scorer) -> None:
    groups = _groups("lm-eval", shots=1)[:4]
    _check(scorer.loglikelihood(groups), _reference(scorer, groups, "left"))
    short = Scorer(scorer.model, scorer.tokenizer, batch_size=4, max_length=48)
    for truncation in ("left", "right"):
        _check(short.loglikelihood(groups, truncation=truncation), _reference(short, groups, truncation))


def test_results_are_deterministic_and_batch_invariant(scorer: Scorer) -> None:
    groups = _groups("lm-eval")
    a = scorer.loglikelihood(groups)
    b = scorer.loglikelihood(groups)
    assert a == b  # bit for bit
    for other in (Scorer(scorer.model, scorer.tokenizer, batch_size=1), Scorer(scorer.model, scorer.tokenizer, batch_size=16)):
        for x_row, y_row in zip(a, other.loglikelihood(groups)):
            for x, y in zip(x_row, y_row):
                assert x.n_tokens == y.n_tokens and abs(x.logprob - y.logprob) <= TOL + TOL_PER_TOKEN * x.n_tokens


def test_threaded_tokenization_equals_one_call(scorer: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [r.context + r.continuation for g in _groups("paper") for r in g] * 3
    serial = scorer.tokenizer(texts, add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(requests, "TOKENIZE_CHUNK", 5)
    assert tokenize(scorer.tokenizer, texts, workers=4) == serial
    assert tokenize(scorer.tokenizer, texts, workers=1) == serial


def test_shared_prefix_matches_a_column_scan() -> None:
    rng = random.Random(0)
    for _ in range(300):
        base = [rng.randrange(5) for _ in range(rng.randrange(0, 40))]
        seqs = [base[: rng.randrange(0, len(base) + 1)] + [rng.randrange(5) for _ in range(rng.randrange(0, 6))] for _ in range(rng.randrange(1, 5))]
        limit = rng.randrange(0, 45)
        common = 0
        for column in zip(*seqs):
            if any(tok != column[0] for tok in column[1:]):
                break
            common += 1
        assert shared_prefix(seqs, limit) == min(common, limit)


def test_packed_row_layout_and_mask() -> None:
    prefix = list(range(100, 100 + MIN_SHARED_PREFIX))
    row = Row(prefix + [1, 2, 3, 4, 5], [], [MIN_SHARED_PREFIX, 2, 3])
    pos, seg = row.positions_and_segments()
    p = MIN_SHARED_PREFIX
    assert pos.tolist() == list(range(p)) + [p, p + 1] + [p, p + 1, p + 2]
    assert seg.tolist() == [0] * p + [1, 1, 2, 2, 2]
    segments = torch.tensor([[0, 0, 1, 1, 2, 2, -1, -1]])
    for align in (1, 16):
        mask = block_mask(segments, torch.float32, align)
        assert mask.shape == (1, 1, 8, 8)
        allowed = (mask[0, 0] == 0).int().tolist()
        assert allowed[:6] == [
            [1, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0, 0],  # the second suffix sees the prefix and itself, not the first suffix
            [1, 1, 0, 0, 1, 1, 0, 0],
        ]
        assert allowed[6][6] == 1 and allowed[7][7] == 1  # padding sees itself: no empty softmax row


def test_token_budget_batches_more_short_rows() -> None:
    rows = [Row(list(range(n)), [(i, 0, [1])]) for i, n in enumerate([40, 30, 10, 10, 10, 10, 10, 10])]
    assert [len(b) for b in make_batches(rows, batch_size=2)] == [2, 2, 2, 2]
    assert [len(b) for b in make_batches(rows, batch_size=2, max_batch_tokens=60)] == [2, 6]  # 2 x 40 rows; then 6 x 10 <= 60 tokens
