"""SwiGLU's `silu(gate) * up` and its backward as Triton kernels that touch each element once.

Why: with the MLP's gate and up projections fused into one [.., 2H] matmul output, inductor writes
the backward as one kernel whose output is the *concatenated* gate/up gradient, indexed per output
element; it ran at 2.4 TB/s of the least traffic on an H200, where this op reaches 4.1.
Here one program reads a row slice of gate, up and the gradient once and writes both halves of
the gradient: three reads and two writes of [rows x H], the least the maths needs (82 us against
140 us per block and micro-batch at 125m on an H200; +2% tokens/s at 125m and 350m).

`silu_mul` is a `torch.library.triton_op`, so `torch.compile` calls the kernels directly inside
its graph and autograd sees one op (forward saves the matmul output it already had; no extra
memory). Same maths as `F.silu(g) * u` in fp32 with one rounding, as inductor computes it.

Runs where Triton runs: on CUDA, and on CPU tensors under TRITON_INTERPRET=1 (how the tests check it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

BLOCK = 1024  # columns per program (bench/swiglu_kernel.py --configs times others)
NUM_WARPS = 4


@triton.jit
def _load_gate_up(gu_ptr, h, BLOCK: tl.constexpr):
    """This program's row, columns, mask and fp32 gate / up slices."""
    # One flat grid: a row's column blocks run on neighbouring programs, so programs that run
    # together read neighbouring memory.
    pid = tl.program_id(0).to(tl.int64)
    per_row = tl.cdiv(h, BLOCK)
    row = pid // per_row
    cols = (pid % per_row) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < h
    src = gu_ptr + row * 2 * h
    g = tl.load(src + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(src + h + cols, mask=mask, other=0.0).to(tl.float32)
    return row, cols, mask, g, u


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, h, BLOCK: tl.constexpr):
    row, cols, mask, g, u = _load_gate_up(gu_ptr, h, BLOCK)
    y = g * tl.sigmoid(g) * u
    tl.store(out_ptr + row * h + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _silu_mul_backward_kernel(dy_ptr, gu_ptr, dgu_ptr, h, BLOCK: tl.constexpr):
    row, cols, mask, g, u = _load_gate_up(gu_ptr, h, BLOCK)
    dy = tl.load(dy_ptr + row * h + cols, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    dg = dy * u * sig * (1.0 + g * (1.0 - sig))
    du = dy * g * sig
    dst = dgu_ptr + row * 2 * h
    tl.store(dst + cols, dg.to(dgu_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + h + cols, du.to(dgu_ptr.dtype.element_ty), mask=mask)


def _rows_and_half(gate_up: torch.Tensor) -> tuple[int, int]:
    if gate_up.shape[-1] % 2:
        raise ValueError(f"silu_mul: the last dimension ({gate_up.shape[-1]}) must hold gate and up halves of equal size")
    h = gate_up.shape[-1] // 2
    return gate_up.numel() // max(2 * h, 1), h


@triton_op("codestage::silu_mul", mutates_args=())
def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up = [gate | up] along the last dimension."""
    gate_up = gate_up.contiguous()
    rows, h = _rows_and_half(gate_up)
    out = gate_up.new_empty(*gate_up.shape[:-1], h)
    if rows and h:
        wrap_triton(_silu_mul_kernel)[(rows * triton.cdiv(h, BLOCK),)](gate_up, out, h, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


@triton_op("codestage::silu_mul_backward", mutates_args=())
def silu_mul_backward(grad: torch.Tensor, gate_up: torch.Tensor) -> torch.Tensor:
    """d(loss)/d(gate_up) from d(loss)/d(silu(gate) * up), both halves written in one pass."""
    grad, gate_up = grad.contiguous(), gate_up.contiguous()
    rows, h = _rows_and_half(gate_up)
    out = torch.empty_like(gate_up)
    if rows and h:
        wrap_triton(_silu_mul_backward_kernel)[(rows * triton.cdiv(h, BLOCK),)](grad, gate_up, out, h, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


def _backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    (gate_up,) = ctx.saved_tensors
    return silu_mul_backward(grad, gate_up)


silu_mul.register_autograd(_backward, setup_context=_setup_context)
