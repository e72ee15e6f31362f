"""Log-likelihood requests to model rows, as pure functions: encode, truncate, pack, batch.

What is scored follows lm-evaluation-harness 0.4.x exactly: a (context, continuation) pair is
encoded as lm-eval does (trailing context spaces move into the continuation; the context's tokens
are `encode(context)` and the continuation's are the rest of `encode(context + continuation)`; an
empty context becomes the BOS/EOS token), and inputs longer than the model are cut from the left
(lm-eval) or, for the paper protocol, from the right as the original code did.

What is faster than lm-eval, and decided here:
- tokenization: every text of a call is encoded once (contexts shared by an item's choices once),
  in chunks on a thread pool (the tokenizers library releases the GIL), so all cores work even with
  TOKENIZERS_PARALLELISM=false;
- packing: the choices of one item that share a long token prefix (the question, under the lm-eval
  protocol) go into one row that computes the prefix once (the model side, a block attention mask
  and explicit position ids, is eval/loglikelihood.py);
- batching: rows are sorted by length, packed and plain rows in separate batches (plain batches need
  no mask, so SDPA can use its causal kernels); a batch holds `batch_size` rows (model sequences,
  the same unit as lm-eval's batch size), or more short rows when `max_batch_tokens` allows.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

Truncation = Literal["left", "right"]
MIN_SHARED_PREFIX = 16  # tokens; below this, packing choices saves less than it costs
TOKENIZE_CHUNK = 256  # at most this many texts per tokenizer call on the thread pool


@dataclass(frozen=True)
class Request:
    context: str
    continuation: str


@dataclass(frozen=True)
class Score:
    """Summed log-probability (nats) of the scored continuation tokens, their count, all-argmax;
    `n_bytes`: UTF-8 bytes of the text those tokens cover (the continuation after `split_request`,
    or, when `cut_tokens` of it did not fit the model, the decoded scored tokens)."""

    logprob: float
    n_tokens: int
    is_greedy: bool
    n_bytes: int = 0
    cut_tokens: int = 0


@dataclass
class Fitted:
    tokens: list[int]  # context + continuation after truncation
    start: int  # index of the first scored token in `tokens` (>= 1)


@dataclass
class Row:
    """One model input row: one request (plain), or a shared prefix then one suffix per request (packed)."""

    ids: list[int]
    requests: list[tuple[int, int, list[int]]]  # (request index, row index predicting target 0, targets)
    segment_lengths: list[int] | None = None  # packed: [prefix, suffix 1, suffix 2, ...]

    @property
    def packed(self) -> bool:
        return self.segment_lengths is not None

    def positions_and_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """Position ids (each suffix continues the prefix) and segment ids (0 = prefix, i + 1 = i-th suffix)."""
        lengths = np.asarray(self.segment_lengths, dtype=np.int64)
        segments = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        starts = np.cumsum(lengths) - lengths  # where each segment begins in the row
        shift = np.where(np.arange(len(lengths)) == 0, 0, starts - lengths[0])  # suffix i starts at position `prefix`
        return np.arange(len(self.ids), dtype=np.int64) - np.repeat(shift, lengths), segments


def model_max_length(model: Any, tokenizer: Any = None, default: int = 2048) -> int:
    """The context length the model supports, read as lm-eval does (config first, then tokenizer)."""
    cfg = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        return tok_max
    return default


def cpu_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(16, n))


def tokenize(tokenizer: Any, texts: list[str], workers: int) -> list[list[int]]:
    """input_ids of each text (no special tokens), chunks of texts encoded on a thread pool."""
    encode = lambda chunk: tokenizer(chunk, add_special_tokens=False)["input_ids"]  # noqa: E731
    size = min(TOKENIZE_CHUNK, max(16, -(-len(texts) // (4 * workers))))
    if workers < 2 or len(texts) < 2 * size or not getattr(tokenizer, "is_fast", False):
        return encode(texts)
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    out = encode(chunks[0])  # the first call settles the tokenizer's truncation/padding state
    with ThreadPoolExecutor(workers) as pool:
        for ids in pool.map(encode, chunks[1:]):
            out += ids
    return out


def split_request(request: Request) -> tuple[str, str]:
    """(context, continuation) text as lm-evaluation-harness scores it: the context's trailing spaces
    move into the continuation (unless the context is only spaces)."""
    ctx, cont = request.context, request.continuation
    n_spaces = len(ctx) - len(ctx.rstrip())
    if n_spaces and ctx.strip():
        ctx, cont = ctx[:-n_spaces], ctx[-n_spaces:] + cont
    return ctx, cont


def encode_pairs(requests: Sequence[Request], tokenizer: Any, prefix_token_id: int, *,
                 workers: int = 1) -> list[tuple[list[int], list[int]]]:
    """(context tokens, continuation tokens) per request, split as lm-evaluation-harness does."""
    pairs = [split_request(r) for r in requests]
    texts = list(dict.fromkeys([c for c, _ in pairs if c] + [c + k for c, k in pairs] + [k for c, k in pairs if not c]))
    enc = dict(zip(texts, tokenize(tokenizer, texts, workers))) if texts else {}
    out = []
    for ctx, cont in pairs:
        if not ctx:
            cont_ids = enc[cont]
            if cont_ids and cont_ids[0] == prefix_token_id:
                out.append((cont_ids[:1], cont_ids[1:]))
            else:
                out.append(([prefix_token_id], cont_ids))
            continue
        ctx_ids = enc[ctx]
        out.append((ctx_ids, enc[ctx + cont][len(ctx_ids):]))
    return out


def fit(ctx: list[int], cont: list[int], truncation: Truncation, max_length: int) -> Fitted:
    """Cut a pair to the model's length: lm-eval keeps the end ("left" truncation); the paper's
    code kept the beginning ("right"), so the candidate in the context stays in view."""
    limit = max_length + 1  # tokens; the last one is only a target
    if len(ctx) + len(cont) <= limit:
        return Fitted(ctx + cont, len(ctx))
    if truncation == "left":
        if len(cont) >= limit:  # an over-long continuation: score its tail after one context token
            ctx, cont = ctx[-1:], cont[-(limit - 1):]
        seq = (ctx + cont)[-limit:]
        return Fitted(seq, len(seq) - len(cont))
    if len(ctx) >= max_length:  # keep the end of the context, where the candidate sits
        ctx = ctx[-(max_length // 2):]
    cont = cont[: limit - len(ctx)]
    return Fitted(ctx + cont, len(ctx))


def shared_prefix(seqs: list[list[int]], limit: int) -> int:
    """Length of the longest common prefix of `seqs`, at most `limit` (list slices compare in C)."""
    first = seqs[0]
    n = min(limit, *(len(s) for s in seqs))
    for s in seqs[1:]:
        if n <= 0:
            return 0
        if first[:n] == s[:n]:
            continue
        lo, hi = 0, n  # first[:lo] == s[:lo] and first[:hi] != s[:hi]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if first[:mid] == s[:mid]:
                lo = mid
            else:
                hi = mid
        n = lo
    return max(n, 0)


def pack_rows(fitted: list[Fitted], groups: list[list[int]], *, pack: bool) -> list[Row]:
    """Model rows for groups of request indices: with `pack`, a group whose requests share at
    least MIN_SHARED_PREFIX tokens becomes one packed row; every other request a plain row."""
    rows = []
    for group in groups:
        shared = 0
        if pack and len(group) > 1:
            shared = shared_prefix([fitted[i].tokens for i in group], min(fitted[i].start for i in group) - 1)
        if shared >= MIN_SHARED_PREFIX:
            ids = fitted[group[0]].tokens[:shared]
            lengths, reqs = [shared], []
            for i in group:
                f = fitted[i]
                suffix = f.tokens[shared:-1]
                reqs.append((i, len(ids) + f.start - 1 - shared, f.tokens[f.start:]))
                ids += suffix
                lengths.append(len(suffix))
            rows.append(Row(ids, reqs, lengths))
        else:
            for i in group:
                f = fitted[i]
                rows.append(Row(f.tokens[:-1], [(i, f.start - 1, f.tokens[f.start:])]))
    return rows


def make_batches(rows: list[Row], batch_size: int, max_batch_tokens: int | None = None) -> list[list[Row]]:
    """Rows longest first, packed and plain apart (plain batches need no mask), `batch_size` rows a
    batch, or more while rows x width fits `max_batch_tokens`."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i].packed, -len(rows[i].ids)))
    batches: list[list[Row]] = []
    batch: list[Row] = []
    for i in order:
        row = rows[i]
        if batch and row.packed == batch[0].packed and (
            len(batch) < batch_size
            or (max_batch_tokens is not None and (len(batch) + 1) * len(batch[0].ids) <= max_batch_tokens)
        ):
            batch.append(row)
            continue
        if batch:
            batches.append(batch)
        batch = [row]
    if batch:
        batches.append(batch)
    return batches
