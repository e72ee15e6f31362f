"""Batched log-likelihood of (context, continuation) pairs and greedy generation, for any HF causal LM.

Log-likelihoods follow lm-evaluation-harness 0.4.x exactly in what is scored: the pair is encoded
as lm-eval does (trailing context spaces move into the continuation; the context's tokens are
`encode(context)` and the continuation's are the rest of `encode(context + continuation)`; an
empty context becomes the BOS/EOS token), inputs longer than the model are cut from the left
(lm-eval) or, for the paper protocol, from the right as the original code did, and the result
per request is the summed log-probability of the continuation tokens, their count, and whether
each was the argmax.

What is faster than lm-eval:
- tokenization: every text of a call is encoded once (contexts shared by an item's choices once),
  in chunks on a thread pool (the tokenizers library releases the GIL), so all cores work even with
  TOKENIZERS_PARALLELISM=false;
- packing: the choices of one item that share a long token prefix (the question, under the lm-eval
  protocol) go into one row that computes the prefix once, with a block attention mask (built on
  the device, once a batch) and explicit position ids;
- batching: rows are sorted by length, packed and plain rows in separate batches (plain batches need
  no mask, so SDPA can use its causal kernels); a batch holds `batch_size` rows (model sequences,
  the same unit as lm-eval's batch size), or more short rows when `max_batch_tokens` allows;
- no host round trips per batch: a batch's inputs travel in one pinned, non-blocking copy; only the
  hidden states at scored positions go through the output layer, in chunks (no
  batch x length x vocabulary tensor); per-token log-probabilities stay on the device until the
  call ends and come back in one transfer, so the CPU prepares and launches the next batch while
  the GPU runs this one;
- bf16 on CUDA.

Two probes at start-up check, on the model at hand, that the split output layer and the packed
rows reproduce the plain forward pass; a model that fails a probe is scored the plain way.
`Scorer.timer` (a name -> context manager callable) times the phases for bench/eval_profile.py and
`Scorer.stats` counts requests, rows, batches and tokens.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, ContextManager, Literal, Sequence

import numpy as np
import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

Truncation = Literal["left", "right"]
MIN_SHARED_PREFIX = 16  # tokens; below this, packing choices saves less than it costs
HEAD_CHUNK = 2048  # scored positions per output-layer call (bounds the logits buffer)
TOKENIZE_CHUNK = 256  # at most this many texts per tokenizer call on the thread pool
_NO_PHASE = contextlib.nullcontext()


@dataclass(frozen=True)
class Request:
    context: str
    continuation: str


@dataclass(frozen=True)
class Score:
    """Summed log-probability (nats) of the scored continuation tokens, their count, all-argmax."""

    logprob: float
    n_tokens: int
    is_greedy: bool


@dataclass
class _Fitted:
    tokens: list[int]  # context + continuation after truncation
    start: int  # index of the first scored token in `tokens` (>= 1)


@dataclass
class _Row:
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


def model_max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None, default: int = 2048) -> int:
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


def _shared_prefix(seqs: list[list[int]], limit: int) -> int:
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


def _cpu_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(16, n))


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
        self.device = next(model.parameters()).device
        self.tokenize_workers = tokenize_workers or _cpu_workers()
        bos = tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else tokenizer.eos_token_id
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._mask_align = 16 if self.device.type == "cuda" else 1
        self.timer: Callable[[str], ContextManager] | None = None
        self.stats: Counter = Counter()
        self._split = self._probe_split_head()
        self.pack = False
        self.pack = pack and self._probe_packing()

    def _phase(self, name: str) -> ContextManager:
        return self.timer(name) if self.timer is not None else _NO_PHASE

    # ---------------------------------------------------------------- tokenization

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """input_ids of each text (no special tokens), chunks of texts encoded on a thread pool."""
        encode = lambda chunk: self.tokenizer(chunk, add_special_tokens=False)["input_ids"]  # noqa: E731
        size = min(TOKENIZE_CHUNK, max(16, -(-len(texts) // (4 * self.tokenize_workers))))
        if self.tokenize_workers < 2 or len(texts) < 2 * size or not getattr(self.tokenizer, "is_fast", False):
            return encode(texts)
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        out = encode(chunks[0])  # the first call settles the tokenizer's truncation/padding state
        with ThreadPoolExecutor(self.tokenize_workers) as pool:
            for ids in pool.map(encode, chunks[1:]):
                out += ids
        return out

    def _encode_many(self, texts: Sequence[str]) -> dict[str, list[int]]:
        unique = list(dict.fromkeys(texts))
        if not unique:
            return {}
        return dict(zip(unique, self._tokenize(unique)))

    def encode_pairs(self, requests: Sequence[Request]) -> list[tuple[list[int], list[int]]]:
        """(context tokens, continuation tokens) per request, split as lm-evaluation-harness does."""
        pairs = []
        for r in requests:
            ctx, cont = r.context, r.continuation
            n_spaces = len(ctx) - len(ctx.rstrip())
            if n_spaces and ctx.strip():
                ctx, cont = ctx[:-n_spaces], ctx[-n_spaces:] + cont
            pairs.append((ctx, cont))
        enc = self._encode_many([c for c, _ in pairs if c] + [c + k for c, k in pairs] + [k for c, k in pairs if not c])
        out = []
        for ctx, cont in pairs:
            if not ctx:
                cont_ids = enc[cont]
                if cont_ids and cont_ids[0] == self.prefix_token_id:
                    out.append((cont_ids[:1], cont_ids[1:]))
                else:
                    out.append(([self.prefix_token_id], cont_ids))
                continue
            ctx_ids = enc[ctx]
            out.append((ctx_ids, enc[ctx + cont][len(ctx_ids):]))
        return out

    def _fit(self, ctx: list[int], cont: list[int], truncation: Truncation) -> _Fitted:
        """Cut a pair to the model's length: lm-eval keeps the end ("left" truncation); the paper's
        code kept the beginning ("right"), so the candidate in the context stays in view."""
        limit = self.max_length + 1  # tokens; the last one is only a target
        if len(ctx) + len(cont) <= limit:
            return _Fitted(ctx + cont, len(ctx))
        if truncation == "left":
            if len(cont) >= limit:  # an over-long continuation: score its tail after one context token
                ctx, cont = ctx[-1:], cont[-(limit - 1):]
            seq = (ctx + cont)[-limit:]
            return _Fitted(seq, len(seq) - len(cont))
        if len(ctx) >= self.max_length:  # keep the end of the context, where the candidate sits
            ctx = ctx[-(self.max_length // 2):]
        cont = cont[: limit - len(ctx)]
        return _Fitted(ctx + cont, len(ctx))

    # ---------------------------------------------------------------- rows and batches

    def _rows(self, fitted: list[_Fitted], groups: list[list[int]]) -> list[_Row]:
        rows = []
        for group in groups:
            shared = 0
            if self.pack and len(group) > 1:
                shared = _shared_prefix([fitted[i].tokens for i in group], min(fitted[i].start for i in group) - 1)
            if shared >= MIN_SHARED_PREFIX:
                ids = fitted[group[0]].tokens[:shared]
                lengths, reqs = [shared], []
                for i in group:
                    f = fitted[i]
                    suffix = f.tokens[shared:-1]
                    reqs.append((i, len(ids) + f.start - 1 - shared, f.tokens[f.start:]))
                    ids += suffix
                    lengths.append(len(suffix))
                rows.append(_Row(ids, reqs, lengths))
            else:
                for i in group:
                    f = fitted[i]
                    rows.append(_Row(f.tokens[:-1], [(i, f.start - 1, f.tokens[f.start:])]))
        return rows

    def _batches(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows longest first, packed and plain apart (plain batches need no mask), `batch_size` rows a
        batch, or more while rows x width fits `max_batch_tokens`."""
        order = sorted(range(len(rows)), key=lambda i: (rows[i].packed, -len(rows[i].ids)))
        batches: list[list[_Row]] = []
        batch: list[_Row] = []
        for i in order:
            row = rows[i]
            if batch and row.packed == batch[0].packed and (
                len(batch) < self.batch_size
                or (self.max_batch_tokens is not None and (len(batch) + 1) * len(batch[0].ids) <= self.max_batch_tokens)
            ):
                batch.append(row)
                continue
            if batch:
                batches.append(batch)
            batch = [row]
        if batch:
            batches.append(batch)
        return batches

    # ---------------------------------------------------------------- forward

    def _hidden_or_logits(self, ids: torch.Tensor, positions: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        kwargs = {}
        if positions is not None:
            kwargs["position_ids"] = positions
        if mask is not None:
            kwargs["attention_mask"] = mask
        if self._split:
            return self.model.base_model(input_ids=ids, use_cache=False, **kwargs).last_hidden_state
        return self.model(input_ids=ids, use_cache=False, **kwargs).logits

    def _score_positions(self, states: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-prob of each target, target is argmax) for rows of hidden states (or logits)."""
        logps, greedy = [], []
        head = self.model.get_output_embeddings() if self._split else None
        for start in range(0, states.shape[0], HEAD_CHUNK):
            chunk = states[start : start + HEAD_CHUNK]
            logits = head(chunk) if head is not None else chunk
            logits = logits if logits.dtype == torch.float64 else logits.float()  # bf16/fp32 -> fp32; fp64 stays
            tgt = targets[start : start + HEAD_CHUNK]
            picked = logits.gather(1, tgt[:, None]).squeeze(1)
            logps.append(picked - torch.logsumexp(logits, dim=-1))
            greedy.append(logits.argmax(dim=-1) == tgt)
        return torch.cat(logps), torch.cat(greedy)

    def _mask(self, segments: torch.Tensor) -> torch.Tensor:
        """Additive (B, 1, T, T) mask, built once a batch on the device: causal, and a query sees the prefix
        (segment 0) and its own segment. Padding (-1) is its own segment, so no row is empty and no real
        query sees padding. On CUDA the rows are stored 16-aligned (a view of a wider tensor), so SDPA's
        memory-efficient kernel takes the mask as is instead of padding a copy in every layer."""
        n, t = segments.shape
        width = -(-t // self._mask_align) * self._mask_align
        keys = segments if width == t else torch.nn.functional.pad(segments, (0, width - t), value=-1)
        causal = torch.ones(t, width, dtype=torch.bool, device=segments.device).tril_()
        allowed = ((segments[:, :, None] == keys[:, None, :]) | (keys[:, None, :] == 0)) & causal
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        zero = torch.zeros((), dtype=dtype, device=segments.device)
        mask = torch.where(allowed, zero, torch.finfo(dtype).min)
        return mask[:, None, :, :t]

    @torch.inference_mode()
    def _run_batch(self, rows: list[_Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """Launch one batch; (log-prob, is-argmax) of every scored token, on the device, in row and
        request order. Nothing here waits for the device."""
        with self._phase("host_batch"):
            n_rows, width = len(rows), max(len(r.ids) for r in rows)
            packed = rows[0].packed
            flat, tgt = [], []
            for b, r in enumerate(rows):
                for _, first, targets in r.requests:
                    at = b * width + first
                    flat.extend(range(at, at + len(targets)))
                    tgt.extend(targets)
            n_scored, cells = len(tgt), n_rows * width
            buf = np.empty((3 if packed else 1) * cells + 2 * n_scored, dtype=np.int64)
            ids = buf[:cells].reshape(n_rows, width)
            ids.fill(self._pad)
            for b, r in enumerate(rows):
                ids[b, : len(r.ids)] = r.ids
            if packed:
                pos = buf[cells : 2 * cells].reshape(n_rows, width)
                seg = buf[2 * cells : 3 * cells].reshape(n_rows, width)
                pos.fill(0)
                seg.fill(-1)
                for b, r in enumerate(rows):
                    p, s = r.positions_and_segments()
                    pos[b, : len(p)] = p
                    seg[b, : len(s)] = s
            buf[len(buf) - 2 * n_scored : len(buf) - n_scored] = flat
            buf[len(buf) - n_scored :] = tgt
            self.stats.update(batches=1, rows=n_rows, packed_rows=n_rows if packed else 0, padded_tokens=cells,
                              tokens=sum(len(r.ids) for r in rows), scored_tokens=n_scored)
        with self._phase("h2d"):
            host = torch.from_numpy(buf)
            if self.device.type == "cuda":
                dev = host.pin_memory().to(self.device, non_blocking=True)
            else:
                dev = host.to(self.device)
            ids_t = dev[:cells].view(n_rows, width)
            flat_t, tgt_t = dev[len(buf) - 2 * n_scored : len(buf) - n_scored], dev[len(buf) - n_scored :]
        pos_t = mask = None
        if packed:
            with self._phase("mask"):
                pos_t = dev[cells : 2 * cells].view(n_rows, width)
                mask = self._mask(dev[2 * cells : 3 * cells].view(n_rows, width))
        with self._phase("forward"):
            states = self._hidden_or_logits(ids_t, pos_t, mask)
        with self._phase("head"):
            gathered = states.reshape(n_rows * width, -1).index_select(0, flat_t)
            return self._score_positions(gathered, tgt_t)

    def _score_batches(self, batches: list[list[_Row]], n_requests: int, progress: Callable[[int], None] | None = None) -> list[Score | None]:
        """Run all batches, then bring every token's result back in one transfer and sum per request."""
        logps, greedy, owners, counts = [], [], [], []
        for batch in batches:
            lp, gr = self._run_batch(batch)
            logps.append(lp)
            greedy.append(gr)
            for r in batch:
                for req, _, targets in r.requests:
                    owners.append(req)
                    counts.append(len(targets))
            if progress:
                progress(sum(len(r.requests) for r in batch))
        scores: list[Score | None] = [None] * n_requests
        if not owners:
            return scores
        with self._phase("d2h"):
            lp_all = torch.cat(logps).double().cpu().numpy()
            gr_all = torch.cat(greedy).cpu().numpy()
        with self._phase("aggregate"):
            starts = np.cumsum(counts) - counts
            sums = np.add.reduceat(lp_all, starts)
            alls = np.logical_and.reduceat(gr_all, starts)
            for req, total, n, all_greedy in zip(owners, sums.tolist(), counts, alls.tolist()):
                scores[req] = Score(total, n, all_greedy)
        return scores

    def loglikelihood(
        self,
        groups: Sequence[Sequence[Request]],
        *,
        truncation: Truncation = "left",
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Score]]:
        """Scores per request, grouped as given (a group = one item's choices, which may share a prefix)."""
        flat = [r for g in groups for r in g]
        with self._phase("tokenize"):
            pairs = self.encode_pairs(flat)
        with self._phase("rows"):
            fitted = [self._fit(c, k, truncation) for c, k in pairs]
            index_groups, at = [], 0
            for g in groups:
                index_groups.append(list(range(at, at + len(g))))
                at += len(g)
            empty = {i for i, f in enumerate(fitted) if f.start >= len(f.tokens)}
            index_groups = [[i for i in g if i not in empty] for g in index_groups]
            rows = self._rows(fitted, [g for g in index_groups if g])
            batches = self._batches(rows)
            lengths = sorted((len(f.tokens) - 1 for i, f in enumerate(fitted) if i not in empty), reverse=True)
            self.stats.update(requests=len(flat), unpacked_tokens=sum(lengths),
                              unpacked_padded_tokens=sum(lengths[i] * len(lengths[i : i + self.batch_size]) for i in range(0, len(lengths), self.batch_size)))
        scores = self._score_batches(batches, len(flat), progress)
        for i in empty:
            scores[i] = Score(0.0, 0, True)
        out, at = [], 0
        for g in groups:
            out.append([s for s in scores[at : at + len(g)]])  # type: ignore[misc]
            at += len(g)
        return out

    # ---------------------------------------------------------------- probes

    @torch.inference_mode()
    def _probe_split_head(self) -> bool:
        """True when base_model + output embeddings reproduce the model's logits (no soft-capping etc.)."""
        head = self.model.get_output_embeddings()
        if head is None or getattr(self.model, "base_model", None) is None or self.model.base_model is self.model:
            return False
        ids = torch.arange(1, 9, device=self.device)[None] % max(2, self.model.config.vocab_size)
        try:
            full = self.model(input_ids=ids, use_cache=False).logits.float()
            mine = head(self.model.base_model(input_ids=ids, use_cache=False).last_hidden_state).float()
        except Exception:  # noqa: BLE001 - any failure means: use the plain path
            return False
        tol = 1e-3 if self.model.dtype == torch.float32 else 5e-2
        return mine.shape == full.shape and bool(torch.allclose(mine, full, rtol=tol, atol=tol * (1 + full.abs().max().item())))

    def _probe_packing(self) -> bool:
        """True when packed rows (block mask + position ids) give the plain forward's scores."""
        vocab = max(4, min(self.model.config.vocab_size, 1000))
        g = torch.Generator().manual_seed(0)
        prefix = torch.randint(3, vocab, (MIN_SHARED_PREFIX + 4,), generator=g).tolist()
        tails = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (3, 5)]
        fitted = [_Fitted(prefix + t, len(prefix)) for t in tails]
        saved = self.stats.copy()
        try:
            self.pack = True
            packed = self._rows(fitted, [[0, 1]])
            plain = self._rows(fitted, [[0], [1]])
            if len(packed) != 1 or not packed[0].packed:
                return False
            a = self._score_batches([packed], 2)
            b = self._score_batches([plain], 2)
        except Exception:  # noqa: BLE001
            return False
        finally:
            self.pack = False
            self.stats = saved
        tol = 1e-3 if self.model.dtype == torch.float32 else 0.1
        return all(math.isclose(a[i].logprob, b[i].logprob, abs_tol=tol * max(1, a[i].n_tokens)) for i in (0, 1))

    # ---------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 128,
        stop: Sequence[str] = (),
        num_samples: int = 1,
        temperature: float = 0.0,
        top_p: float = 0.95,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[str]]:
        """Continuations per prompt (greedy when temperature == 0), cut at the first stop sequence."""
        if not prompts:
            return []
        max_prompt = max(1, self.max_length - max_new_tokens)
        encoded = [ids[-max_prompt:] or [self.prefix_token_id] for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        sample = temperature > 0
        num_samples = num_samples if sample else 1
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        options = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sample else dict(do_sample=False)
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=pad_id,
            **options,
        )
        results: list[list[str]] = [[] for _ in prompts]
        step = max(1, self.batch_size // max(1, num_samples))
        for b, start in enumerate(range(0, len(order), step)):
            idx = order[start : start + step]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), cfg.pad_token_id, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: every prompt ends at the same column
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                attn[row, width - len(encoded[i]):] = 1
            if sample:
                torch.manual_seed(seed * 1_000_003 + b)
            criteria = StoppingCriteriaList([_StopOnText(self.tokenizer, width, list(stop), len(idx) * num_samples)]) if stop else None
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=attn.to(self.device),
                generation_config=cfg,
                stopping_criteria=criteria,
            )
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for row, i in enumerate(idx):
                results[i] = [cut_at_stop(t, stop) for t in texts[row * num_samples : (row + 1) * num_samples]]
            if progress:
                progress(len(idx))
        return results


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the earliest stop sequence."""
    cut = len(text)
    for s in stop:
        at = text.find(s)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]


class _StopOnText(StoppingCriteria):
    """Per-row stop once any stop string appears in that row's generated text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_width: int, stop: list[str], rows: int) -> None:
        self.tokenizer, self.width, self.stop = tokenizer, prompt_width, stop
        self.done = torch.zeros(rows, dtype=torch.bool)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs) -> torch.BoolTensor:
        todo = (~self.done).nonzero().flatten().tolist()
        if todo:
            texts = self.tokenizer.batch_decode(input_ids[todo, self.width:], skip_special_tokens=True)
            for row, text in zip(todo, texts):
                if any(s in text for s in self.stop):
                    self.done[row] = True
        return self.done.to(input_ids.device).clone()
