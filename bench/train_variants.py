"""Where does our training step lose time? The same step under several compile / loss choices.

train_throughput.py gives one figure for our loop and one for the HF peer. This script takes
codestage's FastLlama and runs a bare training step (bf16 autocast over fp32 weights, fused AdamW,
clipping, the same shapes) under variants, so the gap can be attributed:

  blocks+chunked   per-block torch.compile, chunked linear+CE compiled per chunk (the loop's default)
  blocks+eagerce   per-block compile, chunked CE not compiled
  whole+chunked    torch.compile of the whole decoder (embedding .. final norm), chunked CE compiled
  whole+plain      torch.compile of decoder and a plain logits + cross_entropy loss in one graph
  ...+fp8          any of them with the blocks' linear layers in float8 (torchao, tensorwise scaling)
  ...+swiglu       the MLPs' silu(gate) * up as swiglu.py's Triton kernels (as the trainer runs on CUDA)
  ...+cg           the compiled decoder / blocks as CUDA graphs (mode="reduce-overhead"); gradients
                   are kept allocated (zero_grad(set_to_none=False)) so a replay never overwrites one
  (see --variants), then torch.profiler tables (top CUDA kernels) for the first variant.

    python bench/train_variants.py --presets 125m,350m --json OUT/variants.json --profile OUT/prof.txt
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from codestage.model import model_config  # noqa: E402
from codestage.train.estimate import flops_per_token, planned_parameters  # noqa: E402
from codestage.train.float8 import convert_blocks  # noqa: E402
from codestage.train.fused_ce import linear_cross_entropy  # noqa: E402
from codestage.train.llama import FastLlama  # noqa: E402
from train_throughput import DEFAULT_MICRO, gpu_batches, time_steps  # noqa: E402



def build(conf, variant: str):
    torch.manual_seed(0)
    m = FastLlama(conf).cuda()
    m.compute_dtype = torch.bfloat16
    blocks, loss_kind, *extra = variant.split("+")
    if "fp8" in extra:
        convert_blocks(m.blocks)  # what train.float8 does
    if "swiglu" in extra and not m.use_triton_kernels():
        raise SystemExit("+swiglu needs Triton")
    mode = "reduce-overhead" if "cg" in extra else None
    if blocks == "blocks":
        fwd = torch.compile(type(m.blocks[0]).forward, mode=mode)
        import types

        for b in m.blocks:
            b.forward = types.MethodType(fwd, b)
        hidden = m.hidden
    else:
        hidden = torch.compile(m.hidden, mode=mode)

    if loss_kind == "plain":
        def loss_of(h, labels):
            logits = (h @ m.output_weight().to(h.dtype).t()).float()
            return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum")

        step_loss = torch.compile(lambda ids: loss_of(m.hidden(ids), ids))
    else:
        compiled_ce = loss_kind == "chunked"

        def step_loss(ids):
            h = hidden(ids)
            targets = F.pad(ids[:, 1:], (0, 1), value=-100)
            return linear_cross_entropy(h.flatten(0, 1), m.output_weight(), targets.flatten(), torch.bfloat16, compiled=compiled_ce)

    return m, step_loss


KINDS = [  # first match wins; kernel names as cuBLAS, cuDNN, inductor and torchao name them
    ("attention", re.compile(r"flash|fmha|sdpa|attention", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cutlass|xmma|cublas|scaled_mm", re.I)),
    ("optimizer", re.compile(r"adam|multi_tensor|foreach", re.I)),
    ("loss softmax", re.compile(r"softmax|logsumexp|cross_entropy|nll|loss_and_grad", re.I)),
    ("fused elementwise (triton)", re.compile(r"^triton_|silu_mul", re.I)),
    ("copy / fill", re.compile(r"memcpy|memset|copy|fill", re.I)),
]


def gpu_time_by_kind(averages) -> str:
    """GPU kernel time of one profiled step, summed by kind: where the step's time goes."""
    totals: dict[str, float] = {}
    for e in averages:
        us = getattr(e, "self_device_time_total", 0) or 0
        if us <= 0 or e.cpu_time_total > 0:
            continue  # an op or launch on the CPU side: its kernels are rows of their own, with no CPU time
        kind = next((k for k, rx in KINDS if rx.search(e.key)), "other")
        totals[kind] = totals.get(kind, 0.0) + us
    whole = sum(totals.values()) or 1.0
    lines = [f"GPU kernel time {whole / 1e3:.1f} ms"]
    lines += [f"  {k:<28} {v / 1e3:8.1f} ms  {100 * v / whole:5.1f}%" for k, v in sorted(totals.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def append_profile(path: Path, title: str, averages) -> None:
    """Append one profiled step's tables to `path`: GPU time by kind, top CUDA kernels, top CPU ops."""
    with path.open("a") as f:
        f.write(f"\n=== {title} ===\n")
        f.write(gpu_time_by_kind(averages) + "\n")
        f.write(averages.table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=90))
        f.write("\nBy CPU time (host-side waits show here: synchronize, memcpy, host allocations):\n")
        f.write(averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=90))


def run(conf, variant: str, micro: int, accum: int, seq: int, warmup: int, steps: int, prof_path: Path | None) -> dict:
    m, step_loss = build(conf, variant)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=True)
    batches = gpu_batches(conf.vocab_size, micro, seq, accum)
    n = sum(b.numel() for b in batches)
    graphs = "+cg" in variant
    if graphs:
        for p in m.parameters():
            p.grad = torch.zeros_like(p)

    def step() -> None:
        for ids in batches:
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = step_loss(ids)
            (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=not graphs)

    out = time_steps(step, warmup, steps, n)
    if prof_path is not None:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            step()
            torch.cuda.synchronize()
        append_profile(prof_path, f"{conf.hidden_size}x{conf.num_hidden_layers} {variant}", p.key_averages())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="125m,350m")
    ap.add_argument("--variants", default="blocks+chunked,blocks+eagerce,whole+chunked,whole+plain")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--profile", type=Path, default=None, help="write profiler tables (GPU time by kernel kind, top kernels) of each preset's first variant here")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    results: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "command": " ".join(sys.argv), "presets": {}}
    for preset in a.presets.split(","):
        conf = model_config(preset, a.vocab, eos_token_id=0, pad_token_id=0, max_position_embeddings=max(a.seq, 1024))
        fpt = flops_per_token(conf, planned_parameters(conf), a.seq)
        row = results["presets"].setdefault(preset, {})
        for i, variant in enumerate(a.variants.split(",")):
            torch.cuda.reset_peak_memory_stats()
            try:
                r = run(conf, variant, DEFAULT_MICRO.get(preset, 8), a.accum, a.seq, a.warmup, a.steps, a.profile if i == 0 else None)
                r["tflops"] = r["tokens_per_s"] * fpt / 1e12
            except Exception as exc:
                r = {"error": f"{type(exc).__name__}: {exc}"[:1500]}
            row[variant] = r
            print(preset, variant, json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
            torch._dynamo.reset()
            torch.cuda.empty_cache()
            a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
