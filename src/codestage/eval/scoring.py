"""Batched log-likelihood of (context, continuation) pairs and generation, for any HF causal LM.

`Scorer` is the one object the task evaluators hold per model. It is a thin facade over the three
parts, split as lm-evaluation-harness splits them:

    eval/requests.py       requests -> tokens -> truncated pairs -> packed rows -> batches (pure functions)
    eval/loglikelihood.py  batches through the model: per-token log-probabilities, summed per request
    eval/decoding.py       generation with stop sequences

The result per request is the summed log-probability of the continuation tokens, their count, and
whether each was the argmax, exactly what lm-eval scores (eval/requests.py says how pairs are
encoded and cut). `timer` (a name -> context manager callable) times the phases for
bench/eval_profile.py and `stats` counts requests, rows, batches and tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any, Callable, ContextManager, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from codestage.eval import decoding
from codestage.eval.loglikelihood import LoglikelihoodRunner
from codestage.eval.requests import (Fitted, Request, Score, Truncation, cpu_workers, encode_pairs, fit, make_batches,
                                     model_max_length, pack_rows, split_request)

__all__ = ["Request", "Score", "Scorer"]


class Scorer:
    """Scores requests with one model; construct once per model, reuse for every task.

    `batch_size` is the number of rows (model input sequences) per forward pass, as lm-eval's batch
    size is; a packed row carries all choices of one item. With `max_batch_tokens`, a batch of short
    rows may hold more than `batch_size` rows while rows x width stays within that many tokens.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        pack: bool = True,
        max_batch_tokens: int | None = None,
        tokenize_workers: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.max_batch_tokens = max_batch_tokens
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.tokenize_workers = tokenize_workers or cpu_workers()
        bos = tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.runner = LoglikelihoodRunner(self.model, pad, pack=pack)

    @property
    def pack(self) -> bool:
        """Whether items' choices share packed rows (asked for, and confirmed on this model)."""
        return self.runner.pack

    @property
    def stats(self) -> Counter:
        return self.runner.stats

    @property
    def timer(self) -> Callable[[str], ContextManager] | None:
        return self.runner.timer

    @timer.setter
    def timer(self, timer: Callable[[str], ContextManager] | None) -> None:
        self.runner.timer = timer

    def encode_pairs(self, requests: Sequence[Request]) -> list[tuple[list[int], list[int]]]:
        """(context tokens, continuation tokens) per request, split as lm-evaluation-harness does."""
        return encode_pairs(requests, self.tokenizer, self.prefix_token_id, workers=self.tokenize_workers)

    def loglikelihood(
        self,
        groups: Sequence[Sequence[Request]],
        *,
        truncation: Truncation = "left",
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Score]]:
        """Scores per request, grouped as given (a group = one item's choices, which may share a prefix)."""
        flat = [r for g in groups for r in g]
        with self.runner.phase("tokenize"):
            pairs = self.encode_pairs(flat)
        with self.runner.phase("rows"):
            fitted = [fit(c, k, truncation, self.max_length) for c, k in pairs]
            index_groups, at = [], 0
            for g in groups:
                index_groups.append(list(range(at, at + len(g))))
                at += len(g)
            empty = {i for i, f in enumerate(fitted) if f.start >= len(f.tokens)}
            index_groups = [[i for i in g if i not in empty] for g in index_groups]
            rows = pack_rows(fitted, [g for g in index_groups if g], pack=self.pack)
            batches = make_batches(rows, self.batch_size, self.max_batch_tokens)
            lengths = sorted((len(f.tokens) - 1 for i, f in enumerate(fitted) if i not in empty), reverse=True)
            self.stats.update(requests=len(flat), unpacked_tokens=sum(lengths),
                              unpacked_padded_tokens=sum(lengths[i] * len(lengths[i : i + self.batch_size]) for i in range(0, len(lengths), self.batch_size)))
        scores = self.runner.score(batches, len(flat), progress)
        for i in empty:
            scores[i] = Score(0.0, 0, True)
        scores = [self._with_bytes(s, r, cont, f) for s, r, (_, cont), f in zip(scores, flat, pairs, fitted)]  # type: ignore[arg-type]
        out, at = [], 0
        for g in groups:
            out.append([s for s in scores[at : at + len(g)]])  # type: ignore[misc]
            at += len(g)
        return out

    def _with_bytes(self, score: Score, request: Request, cont: list[int], fitted: Fitted) -> Score:
        """The score with the UTF-8 bytes its tokens cover (for bits per byte) and the continuation
        tokens cut to fit the model; a cut continuation counts the bytes of its decoded scored tokens."""
        cut = len(cont) - score.n_tokens
        if cut <= 0:
            return replace(score, n_bytes=len(split_request(request)[1].encode("utf-8")))
        text = self.tokenizer.decode(fitted.tokens[fitted.start:], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return replace(score, n_bytes=len(text.encode("utf-8")), cut_tokens=cut)

    def generate(self, prompts: Sequence[str], **options: Any) -> list[list[str]]:
        """Continuations per prompt (greedy when temperature == 0), cut at the first stop sequence.
        `options` are decoding.generate's: max_new_tokens, stop, num_samples, temperature, top_p, seed, progress."""
        return decoding.generate(self.model, self.tokenizer, prompts, batch_size=self.batch_size, max_length=self.max_length,
                                 prefix_token_id=self.prefix_token_id, **options)
