"""The model side of log-likelihood scoring: batches of rows (eval/requests.py) through the model,
the log-probability of every target token, summed per request.

Faster than lm-eval without changing a number:
- packed rows (a shared prefix, then one suffix per request) run with a block attention mask
  (built on the device, once a batch) and explicit position ids;
- no host round trips per batch: a batch's inputs travel in one pinned, non-blocking copy; only the
  hidden states at scored positions go through the output layer, in chunks (no
  batch x length x vocabulary tensor); per-token log-probabilities stay on the device until the
  call ends and come back in one transfer, so the CPU prepares and launches the next batch while
  the GPU runs this one.

Two probes at start-up check, on the model at hand, that the split output layer and the packed
rows reproduce the plain forward pass; a model that fails a probe is scored the plain way.
`timer` (a name -> context manager callable) times the phases for bench/eval_profile.py and
`stats` counts rows, batches and tokens.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from typing import Callable, ContextManager

import numpy as np
import torch
from transformers import PreTrainedModel

from codestage.eval.requests import MIN_SHARED_PREFIX, Fitted, Row, Score, pack_rows

HEAD_CHUNK = 2048  # scored positions per output-layer call (bounds the logits buffer)
_NO_PHASE = contextlib.nullcontext()


def block_mask(segments: torch.Tensor, dtype: torch.dtype, align: int = 1) -> torch.Tensor:
    """Additive (B, 1, T, T) mask, built once a batch on the device: causal, and a query sees the prefix
    (segment 0) and its own segment. Padding (-1) is its own segment, so no row is empty and no real
    query sees padding. With `align` 16 (CUDA) the rows are stored 16-aligned (a view of a wider
    tensor), so SDPA's memory-efficient kernel takes the mask as is instead of padding a copy in every layer."""
    n, t = segments.shape
    width = -(-t // align) * align
    keys = segments if width == t else torch.nn.functional.pad(segments, (0, width - t), value=-1)
    causal = torch.ones(t, width, dtype=torch.bool, device=segments.device).tril_()
    allowed = ((segments[:, :, None] == keys[:, None, :]) | (keys[:, None, :] == 0)) & causal
    zero = torch.zeros((), dtype=dtype, device=segments.device)
    mask = torch.where(allowed, zero, torch.finfo(dtype).min)
    return mask[:, None, :, :t]


class LoglikelihoodRunner:
    """Runs batches of rows through one model; `score` returns a Score per request. `pack` says
    whether packed rows may be used (after the probe has confirmed them on this model)."""

    def __init__(self, model: PreTrainedModel, pad_token_id: int, *, pack: bool = True) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.pad = pad_token_id
        self.mask_align = 16 if self.device.type == "cuda" else 1
        self.timer: Callable[[str], ContextManager] | None = None
        self.stats: Counter = Counter()
        self.split_head = self._probe_split_head()
        self.pack = pack and self._probe_packing()

    def phase(self, name: str) -> ContextManager:
        return self.timer(name) if self.timer is not None else _NO_PHASE

    # ---------------------------------------------------------------- forward

    def _hidden_or_logits(self, ids: torch.Tensor, positions: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        kwargs = {}
        if positions is not None:
            kwargs["position_ids"] = positions
        if mask is not None:
            kwargs["attention_mask"] = mask
        if self.split_head:
            return self.model.base_model(input_ids=ids, use_cache=False, **kwargs).last_hidden_state
        return self.model(input_ids=ids, use_cache=False, **kwargs).logits

    def _score_positions(self, states: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-prob of each target, target is argmax) for rows of hidden states (or logits)."""
        logps, greedy = [], []
        head = self.model.get_output_embeddings() if self.split_head else None
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
        dtype = self.model.dtype if self.model.dtype.is_floating_point else torch.float32
        return block_mask(segments, dtype, self.mask_align)

    @torch.inference_mode()
    def _run_batch(self, rows: list[Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """Launch one batch; (log-prob, is-argmax) of every scored token, on the device, in row and
        request order. Nothing here waits for the device."""
        with self.phase("host_batch"):
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
            ids.fill(self.pad)
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
        with self.phase("h2d"):
            host = torch.from_numpy(buf)
            if self.device.type == "cuda":
                dev = host.pin_memory().to(self.device, non_blocking=True)
            else:
                dev = host.to(self.device)
            ids_t = dev[:cells].view(n_rows, width)
            flat_t, tgt_t = dev[len(buf) - 2 * n_scored : len(buf) - n_scored], dev[len(buf) - n_scored :]
        pos_t = mask = None
        if packed:
            with self.phase("mask"):
                pos_t = dev[cells : 2 * cells].view(n_rows, width)
                mask = self._mask(dev[2 * cells : 3 * cells].view(n_rows, width))
        with self.phase("forward"):
            states = self._hidden_or_logits(ids_t, pos_t, mask)
        with self.phase("head"):
            gathered = states.reshape(n_rows * width, -1).index_select(0, flat_t)
            return self._score_positions(gathered, tgt_t)

    def score(self, batches: list[list[Row]], n_requests: int, progress: Callable[[int], None] | None = None) -> list[Score | None]:
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
        with self.phase("d2h"):
            lp_all = torch.cat(logps).double().cpu().numpy()
            gr_all = torch.cat(greedy).cpu().numpy()
        with self.phase("aggregate"):
            starts = np.cumsum(counts) - counts
            sums = np.add.reduceat(lp_all, starts)
            alls = np.logical_and.reduceat(gr_all, starts)
            for req, total, n, all_greedy in zip(owners, sums.tolist(), counts, alls.tolist()):
                scores[req] = Score(total, n, all_greedy)
        return scores

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
        fitted = [Fitted(prefix + t, len(prefix)) for t in tails]
        saved = self.stats.copy()
        try:
            packed = pack_rows(fitted, [[0, 1]], pack=True)
            plain = pack_rows(fitted, [[0], [1]], pack=True)
            if len(packed) != 1 or not packed[0].packed:
                return False
            a = self.score([packed], 2)
            b = self.score([plain], 2)
        except Exception:  # noqa: BLE001
            return False
        finally:
            self.stats = saved
        tol = 1e-3 if self.model.dtype == torch.float32 else 0.1
        return all(math.isclose(a[i].logprob, b[i].logprob, abs_tol=tol * max(1, a[i].n_tokens)) for i in (0, 1))
