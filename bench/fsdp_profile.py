"""Where does an FSDP2 step spend its time? Profiles a few steps of the real trainer under torchrun.

ddp_check.py measured FSDP2 scaling far below DDP's at 350m on 2 GPUs, with no recompiles and no
graph breaks. This trains the same job as ddp_check's FSDP run (bench/ddp_check.py arguments,
through bench/smoke.py) and profiles steps `--at` .. `--at + --span` on every rank, writing
per-rank tables (top CPU and CUDA ops) and a Chrome trace of rank 0.

    torchrun --standalone --nproc_per_node 2 bench/fsdp_profile.py --out OUT --preset 350m --seq-len 1024 --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_check import _smoke_args  # noqa: E402  (the same trainer arguments as ddp_check's runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="350m")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--parallel", default="fsdp")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--at", type=int, default=10, help="first profiled step")
    ap.add_argument("--span", type=int, default=2, help="steps profiled")
    a = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    import smoke

    from codestage.train import parallel

    world = parallel.setup("auto")
    gbt = a.seq_len * a.batch_size * world.size * 2
    a.out.mkdir(parents=True, exist_ok=True)
    tok_dir = a.out / "tokenizer"
    if world.main:
        smoke.get_tokenizer(tok_dir)
    parallel.barrier(world)
    same = argparse.Namespace(tokenizer=tok_dir, preset=a.preset, steps=a.steps, seq_len=a.seq_len, batch_size=a.batch_size,
                              lr=None, device="auto", dtype="auto", compile="auto", float8=False)
    cfg = smoke.config_from_args(smoke._args(_smoke_args(same, a.out / "run", gbt, a.parallel)))
    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])

    def on_step(step: int) -> None:
        if step == a.at - 1:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            prof.start()
        elif step == a.at - 1 + a.span:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            prof.stop()
            table = a.out / f"profile_rank{world.rank}.txt"
            with table.open("w") as f:
                f.write(f"=== {a.parallel}, steps {a.at}..{a.at + a.span - 1}, by self CPU time ===\n")
                f.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=35, max_name_column_width=80))
                f.write("\n=== by CUDA time ===\n")
                f.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=35, max_name_column_width=80))
            if world.main:
                prof.export_chrome_trace(str(a.out / "trace_rank0.json"))

    smoke.job(smoke.get_tokenizer(tok_dir), cfg, a.out / "run", preset=a.preset, resume=False, on_step=on_step)
    parallel.barrier(world)
    import torch.distributed as dist

    dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
