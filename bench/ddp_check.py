"""Same global batch on 1 process and on N: loss curves must match, throughput should scale.

Run under torchrun (or plainly: it then starts torchrun itself with --procs processes):

    torchrun --nproc_per_node 2 bench/ddp_check.py --out results/ddp            # GPUs, NCCL
    python bench/ddp_check.py --procs 2 --device cpu --dtype float32 --out /tmp/ddp   # CPU, gloo

Rank 0 first trains the reference with world size 1 (a child process on its own device), then
all ranks train the same preset, seed and global batch (`--global-batch-tokens`) with each
`--parallel` mode (ddp, fsdp). Rank 0 compares the per-step losses and tokens/s, prints a
verdict and writes OUT/ddp_check.json. Tolerance: 1e-5 absolute in float32; in bf16 the summation
order differs between layouts, so 2e-2 relative. `--noise-floor` also trains 1 process with half
the micro-batch (the same maths, another summation order) and prints how far that run drifts: the
floor a difference between layouts should be read against.

`--interrupt-at K --resume-procs M` resumes each stopped N-process run on M processes instead (a
checkpoint written by 2 GPUs continued on 1, or by 1 on 2; issue 21): rank 0 starts bench/smoke.py
with M processes (torchrun for M > 1) on the run folder while the other ranks wait. The resumed
run's losses must match the uninterrupted 1-process reference as above, and its per-step token
counts per source and its mixture.json must equal the reference's (the sampler continued where
the checkpoint stood: no row drawn twice or skipped). Its tokens/s mixes N and M processes and
is not compared.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SMOKE = Path(__file__).resolve().parent / "smoke.py"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(SMOKE.parent))


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for runs and ddp_check.json")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8, help="micro-batch rows per process")
    ap.add_argument("--global-batch-tokens", type=int, default=None, help="default: seq x batch x nproc x 2")
    ap.add_argument("--parallel", default="ddp,fsdp", help="modes to check, comma-separated")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--compile", default="auto")
    ap.add_argument("--procs", type=int, default=2, help="processes, when this script starts torchrun itself")
    ap.add_argument("--interrupt-at", type=int, default=0,
                    help="stop each N-process run after this step (as SIGTERM would) and resume it: checks resume too")
    ap.add_argument("--resume-procs", type=int, default=0,
                    help="with --interrupt-at: resume each stopped run on this many processes instead of the same N")
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder (default: trained into OUT/tokenizer)")
    ap.add_argument("--tol", type=float, default=None, help="override the tolerance")
    ap.add_argument("--float8", action="store_true", help="every run with float8 matmuls in the blocks (torchao)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the smoke trainer's)")
    ap.add_argument("--noise-floor", action="store_true",
                    help="also train 1 process with half the micro-batch (same global batch, same data): how far two "
                         "runs that are the same maths apart drift in bf16 alone, printed beside each mode's difference")
    return ap.parse_args()


def _smoke_args(a: argparse.Namespace, out: Path, gbt: int, parallel: str, batch_size: int | None = None,
                resume: bool = False) -> list[str]:
    return ["--out", str(out), "--tokenizer", str(a.tokenizer), "--preset", a.preset, "--steps", str(a.steps),
            "--seq-len", str(a.seq_len), "--batch-size", str(batch_size or a.batch_size), "--global-batch-tokens", str(gbt),
            *(["--lr", str(a.lr)] if a.lr is not None else []),
            "--parallel", parallel, "--device", a.device, "--dtype", a.dtype, "--compile", a.compile, "--log-every", "1",
            *([] if resume else ["--no-resume"]), *(["--float8"] if a.float8 else [])]


def _summary(run: Path) -> dict:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steady = [r["tokens_per_s"] for r in lines[len(lines) // 3:]] or [lines[-1]["tokens_per_s"]]
    return {"loss": [r["loss"] for r in lines], "tokens_per_s": sorted(steady)[len(steady) // 2],
            "steps": [r["step"] for r in lines]}


def _same_data(ref: Path, run: Path) -> bool:
    """The same rows in the same steps: equal per-step token counts per source and equal mixture.json."""
    def seen(folder: Path) -> list:
        lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
        return [(r["step"], r["tokens"], r["tokens_per_source"]) for r in lines]

    mixture = [json.loads((f / "mixture.json").read_text()) for f in (ref, run)]
    return seen(ref) == seen(run) and mixture[0] == mixture[1]


_TORCHRUN_ENV = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
                 "ROLE_RANK", "TORCHELASTIC_RUN_ID", "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE"}


def _child_env(world, procs: int) -> dict[str, str]:
    """The environment of a job this script starts: out of its own torchrun job; one process sees one GPU."""
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_ENV and not k.startswith("TORCHELASTIC_")}
    if world.device.type == "cuda" and procs == 1:
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _resume_on(procs: int, smoke_args: list[str], world) -> None:
    """Resume a stopped run with `procs` processes (rank 0 only; this job's memory is handed back first)."""
    launch = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     f"--nproc_per_node={procs}"]
    subprocess.run([*launch, str(SMOKE), *smoke_args], env=_child_env(world, procs), check=True)


def _diffs(ref: list[float], other: list[float], fp32: bool) -> list[float]:
    """Per-step loss differences: absolute in float32, relative in bf16."""
    return [abs(x - y) / (1.0 if fp32 else max(abs(x), 1e-9)) for x, y in zip(ref, other)]


def main() -> None:
    a = _args()
    if "LOCAL_RANK" not in os.environ:  # not under torchrun: start it
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={a.procs}", __file__, *sys.argv[1:]]
        sys.exit(subprocess.call(cmd))

    from codestage.config import TrainConfig  # noqa: F401  (import check before the job starts)
    import smoke

    import torch

    from codestage.train import parallel

    world = parallel.setup(a.device)
    n = world.size
    gbt = a.global_batch_tokens or a.seq_len * a.batch_size * n * 2
    a.out.mkdir(parents=True, exist_ok=True)
    a.tokenizer = a.tokenizer or a.out / "tokenizer"
    if world.main:
        smoke.get_tokenizer(a.tokenizer)
        ref = a.out / "world1"
        env = _child_env(world, 1)
        t = time.perf_counter()
        subprocess.run([sys.executable, str(SMOKE), *_smoke_args(a, ref, gbt, "none")], env=env, check=True)
        print(f"[ddp_check] world 1 done in {time.perf_counter() - t:.0f}s", flush=True)
        if a.noise_floor:
            smaller = max(1, a.batch_size // 2)
            subprocess.run([sys.executable, str(SMOKE),
                            *_smoke_args(a, a.out / "world1-split", gbt, "none", smaller)], env=env, check=True)
    parallel.barrier(world)
    m = a.resume_procs or n
    if m != n and not a.interrupt_at:
        raise SystemExit("ddp_check: --resume-procs needs --interrupt-at K (the step to stop at and resume from)")
    label = f"world {n}" if m == n else f"world {n} -> {m} after step {a.interrupt_at}"
    layout = f"{n} process{'es' * (n > 1)}" + (f" resumed on {m} after step {a.interrupt_at}" if m != n else "")
    runs, folders = {}, {}
    for mode in [x.strip() for x in a.parallel.split(",") if x.strip()]:
        t = time.perf_counter()
        run = folders[mode] = a.out / (f"world{n}-{mode}" if m == n else f"world{n}to{m}-{mode}")
        cfg = smoke.config_from_args(smoke._args(_smoke_args(a, run, gbt, mode)))
        tok = smoke.get_tokenizer(a.tokenizer)
        if a.interrupt_at:
            def stop(step: int) -> None:
                if step == a.interrupt_at:
                    raise KeyboardInterrupt
            try:
                smoke.job(tok, cfg, run, preset=a.preset, resume=False, on_step=stop)
            except KeyboardInterrupt:
                pass
        if m == n:
            smoke.job(tok, cfg, run, preset=a.preset, resume=bool(a.interrupt_at))
        else:
            gc.collect()
            if world.device.type == "cuda":
                torch.cuda.empty_cache()  # the resumed run may use this GPU
                if world.main:
                    print(f"[ddp_check] this process keeps {torch.cuda.memory_reserved() / 2**30:.2f} GiB reserved "
                          f"on {world.device} while the resumed run trains", flush=True)
            parallel.barrier(world)
            if world.main:
                _resume_on(m, _smoke_args(a, run, gbt, mode, resume=True), world)
            parallel.barrier(world)
        runs[mode] = time.perf_counter() - t
        if world.main:
            print(f"[ddp_check] {label} {mode} done in {runs[mode]:.0f}s", flush=True)
    if world.main:
        ref_s = _summary(a.out / "world1")
        fp32 = a.dtype == "float32" or (a.dtype == "auto" and world.device.type == "cpu")
        tol = a.tol if a.tol is not None else (1e-5 if fp32 else 2e-2)
        result = {"preset": a.preset, "steps": a.steps, "seq_len": a.seq_len, "global_batch_tokens": gbt, "world": n,
                  "interrupt_at": a.interrupt_at, "resume_world": m if a.interrupt_at else None,
                  "device": str(world.device), "dtype": "float32" if fp32 else "bfloat16", "tolerance": tol,
                  "tolerance_kind": "absolute" if fp32 else "relative", "float8": a.float8, "world1": ref_s, "modes": {}}
        ok_all = True
        if a.noise_floor:
            floor = _summary(a.out / "world1-split")
            result["noise_floor"] = max(_diffs(ref_s["loss"], floor["loss"], fp32))
            print(f"[ddp_check] noise floor (1 process, micro-batch halved): max loss diff {result['noise_floor']:.2e}", flush=True)
        for mode in runs:
            s = _summary(folders[mode])
            diffs = _diffs(ref_s["loss"], s["loss"], fp32)
            same_data = _same_data(a.out / "world1", folders[mode])
            ok = s["steps"] == ref_s["steps"] and max(diffs) <= tol and same_data
            ok_all &= ok
            s.update(max_diff=max(diffs), same_data=same_data, match=ok,
                     scaling=s["tokens_per_s"] / ref_s["tokens_per_s"] if m == n else None)
            result["modes"][mode] = s
            speed = (f"tokens/s world1 {ref_s['tokens_per_s']:,.0f} -> world{n} {s['tokens_per_s']:,.0f} "
                     f"({s['tokens_per_s'] / ref_s['tokens_per_s']:.2f}x)" if m == n else
                     f"resumed on {m} process{'es' * (m > 1)} after step {a.interrupt_at} (tokens/s not compared)")
            print(f"[ddp_check] {mode}: max loss diff {max(diffs):.2e}, same rows {'yes' if same_data else 'NO'} "
                  f"({'OK' if ok else 'MISMATCH'}, tol {tol:g}); {speed}", flush=True)
        result["verdict"] = "PASS" if ok_all else "FAIL"
        (a.out / "ddp_check.json").write_text(json.dumps(result, indent=1))
        print(f"[ddp_check] verdict: {result['verdict']} (loss curves of {layout} vs 1, same global batch); "
              f"{a.out / 'ddp_check.json'}", flush=True)
    parallel.barrier(world)
    sys.stdout.flush()
    import torch.distributed as dist

    if dist.is_initialized():  # --procs 1 has no process group
        dist.destroy_process_group()
    os._exit(0 if not world.main or result["verdict"] == "PASS" else 1)


if __name__ == "__main__":
    main()
