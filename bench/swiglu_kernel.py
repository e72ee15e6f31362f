"""SwiGLU's silu(gate) * up, forward + backward: compiled PyTorch against the Triton kernels (GPU).

For each preset's MLP shape (micro-batch x 1024 rows, [gate | up] of 2 x intermediate columns,
bf16) it checks that the Triton op (swiglu.py), eager and inside torch.compile, gives the output
and input gradient of the compiled PyTorch form, then times forward + backward of each (the eager op also with other --configs) (median of
--reps runs, CUDA events) and reports the bandwidth against the least traffic the maths needs
(forward: read 2H, write H; backward: read 3H, write 2H, per row).

    python bench/swiglu_kernel.py --json OUT/swiglu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from codestage.model import model_config  # noqa: E402
from codestage.train.llama import silu_mul as torch_silu_mul  # noqa: E402
from codestage.train import swiglu  # noqa: E402
from codestage.train.swiglu import silu_mul  # noqa: E402
from cuda_timing import median_ms  # noqa: E402
from train_throughput import DEFAULT_MICRO  # noqa: E402



def forward_backward(fn, gate_up: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gate_up.grad = None
    out = fn(gate_up)
    out.backward(grad)
    return out, gate_up.grad


def timed_us(fn, gate_up: torch.Tensor, grad: torch.Tensor, reps: int) -> float:
    """Median microseconds after 20 untimed runs (without them, two timings of one configuration
    in one run differed by 1.4x on an H200)."""
    for _ in range(20):
        forward_backward(fn, gate_up, grad)
    return 1e3 * median_ms(lambda: forward_backward(fn, gate_up, grad), reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="125m,350m,760m,1.3b")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--configs", default="1024:4,2048:8,512:4", help="block:num_warps pairs to time the eager op with")
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args()
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": {}}
    compiled_ref = torch.compile(torch_silu_mul)
    compiled_ours = torch.compile(lambda t: silu_mul(t))
    for preset in a.presets.split(","):
        h = model_config(preset, 50257, eos_token_id=0, pad_token_id=1).intermediate_size
        rows = DEFAULT_MICRO[preset] * a.seq
        g = torch.Generator(device="cuda").manual_seed(0)
        gate_up = (torch.randn(rows, 2 * h, device="cuda", generator=g) * 3).bfloat16().requires_grad_()
        grad = torch.randn(rows, h, device="cuda", generator=g).bfloat16()
        ref_out, ref_grad = (t.clone() for t in forward_backward(compiled_ref, gate_up, grad))
        row: dict = {"rows": rows, "h": h}
        for name, fn in (("triton", silu_mul), ("triton in torch.compile", compiled_ours)):
            o, gr = forward_backward(fn, gate_up, grad)
            row[f"{name} max abs diff (out, grad)"] = [(o.float() - ref_out.float()).abs().max().item(),
                                                         (gr.float() - ref_grad.float()).abs().max().item()]
        least_bytes = rows * h * 2 * (3 + 5)  # bf16: forward 2H read + H written, backward 3H read + 2H written
        def record(name: str, fn) -> None:
            us = timed_us(fn, gate_up, grad, a.reps)
            row[name] = {"us_fwd_bwd": round(us, 1), "GB_per_s_vs_least": round(least_bytes / us / 1e3, 1)}

        for name, fn in (("compiled pytorch", compiled_ref), ("triton", silu_mul), ("triton in torch.compile", compiled_ours)):
            record(name, fn)
        default = (swiglu.BLOCK, swiglu.NUM_WARPS)
        for cfg in a.configs.split(","):
            swiglu.BLOCK, swiglu.NUM_WARPS = (int(v) for v in cfg.split(":"))
            record(f"triton {cfg}", silu_mul)
        swiglu.BLOCK, swiglu.NUM_WARPS = default
        out["results"][preset] = row
        print(preset, json.dumps(row), flush=True)
    a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
