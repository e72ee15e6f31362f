"""Items per second: our scorer vs lm-evaluation-harness on the same model, tasks and batch size.

Both sides run the same prompts (our tasks exported as lm-eval YAMLs, lm-eval protocol by
default) with the model already loaded, so the timing covers building requests, scoring and
aggregating, not start-up. lm-eval runs in its own interpreter (as in eval_lmeval_match.py: the
current one if it has lm_eval, else a throwaway venv). The per-item log-likelihoods of the two
runs are compared too (in bf16 they differ by rounding; use --dtype float32 for an exact check).

    python bench/eval_throughput.py --model DIR --tasks logiqa_en,jecqa_kd,cosqa --batch-size 32 \
        [--limit N] [--protocol lm-eval|paper] [--device cuda] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_lmeval_match import SRC, build_model, lm_eval_python  # noqa: E402

from codestage.eval.harness import evaluate, export_lm_eval  # noqa: E402

DRIVER = r'''
import json, sys, time
import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

args = json.loads(sys.argv[1])
lm = HFLM(pretrained=args["model"], dtype=args["dtype"], batch_size=args["batch_size"], device=args["device"])
manager = TaskManager(include_path=args["include"])
if args["device"].startswith("cuda"):
    torch.cuda.synchronize()
start = time.perf_counter()
out = simple_evaluate(model=lm, tasks=args["tasks"], task_manager=manager, limit=args["limit"], num_fewshot=0,
                      log_samples=True, bootstrap_iters=0)
if args["device"].startswith("cuda"):
    torch.cuda.synchronize()
elapsed = time.perf_counter() - start
samples = {t: {int(s["doc_id"]): [float(r[0][0]) for r in s["resps"]] for s in rows} for t, rows in out["samples"].items()}
json.dump({"seconds": elapsed, "samples": samples}, open(args["out"], "w"))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="HF model dir (default: a seeded random model of --preset)")
    ap.add_argument("--preset", default="125m", help="model preset to build when --model is not given")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    ap.add_argument("--tasks", default="logiqa_en,logiqa_zh,jecqa_kd,scienceqa,cosqa")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--protocol", choices=("lm-eval", "paper"), default="lm-eval")
    ap.add_argument("--device", default="cuda" if _has_cuda() else "cpu")
    ap.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on CPU by default")
    ap.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "codestage" / "lmeval-venv")
    args = ap.parse_args()
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    work = Path(tempfile.mkdtemp(prefix="codestage-throughput-"))
    built = args.model is None
    if built:
        args.model = build_model(work / "built", args.preset)
    export_lm_eval(work / "export", tasks=tasks)
    suffix = "" if args.protocol == "lm-eval" else "_paper"
    names = [f"codestage_{t}{suffix}" for t in tasks]

    # ours: model loaded first, then the timed evaluation of the same tasks
    import torch

    from codestage.tokenizer import load_tokenizer
    from codestage.eval.scoring import Scorer
    from codestage.model import load_model

    model = load_model(args.model, device=args.device, dtype=getattr(torch, dtype))
    scorer = Scorer(model, load_tokenizer(args.model), batch_size=args.batch_size)
    _sync(args.device)
    start = time.perf_counter()
    res = evaluate(args.model, tasks, work / "ours", limit=args.limit, protocol=args.protocol, scorer=scorer)
    _sync(args.device)
    ours_s = time.perf_counter() - start
    n_items = sum(r.n for r in res.tasks.values())
    mine: dict[str, dict[int, list[float]]] = {}
    for line in open(work / "ours" / "items.jsonl", encoding="utf-8"):
        rec = json.loads(line)
        mine.setdefault(rec["task"], {})[rec["doc_id"]] = rec["choice_logprobs"]
    del model, scorer
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()

    python = lm_eval_python(args.venv)
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    spec = {"model": str(args.model), "dtype": dtype, "batch_size": args.batch_size, "device": args.device,
            "include": str(work / "export"), "tasks": names, "limit": args.limit, "out": str(work / "lmeval.json")}
    env = {**os.environ, "PYTHONPATH": f"{SRC}:{os.environ.get('PYTHONPATH', '')}"}
    with open(work / "lmeval.log", "w") as log:
        subprocess.run([python, str(driver), json.dumps(spec)], check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    theirs = json.loads((work / "lmeval.json").read_text())
    theirs["samples"] = {t: {int(k): v for k, v in rows.items()} for t, rows in theirs["samples"].items()}

    diffs, agree, total = [], 0, 0
    for t in tasks:
        a, b = mine.get(t, {}), theirs["samples"].get(f"codestage_{t}{suffix}", {})
        for i in set(a) & set(b):
            diffs += [abs(x - y) for x, y in zip(a[i], b[i])]
            agree += int(np.argmax(a[i]) == np.argmax(b[i]))
            total += 1
    print(f"model {args.model} on {args.device} ({dtype}), batch {args.batch_size}, protocol {args.protocol}, tasks {', '.join(tasks)}")
    print(f"items: {n_items}")
    print(f"codestage: {ours_s:8.2f} s  {n_items / ours_s:9.1f} items/s")
    print(f"lm-eval:   {theirs['seconds']:8.2f} s  {n_items / theirs['seconds']:9.1f} items/s")
    print(f"speed-up:  {theirs['seconds'] / ours_s:.2f}x")
    if diffs:
        print(f"per-choice log-likelihood |diff|: max {max(diffs):.2e}, median {float(np.median(diffs)):.2e}; "
              f"same argmax choice on {agree}/{total} items")
    if args.json:
        figures = {"model": str(args.model), "preset": args.preset if built else None, "device": args.device,
                   "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None, "dtype": dtype,
                   "batch_size": args.batch_size, "protocol": args.protocol, "tasks": tasks, "items": n_items,
                   "codestage_s": ours_s, "lmeval_s": theirs["seconds"], "speedup": theirs["seconds"] / ours_s,
                   "max_abs_diff": max(diffs) if diffs else None, "median_abs_diff": float(np.median(diffs)) if diffs else None,
                   "same_argmax": [agree, total]}
        args.json.write_text(json.dumps(figures, indent=1))


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
