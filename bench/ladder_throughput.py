"""Ladder rungs on one GPU: our trainer's tokens/s against HF LlamaForCausalLM + torch.compile at each
rung's shape and micro-batch, and the GPU's busy fraction over a ladder run (issue 19, "Measures").

    python bench/ladder_throughput.py speed configs/ladder-gpu.yaml --json OUT/throughput.json [--sizes 427K,6.4M]
    python bench/ladder_throughput.py busy OUT/gpu_util.csv --timing OUT/study/ladder/timing.json --json OUT/busy.json

`speed` takes the rung shapes from the config's ladder plan (one per size; the sequence length,
vocabulary and compile scope of the config), random tokens, `--warmup` optimizer steps (compile
included) and `--steps` timed ones, on the GPU CUDA_VISIBLE_DEVICES gives it. It runs alone on a
GPU, so the figure is what one rung gets on a GPU of its own; the ladder runs several side by side.

`busy` reads `nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits
-lms 500` output and reports, per GPU and per phase of the ladder run (timing.json: prep, jobs, tail), the
mean utilisation and the fraction of samples above 50%. (utilization.gpu is the share of time a kernel
was running, not of the GPU's compute in use: a launch-bound run can read high and still leave SMs idle.)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def speed(a: argparse.Namespace) -> dict:
    import torch

    from codestage.config import load_config
    from codestage.model import model_config
    from codestage.study.ladder.plan import LADDER_PRESET, plan_ladder
    from train_throughput import run_ours, run_peer

    cfg = load_config(a.config)
    plan = plan_ladder(cfg)
    rungs = {}
    for r in plan.rungs:  # one per size: the largest budget's (same shape and batch as the others)
        rungs[r.size] = r
    wanted = [s.strip() for s in a.sizes.split(",")] if a.sizes else list(rungs)
    unknown = [s for s in wanted if s not in rungs]
    if unknown:
        raise SystemExit(f"--sizes: {unknown} not in the plan's sizes {list(rungs)}")
    scope = cfg.pretrain.train.compile_scope
    out = {"config": str(a.config), "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "compile_scope": scope, "warmup": a.warmup, "steps": a.steps, "rungs": {}}
    for size in wanted:
        r = rungs[size]
        conf = model_config(LADDER_PRESET, plan.vocab_size, eos_token_id=0, pad_token_id=1, **r.model_overrides())
        accum = r.rows // r.micro
        row = {"layers": r.shape.layers, "width": r.shape.width, "params": r.params, "total_params": r.total_params,
               "micro": r.micro, "accum": accum, "seq_len": r.seq_len}
        for name, fn in (("ours", lambda: run_ours(conf, r.micro, accum, r.seq_len, a.warmup, a.steps, Path(tmp), False,
                                                   compile_scope=scope)),
                         ("hf_compile", lambda: run_peer(conf, r.micro, accum, r.seq_len, a.warmup, a.steps, "model"))):
            with tempfile.TemporaryDirectory() as tmp:
                t, start = time.perf_counter(), time.time()
                try:
                    row[name] = fn()
                except Exception as exc:  # a failed side is recorded, the other still measured
                    row[name] = {"error": f"{type(exc).__name__}: {exc}"}
                # unix times: whether the measurement overlapped the ladder's jobs (timing.json) shows here
                row[name].update(wall_s=round(time.perf_counter() - t, 1), start=start, end=time.time())
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        if "tokens_per_s" in row["ours"] and "tokens_per_s" in row["hf_compile"]:
            row["ours_over_hf"] = row["ours"]["tokens_per_s"] / row["hf_compile"]["tokens_per_s"]
        out["rungs"][size] = row
        print(f"{size}: ours {row['ours'].get('tokens_per_s', float('nan')):,.0f} tok/s, HF+compile "
              f"{row['hf_compile'].get('tokens_per_s', float('nan')):,.0f} tok/s", flush=True)
    return out


def _stamp(text: str) -> float:
    return datetime.strptime(text.strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()


def busy(a: argparse.Namespace) -> dict:
    samples = []  # (unix time, gpu, utilisation %, memory MiB)
    with open(a.csv, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 4:
                continue
            try:
                samples.append((_stamp(row[0]), row[1].strip(), float(row[2]), float(row[3])))
            except ValueError:
                continue  # a header or a cut line
    phases = {"all": (float("-inf"), float("inf"))}
    if a.timing:
        timing = json.loads(Path(a.timing).read_text())
        phases.update({name: (p["start"], p["end"]) for name, p in timing.items() if isinstance(p, dict) and "start" in p})
    out: dict = {"csv": str(a.csv), "samples": len(samples), "phases": {}}
    for name, (lo, hi) in phases.items():
        per_gpu: dict[str, list[float]] = {}
        for t, gpu, util, _ in samples:
            if lo <= t <= hi:
                per_gpu.setdefault(gpu, []).append(util)
        out["phases"][name] = {gpu: {"mean_util": sum(u) / len(u), "busy_fraction": sum(x > 50 for x in u) / len(u),
                                     "samples": len(u)} for gpu, u in sorted(per_gpu.items())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed", help="tokens/s per rung size: ours vs HF + torch.compile")
    sp.add_argument("config", type=Path)
    sp.add_argument("--sizes", default="", help="comma list of the plan's size labels (default: all)")
    sp.add_argument("--warmup", type=int, default=5)
    sp.add_argument("--steps", type=int, default=20)
    sp.add_argument("--json", type=Path, required=True)
    bp = sub.add_parser("busy", help="GPU busy fraction from nvidia-smi samples")
    bp.add_argument("csv", type=Path)
    bp.add_argument("--timing", type=Path, default=None, help="the ladder run's timing.json (phases)")
    bp.add_argument("--json", type=Path, required=True)
    a = ap.parse_args()
    result = speed(a) if a.cmd == "speed" else busy(a)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result if a.cmd == "busy" else {k: v for k, v in result.items() if k != "rungs"}, indent=1))


if __name__ == "__main__":
    main()
