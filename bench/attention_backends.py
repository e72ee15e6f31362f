"""Which SDPA backend is fastest for the study's shapes? Causal attention, forward + backward.

The trainer calls F.scaled_dot_product_attention and lets PyTorch pick a backend. On Hopper, PyTorch
has flash (FlashAttention-2), cuDNN and memory-efficient kernels; this times each one alone, and
PyTorch's own pick ("default"), on the attention shapes of the presets (batch x heads x seq x
head_dim, bf16), and checks each against flash on the output and on q's gradient. On an H200 with
torch 2.11 the default already is cuDNN, 1.2-1.5x faster than flash (bench/RESULTS.md), so the
trainer sets no backend itself.

    python bench/attention_backends.py --json OUT/attention.json
"""

from __future__ import annotations

import argparse
import contextlib
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cuda_timing import median_ms

# preset: (micro-batch rows, heads, head_dim), as in train_throughput / the model presets
SHAPES = {"125m": (16, 12, 64), "350m": (16, 16, 64), "760m": (8, 16, 96), "1.3b": (8, 16, 128)}
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "default": None, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def time_backend(backend: SDPBackend | None, q, k, v, grad, iters: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Median milliseconds of one forward + backward, the forward output and q's gradient (one pass).

    backend None: whatever PyTorch picks by default."""
    def step() -> torch.Tensor:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y.backward(grad)
        return y

    with sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext():
        q.grad = None
        out = step()
        q_grad = q.grad.clone()
        for _ in range(2):
            step()
        ms = median_ms(step, iters)
    return ms, out.detach(), q_grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for preset, (batch, heads, head_dim) in SHAPES.items():
        shape = (batch, heads, args.seq_len, head_dim)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        grad = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        reference = reference_grad = None
        # causal fwd+bwd FLOPs: 4*b*h*t^2*d forward (two matmuls, half masked) x 3.5 (bwd is 2.5x fwd)
        flops = 3.5 * 2 * batch * heads * args.seq_len ** 2 * head_dim
        for name, backend in BACKENDS.items():
            try:
                ms, out, q_grad = time_backend(backend, q, k, v, grad, args.iters)
            except RuntimeError as err:
                print(f"{preset} {name}: not available ({str(err).splitlines()[0][:100]})")
                continue
            if reference is None:
                reference, reference_grad = out, q_grad
            diff = (out.float() - reference.float()).abs().max().item()
            grad_diff = ((q_grad.float() - reference_grad.float()).norm() / reference_grad.float().norm()).item()
            row = dict(preset=preset, backend=name, ms=round(ms, 3), tflops=round(flops / ms / 1e9, 1),
                       max_abs_diff_vs_flash=diff, q_grad_rel_diff_vs_flash=grad_diff)
            rows.append(row)
            print(f"{preset:>5} {name:>9}: {ms:7.3f} ms  {row['tflops']:6.1f} TFLOP/s  out max|diff| {diff:.2e}  "
                  f"dq rel diff {grad_diff:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, seq_len=args.seq_len, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
