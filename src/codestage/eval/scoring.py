"""Batched log-likelihood of (context, continuation) pairs and greedy generation, for any HF causal LM.

Log-likelihoods follow lm-evaluation-harness 0.4.x exactly in what is scored: the pair is encoded
as lm-eval does (trailing context spaces move into the continuation; the context's tokens are
`encode(context)` and the continuation's are the rest of `encode(context + continuation)`; an
empty context becomes the BOS/EOS token), inputs longer than the model are cut from the left
(lm-eval) or, for the paper protocol, from the right as the original code did, and the result
per request is the summed log-probability of the continuation tokens, their count, and whether
each was the argmax.

What is faster than lm-eval: requests are sorted by length and batched; the choices of one item
that share a long token prefix (the question, under the lm-eval protocol) are packed into one
row that computes the prefix once, with a block attention mask and explicit position ids; only
the hidden states at scored positions go through the output layer, in chunks, so no
(batch x length x vocabulary) log-softmax is ever materialised; bf16 on CUDA. Two probes at
start-up check, on the model at hand, that the split output layer and the packed rows reproduce
the plain forward pass; a model that fails a probe is scored the plain way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

Truncation = Literal["left", "right"]
MIN_SHARED_PREFIX = 16  # tokens; below this, packing choices saves less than it costs
HEAD_CHUNK = 2048  # scored positions per output-layer call (bounds the logits buffer)


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
    """One model input row: a shared prefix then one input segment per request (or one request)."""

    ids: list[int]
    positions: list[int]
    segments: list[int]  # 0 = shared/plain, i + 1 = suffix of the i-th request
    requests: list[tuple[int, int, list[int]]]  # (request index, row index predicting target 0, targets)

    @property
    def packed(self) -> bool:
        return any(s > 0 for s in self.segments)


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


class Scorer:
    """Scores requests with one model; construct once per model, reuse for every task."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        pack: bool = True,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.device = next(model.parameters()).device
        bos = tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else tokenizer.eos_token_id
        self._split = self._probe_split_head()
        self.pack = False
        self.pack = pack and self._probe_packing()

    # ---------------------------------------------------------------- tokenization

    def _encode_many(self, texts: Sequence[str]) -> dict[str, list[int]]:
        unique = list(dict.fromkeys(texts))
        if not unique:
            return {}
        ids = self.tokenizer(unique, add_special_tokens=False)["input_ids"]
        return dict(zip(unique, ids))

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

    # ---------------------------------------------------------------- rows

    def _rows(self, fitted: list[_Fitted], groups: list[list[int]]) -> list[_Row]:
        rows = []
        for group in groups:
            shared = 0
            if self.pack and len(group) > 1:
                seqs = [fitted[i].tokens for i in group]
                common = 0
                for column in zip(*seqs):
                    if any(tok != column[0] for tok in column[1:]):
                        break
                    common += 1
                shared = min(common, min(fitted[i].start for i in group) - 1)
            if shared >= MIN_SHARED_PREFIX:
                prefix = fitted[group[0]].tokens[:shared]
                ids, pos, seg, reqs = list(prefix), list(range(shared)), [0] * shared, []
                for k, i in enumerate(group):
                    f = fitted[i]
                    suffix = f.tokens[shared:-1]
                    offset = len(ids)
                    ids += suffix
                    pos += range(shared, shared + len(suffix))
                    seg += [k + 1] * len(suffix)
                    reqs.append((i, offset + f.start - 1 - shared, f.tokens[f.start:]))
                rows.append(_Row(ids, pos, seg, reqs))
            else:
                for i in group:
                    f = fitted[i]
                    n = len(f.tokens) - 1
                    rows.append(_Row(f.tokens[:-1], list(range(n)), [0] * n, [(i, f.start - 1, f.tokens[f.start:])]))
        return rows

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
            logits = (head(chunk) if head is not None else chunk).float()
            tgt = targets[start : start + HEAD_CHUNK]
            picked = logits.gather(1, tgt[:, None]).squeeze(1)
            logps.append(picked - torch.logsumexp(logits, dim=-1))
            greedy.append(logits.argmax(dim=-1) == tgt)
        return torch.cat(logps), torch.cat(greedy)

    def _mask(self, segments: torch.Tensor) -> torch.Tensor:
        """Additive (B, 1, T, T) mask: causal, padding (-1) hidden, suffixes see the prefix and themselves."""
        t = segments.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
        q, k = segments[:, :, None], segments[:, None, :]
        allowed = causal & (k >= 0) & ((k == 0) | (k == q))
        allowed |= torch.eye(t, dtype=torch.bool, device=segments.device) & (q < 0)  # pads see themselves
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[:, None]

    @torch.inference_mode()
    def _run_batch(self, rows: list[_Row]) -> list[tuple[int, Score]]:
        width = max(len(r.ids) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        packed = any(r.packed for r in rows)
        pos = torch.zeros((len(rows), width), dtype=torch.long) if packed else None
        seg = torch.full((len(rows), width), -1, dtype=torch.long) if packed else None
        b_idx, q_idx, tgt, owners = [], [], [], []
        for b, r in enumerate(rows):
            n = len(r.ids)
            ids[b, :n] = torch.tensor(r.ids)
            if packed:
                pos[b, :n] = torch.tensor(r.positions)
                seg[b, :n] = torch.tensor(r.segments)
            for req, first, targets in r.requests:
                b_idx += [b] * len(targets)
                q_idx += range(first, first + len(targets))
                tgt += targets
                owners.append((req, len(targets)))
        ids = ids.to(self.device)
        mask = self._mask(seg.to(self.device)) if packed else None
        states = self._hidden_or_logits(ids, pos.to(self.device) if packed else None, mask)
        gathered = states[torch.tensor(b_idx, device=self.device), torch.tensor(q_idx, device=self.device)]
        logp, greedy = self._score_positions(gathered, torch.tensor(tgt, device=self.device))
        logp, greedy = logp.double().cpu(), greedy.cpu()
        out, at = [], 0
        for req, n in owners:
            out.append((req, Score(float(logp[at : at + n].sum()), n, bool(greedy[at : at + n].all()))))
            at += n
        return out

    def loglikelihood(
        self,
        groups: Sequence[Sequence[Request]],
        *,
        truncation: Truncation = "left",
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Score]]:
        """Scores per request, grouped as given (a group = one item's choices, which may share a prefix)."""
        flat = [r for g in groups for r in g]
        pairs = self.encode_pairs(flat)
        fitted = [self._fit(c, k, truncation) for c, k in pairs]
        index_groups, at = [], 0
        for g in groups:
            index_groups.append(list(range(at, at + len(g))))
            at += len(g)
        empty = {i for i, f in enumerate(fitted) if f.start >= len(f.tokens)}
        index_groups = [[i for i in g if i not in empty] for g in index_groups]
        rows = self._rows(fitted, [g for g in index_groups if g])
        # Plain and packed rows go in separate batches: plain batches need no custom mask.
        order = sorted(range(len(rows)), key=lambda i: (rows[i].packed, -len(rows[i].ids)))
        scores: list[Score | None] = [Score(0.0, 0, True) if i in empty else None for i in range(len(flat))]
        batch: list[_Row] = []
        for i in order + [None]:
            if i is not None and (not batch or (rows[i].packed == batch[0].packed and len(batch) < self.batch_size)):
                batch.append(rows[i])
                continue
            if batch:
                for req, score in self._run_batch(batch):
                    scores[req] = score
                if progress:
                    progress(sum(len(r.requests) for r in batch))
            batch = [rows[i]] if i is not None else []
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
        try:
            self.pack = True
            packed = self._rows(fitted, [[0, 1]])
            plain = self._rows(fitted, [[0], [1]])
            if len(packed) != 1 or not packed[0].packed:
                return False
            a = dict(self._run_batch(packed))
            b = dict(self._run_batch(plain))
        except Exception:  # noqa: BLE001
            return False
        finally:
            self.pack = False
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
