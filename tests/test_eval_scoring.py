"""The batched scorer equals a direct full-sequence computation with the model; generation is
batch-invariant and stops where asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codestage.tokenizer import load_tokenizer
from codestage.eval.decoding import cut_at_stop
from codestage.eval.requests import Request, fit
from codestage.eval.scoring import Scorer
from codestage.model import load_model


@pytest.fixture(scope="module")
def scorer(micro_model_dir: Path) -> Scorer:
    return Scorer(load_model(micro_model_dir), load_tokenizer(micro_model_dir), batch_size=3)


def direct(scorer: Scorer, ctx_ids: list[int], cont_ids: list[int]) -> tuple[float, bool]:
    """Sum of log P(cont | ctx) from one unpadded forward over the whole sequence."""
    ids = torch.tensor([ctx_ids + cont_ids])
    with torch.no_grad():
        logp = torch.log_softmax(scorer.model(ids).logits.double(), dim=-1)[0]
    picked = [logp[len(ctx_ids) + j - 1, tok] for j, tok in enumerate(cont_ids)]
    greedy = all(int(logp[len(ctx_ids) + j - 1].argmax()) == tok for j, tok in enumerate(cont_ids))
    return float(sum(picked)), greedy


QUESTION = "Passage: The committee met twice in May and agreed on a plan for the new library.\nQuestion: What did the committee agree on?\nAnswer:"
GROUPS = [
    [Request(QUESTION, " a plan for the library"), Request(QUESTION, " nothing"), Request(QUESTION, " the budget of the city for next year")],
    [Request("该答案：甲，可以回答以下问题：", "谁是负责人？"), Request("该答案：乙方代表，可以回答以下问题：", "谁是负责人？")],
    [Request("def add(a, b):\n    ", "return a + b\n")],
    [Request("", " an empty context")],
]


def test_scores_equal_direct_computation(scorer: Scorer) -> None:
    assert scorer.pack, "the packing probe should pass on a Llama model"
    scores = scorer.loglikelihood(GROUPS)
    for group, got in zip(GROUPS, scores):
        pairs = scorer.encode_pairs(group)
        for (ctx, cont), s in zip(pairs, got):
            want, greedy = direct(scorer, ctx, cont)
            assert s.n_tokens == len(cont) > 0
            assert s.logprob == pytest.approx(want, abs=1e-4)
            assert s.is_greedy == greedy


def test_packing_and_batch_size_do_not_change_scores(scorer: Scorer) -> None:
    packed = scorer.loglikelihood(GROUPS)
    plain = Scorer(scorer.model, scorer.tokenizer, batch_size=1, pack=False).loglikelihood(GROUPS)
    for a, b in zip(packed, plain):
        for x, y in zip(a, b):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4) and x.n_tokens == y.n_tokens


def test_encoding_moves_trailing_space_like_lm_eval(scorer: Scorer) -> None:
    (ctx, cont), = scorer.encode_pairs([Request("Answer: ", "yes")])
    whole = scorer.tokenizer("Answer: yes", add_special_tokens=False)["input_ids"]
    assert ctx == scorer.tokenizer("Answer:", add_special_tokens=False)["input_ids"] and ctx + cont == whole
    (ctx, cont), = scorer.encode_pairs([Request("", "hello")])
    assert ctx == [scorer.prefix_token_id]


def test_truncation_keeps_the_right_end(scorer: Scorer) -> None:
    short = Scorer(scorer.model, scorer.tokenizer, max_length=24)
    ctx, cont = list(range(10, 40)), list(range(40, 50))
    left = fit(ctx, cont, "left", short.max_length)
    assert left.tokens == (ctx + cont)[-25:] and left.tokens[left.start:] == cont
    # the paper's right truncation keeps the context end (the candidate) and the start of the span
    right = fit(ctx, cont, "right", short.max_length)
    assert right.tokens == ctx[-12:] + cont and right.start == 12
    long_span = list(range(100, 140))
    right = fit(ctx[:10], long_span, "right", short.max_length)
    assert right.tokens == ctx[:10] + long_span[:15] and right.start == 10
    scores = short.loglikelihood([[Request("word " * 40, " end")]], truncation="left")
    assert scores[0][0].n_tokens >= 1


def test_generation_is_batch_invariant_and_stops(scorer: Scorer) -> None:
    prompts = ["def square(x):\n", "Write a function to add two numbers.\n Code:\n", "print("]
    batched = scorer.generate(prompts, max_new_tokens=12)
    single = [scorer.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    stop = [batched[0][0][2:4]] if len(batched[0][0]) >= 4 else ["\n"]
    cut = scorer.generate(prompts[:1], max_new_tokens=12, stop=stop)[0][0]
    assert all(s not in cut for s in stop) and batched[0][0].startswith(cut)
    assert cut_at_stop("abc[DONE]def\n\n\nx", ["\n\n\n", "[DONE]"]) == "abc"


def test_sampling_is_seeded(scorer: Scorer) -> None:
    a = scorer.generate(["x = "], max_new_tokens=6, num_samples=3, temperature=1.0, seed=5)
    b = scorer.generate(["x = "], max_new_tokens=6, num_samples=3, temperature=1.0, seed=5)
    assert a == b and len(a[0]) == 3
