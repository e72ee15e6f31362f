"""Linear + cross-entropy in chunks, gradients computed on the way: no [tokens x vocab] fp32 logits.

The usual LM loss writes bf16 logits, an fp32 copy, an fp32 log-softmax and an fp32 gradient of
the same size (for 16K tokens and a 50K vocabulary: several GB and as many GB of memory traffic).
Here the tokens go through in chunks; for each chunk the loss and the gradient of the logits
(softmax - one-hot) are formed at once, multiplied back into the gradients of the hidden states
and of the output matrix, and dropped. Backward only scales the stored gradients. Same FLOPs as
the plain loss (one forward and two backward matmuls), a fraction of the memory.

On CUDA the softmax/one-hot step is a Triton kernel that overwrites the chunk's logits with their
gradient (`ce_kernel.py`; `torch.compile`d PyTorch where Triton is missing),
the hidden-state gradient is written by the matmul straight into its slice of the output, and the
output-matrix gradient is accumulated by the matmul itself in fp32 (`addmm` with an fp32
accumulator), so no per-chunk fp32 copy is written and added.
"""

from __future__ import annotations

import torch

IGNORE = -100
_COMPILED: dict[str, object] = {}


def _loss_and_grad(logits: torch.Tensor, t: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss sum of one chunk of logits and d(loss)/d(logits), in the logits' dtype.

    Columns from `vocab` on are padding (see `_padded`): they take no probability and no gradient.
    """
    cols = torch.arange(logits.shape[1], device=logits.device)
    x = torch.where(cols[None, :] < vocab, logits.float(), float("-inf"))
    valid = t != IGNORE
    tt = torch.where(valid, t, 0)
    lse = torch.logsumexp(x, dim=-1)
    target_logit = x.gather(1, tt[:, None]).squeeze(1)
    loss = torch.where(valid, lse - target_logit, 0.0).sum()
    grad = torch.exp(x - lse[:, None]) - (cols[None, :] == tt[:, None]).float()
    return loss, torch.where(valid[:, None], grad, 0.0).to(logits.dtype)


def _loss_fn(compiled: bool, device: torch.device):
    """The chunk step to use: the Triton kernel on CUDA, else torch.compile's version, else eager."""
    if not compiled:
        return _loss_and_grad
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(_loss_and_grad)
    if device.type == "cuda" and "cuda" not in _COMPILED:  # looked up once: a failed import searches sys.path
        try:
            from codestage.train.ce_kernel import loss_and_grad_
        except ImportError:  # no Triton: the compiled PyTorch version
            loss_and_grad_ = _COMPILED["fn"]
        _COMPILED["cuda"] = loss_and_grad_
    return _COMPILED["cuda"] if device.type == "cuda" else _COMPILED["fn"]


def chunk_rows(vocab: int, logits_bytes: int = 2**29) -> int:
    """Rows per chunk so one chunk's bf16 logits take about `logits_bytes` (at least 256 rows).

    512 MB by default: the chunk's logits and their gradient cost 1 GB of memory at most, and
    few chunks mean few passes over the fp32 output-matrix gradient.
    """
    return max(256, (logits_bytes // (2 * max(vocab, 1))) // 256 * 256)


def even_rows(n: int, most: int) -> int:
    """The largest multiple of 64 that divides n and is at most `most`, else `most`.

    Chunks of one size keep the compiled function's shapes static (a short last chunk would make
    its row dimension dynamic); pretraining's n = rows x seq_len nearly always has such a divisor.
    """
    for rows in range(most - most % 64, 63, -64):
        if n % rows == 0:
            return rows
    return most


def _padded(w: torch.Tensor, dtype: torch.dtype, multiple: int = 128) -> torch.Tensor:
    """w in `dtype`, with zero rows appended up to a multiple of `multiple` rows (one copy).

    A vocabulary like GPT-2's 50257 makes the logits' leading dimension odd, and cuBLAS then falls
    back to unaligned kernels several times slower; padded, every matmul here is aligned.
    """
    rows = w.shape[0] + (-w.shape[0] % multiple)
    if rows == w.shape[0]:
        return w.to(dtype)
    out = w.new_zeros((rows, w.shape[1]), dtype=dtype)
    out[: w.shape[0]] = w
    return out


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """acc + a @ b with acc in fp32 and a, b in a lower precision, summed in fp32."""
    if acc.is_cuda and a.dtype != acc.dtype:
        return torch.addmm(acc, a, b, out_dtype=acc.dtype)  # the matmul's epilogue adds: one pass
    return acc.add_((a @ b).to(acc.dtype))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, targets, dtype, rows, compiled):  # type: ignore[override]
        cd = dtype or h.dtype
        with torch.autocast(h.device.type, enabled=False):
            vocab = w.shape[0]
            hc, wc = h.detach().to(cd), _padded(w.detach(), cd)
            fn = _loss_fn(compiled, h.device)
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_h = torch.empty_like(hc)
            grad_w = torch.zeros(wc.shape, dtype=torch.float32, device=w.device)
            rows = even_rows(hc.shape[0], rows)
            for s in range(0, hc.shape[0], rows):
                hs = hc[s : s + rows]
                chunk_loss, g = fn(hs @ wc.t(), targets[s : s + rows], vocab)
                loss += chunk_loss
                torch.mm(g, wc, out=grad_h[s : s + rows])
                grad_w = _accumulate(grad_w, g.t(), hs)
            grad_w = grad_w[:vocab]
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
