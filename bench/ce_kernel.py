"""The loss chunk's softmax/gradient step: compiled PyTorch against the Triton kernel (GPU).

One chunk as the trainer forms it (4,096 rows x the padded 50,304-column vocabulary, bf16 logits):
checks that both give the same loss and gradient, then times each (median of --reps runs, CUDA
events) and reports the effective memory bandwidth against one read and one write of the logits.

    python bench/ce_kernel.py --json OUT/ce_kernel.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from codestage.train.ce_kernel import loss_and_grad_  # noqa: E402
from cuda_timing import median_ms  # noqa: E402
from codestage.train.fused_ce import _loss_and_grad  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--configs", default="4096:8,8192:8,4096:4,2048:4,4096:16", help="Triton block:num_warps pairs to time")
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args()
    cols = a.vocab + (-a.vocab % 128)
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(a.rows, cols, device="cuda", generator=g) * 4).bfloat16()
    targets = torch.randint(0, a.vocab, (a.rows,), device="cuda", generator=g)
    targets[::7] = -100
    compiled = torch.compile(_loss_and_grad)
    ref_loss, ref_grad = compiled(logits, targets, a.vocab)
    work = logits.clone()
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": a.rows, "cols": cols, "results": {}}
    ideal_bytes = 2 * logits.numel() * logits.element_size()  # one read, one write

    def record(name: str, us: float) -> None:
        out["results"][name] = {"us": round(us, 1), "GB_per_s_vs_one_read_one_write": round(ideal_bytes / us / 1e3, 1)}
        print(name, out["results"][name], flush=True)

    record("compiled", 1e3 * median_ms(lambda: compiled(logits, targets, a.vocab), a.reps))
    for cfg in a.configs.split(","):
        block, warps = (int(v) for v in cfg.split(":"))
        work.copy_(logits)
        loss, grad = loss_and_grad_(work, targets, a.vocab, block=block, num_warps=warps)
        err = {"loss_rel": abs(loss.item() - ref_loss.item()) / abs(ref_loss.item()),
               "grad_max_abs": (grad.float() - ref_grad.float()).abs().max().item()}
        print(cfg, err, flush=True)
        out["results"].setdefault("errors", {})[cfg] = err
        # the kernel overwrites its input; its time does not depend on the values, so the timed runs
        # simply work on the previous run's gradient
        record(f"triton {cfg}", 1e3 * median_ms(lambda: loss_and_grad_(work, targets, a.vocab, block=block, num_warps=warps), a.reps))
    a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
