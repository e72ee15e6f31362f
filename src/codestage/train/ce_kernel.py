"""One chunk's cross-entropy loss and logits gradient as a Triton kernel, written over the logits.

Why: the compiled PyTorch version (`fused_ce._loss_and_grad`) becomes one inductor reduction that
reads the chunk's logits three times (max, sum of exponentials, gradient) and writes the gradient
once. This kernel keeps a running max and sum (online softmax), so it reads each row twice, and
the gradient overwrites the logits in place, so no second chunk-sized buffer is allocated (392 us
against 591-633 us per 4,096 x 50,304 chunk on an H200: bench/ce_kernel.py). Same math as `_loss_and_grad`: fp32 inside, columns from
`vocab` on are padding (no probability, no gradient), rows whose target is -100 get zero gradient.

Runs where Triton runs: on CUDA, and on CPU tensors under TRITON_INTERPRET=1 (how the tests check it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

IGNORE = -100


@triton.jit
def _loss_and_grad_kernel(logits_ptr, targets_ptr, loss_ptr, row_stride, vocab, n_cols,
                          BLOCK: tl.constexpr, IGNORE_INDEX: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * row_stride
    target = tl.load(targets_ptr + row)
    valid = target != IGNORE_INDEX
    t = tl.where(valid, target, 0)

    # Pass 1: log-sum-exp over the real columns with a running max (one read of the row).
    running_max = tl.full((), float("-inf"), tl.float32)
    running_sum = tl.full((), 0.0, tl.float32)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(base + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(x, axis=0))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
        running_max = new_max
    lse = running_max + tl.log(running_sum)
    target_logit = tl.load(base + t).to(tl.float32)
    tl.store(loss_ptr + row, tl.where(valid, lse - target_logit, 0.0))

    # Pass 2: softmax - one-hot, written over the logits (padding columns and ignored rows: 0).
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        inside = cols < n_cols
        x = tl.load(base + cols, mask=inside, other=0.0).to(tl.float32)
        g = tl.exp(x - lse) - tl.where(cols == t, 1.0, 0.0)
        g = tl.where((cols < vocab) & valid, g, 0.0)
        tl.store(base + cols, g.to(logits_ptr.dtype.element_ty), mask=inside)


def loss_and_grad_(logits: torch.Tensor, targets: torch.Tensor, vocab: int, *, block: int = 4096,
                   num_warps: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sum, gradient): the gradient is `logits` itself, overwritten. logits [rows, cols], contiguous rows."""
    if logits.stride(1) != 1:
        raise ValueError("loss_and_grad_: the logits' rows must be contiguous")
    rows, cols = logits.shape
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    _loss_and_grad_kernel[(rows,)](logits, targets, losses, logits.stride(0), vocab, cols,
                                   BLOCK=block, IGNORE_INDEX=IGNORE, num_warps=num_warps)
    return losses.sum(), logits
