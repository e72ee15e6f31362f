"""Linear + cross-entropy in chunks, gradients computed on the way: no [tokens x vocab] fp32 logits.

The usual LM loss writes bf16 logits, an fp32 copy, an fp32 log-softmax and an fp32 gradient of
the same size (for 16K tokens and a 50K vocabulary: several GB and as many GB of memory traffic).
Here the tokens go through in chunks of about 128 MB of logits; for each chunk the loss and the
gradient of the logits (softmax - one-hot) are formed at once, multiplied back into the gradients
of the hidden states and of the output matrix, and dropped. Backward only scales the stored
gradients. Same FLOPs as the plain loss (one forward and two backward matmuls), a fraction of the
memory. Plain PyTorch; on CUDA the per-chunk kernel is `torch.compile`d, so the softmax, the
one-hot subtraction and the casts fuse into a couple of passes over the chunk's logits.
"""

from __future__ import annotations

import torch

IGNORE = -100
_COMPILED: dict[str, object] = {}


def _chunk(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss sum, d(loss)/dh and d(loss)/dw (fp32) of one chunk of rows."""
    logits = (h @ w.t()).float()
    valid = t != IGNORE
    tt = torch.where(valid, t, 0)
    lse = torch.logsumexp(logits, dim=-1)
    target_logit = logits.gather(1, tt[:, None]).squeeze(1)
    loss = torch.where(valid, lse - target_logit, 0.0).sum()
    cols = torch.arange(logits.shape[1], device=logits.device)
    grad = torch.exp(logits - lse[:, None]) - (cols[None, :] == tt[:, None]).float()
    grad = torch.where(valid[:, None], grad, 0.0).to(h.dtype)
    return loss, grad @ w, (grad.t() @ h).float()


def _chunk_fn(compiled: bool):
    if not compiled:
        return _chunk
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(_chunk)
    return _COMPILED["fn"]


def chunk_rows(vocab: int) -> int:
    """Rows per chunk so one chunk's bf16 logits are about 128 MB (at least 256 rows)."""
    return max(256, (2**26 // max(vocab, 1)) // 256 * 256)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, targets, dtype, rows, compiled):  # type: ignore[override]
        cd = dtype or h.dtype
        with torch.autocast(h.device.type, enabled=False):
            hc, wc = h.detach().to(cd), w.detach().to(cd)
            fn = _chunk_fn(compiled)
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_h = torch.empty_like(hc)
            grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
            for s in range(0, hc.shape[0], rows):
                l_, gh, gw = fn(hc[s : s + rows], wc, targets[s : s + rows])
                loss += l_
                grad_h[s : s + rows] = gh
                grad_w += gw
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (h.dtype, w.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        hd, wd = ctx.dtypes
        return (grad_h * grad_out).to(hd), (grad_w * grad_out).to(wd), None, None, None, None


def linear_cross_entropy(
    h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None = None,
    *, rows: int | None = None, compiled: bool = False,
) -> torch.Tensor:
    """Sum over rows with target != -100 of cross_entropy(h @ w.T, target), as an fp32 scalar.

    h: [N, d] hidden states; w: [V, d] output matrix; targets: [N] int64. The matmuls run in
    `dtype` (default: h's); softmax and accumulation in fp32.
    """
    return _LinearCrossEntropy.apply(h, w, targets, dtype, rows or chunk_rows(w.shape[0]), compiled)
