"""Where does `evaluate()` spend its time? A phase breakdown of our multiple-choice scoring.

Builds (or takes --model) the model eval_throughput.py uses (a seeded random preset with an 8K
BPE vocabulary), loads it once, and for each protocol runs `evaluate()` on the tasks:

1. a timed run exactly as eval_throughput.py times it (nothing added: the number to compare);
2. a breakdown run with every phase bracketed by torch.cuda.synchronize() (so phases do not
   overlap and the total is a little higher): tokenize, rows (fit, pack, sort, batch), host_batch
   (numpy inputs), h2d (one pinned copy a batch), mask, forward, head (gather + output layer +
   logsumexp/argmax), d2h (one transfer per call), aggregate (sums per request), and outside the
   scorer task_load, requests (prompt building), records (decisions per item), bootstrap,
   provenance (data hashes), write; `other` is what no phase covers;
3. token counts: tokens forwarded (and padded), scored positions, and what a non-packed run (one
   row per request, batches of --batch-size requests sorted by length, as lm-eval runs) forwards;
4. torch.profiler on the first --profile-items items per task: key_averages tables, top 25 by CUDA
   and by CPU time.

Everything printed is also written to OUT/profile.txt, the figures to OUT/profile.json and the
profiler tables to OUT/torch_profile_<protocol>.txt. On one H200 with the 350m preset it needs
about a minute and a half.

    python bench/eval_profile.py --out OUT [--model DIR | --preset 350m] [--batch-size 32] \
        [--protocols lm-eval,paper] [--tasks ...] [--limit N] [--max-batch-tokens N] \
        [--baseline-scorer FILE]   # also time another scoring.py (e.g. `git show REV:src/codestage/eval/scoring.py`)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from eval_lmeval_match import build_model  # noqa: E402

import codestage.eval.harness as harness  # noqa: E402
import codestage.eval.multiple_choice as mc  # noqa: E402
from codestage.tokenizer import load_tokenizer  # noqa: E402
from codestage.eval.scoring import Scorer  # noqa: E402
from codestage.model import count_parameters, load_model  # noqa: E402

TASKS = "logiqa_en,logiqa_zh,jecqa_kd,scienceqa,cosqa"
SCORER_PHASES = ("tokenize", "rows", "host_batch", "h2d", "mask", "forward", "head", "d2h", "aggregate")
HARNESS_PHASES = ("task_load", "requests", "records", "bootstrap", "provenance", "write")


class Report:
    def __init__(self, out: Path) -> None:
        self.lines: list[str] = []
        self.out = out

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self) -> None:
        (self.out / "profile.txt").write_text("\n".join(self.lines) + "\n")


class Phases:
    """Accumulating, synchronised phase timers, installed into the scorer and the harness modules."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self._depth:  # a phase inside another counts to the outer one only
            yield
            return
        self._depth += 1
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1
            self._depth -= 1

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)

        return timed


@contextlib.contextmanager
def installed(phases: Phases, scorer):
    """Time the harness-level phases by wrapping module functions; undo afterwards."""
    patches = [
        (mc, "choice_requests"), (mc, "item_record"), (mc, "bootstrap_ci"),
        (harness, "_provenance"), (harness, "write_text"), (harness, "write_json"),
    ]
    names = {"choice_requests": "requests", "item_record": "records", "bootstrap_ci": "bootstrap",
             "_provenance": "provenance", "write_text": "write", "write_json": "write"}
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr in patches]
    original_get_task = harness.get_task

    def get_task(name, data_dir=None):
        task = original_get_task(name, data_dir)
        task.load = phases.wrap("task_load", task.load)
        return task

    try:
        for mod, attr, fn in saved:
            setattr(mod, attr, phases.wrap(names[attr], fn))
        harness.get_task = get_task
        scorer.timer = phases
        yield
    finally:
        for mod, attr, fn in saved:
            setattr(mod, attr, fn)
        harness.get_task = original_get_task
        scorer.timer = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_evaluate(scorer, model_dir: Path, tasks: list[str], out: Path, protocol: str, limit: int | None, device: torch.device) -> tuple[float, int]:
    sync(device)
    start = time.perf_counter()
    res = harness.evaluate(model_dir, tasks, out, limit=limit, protocol=protocol, scorer=scorer)
    sync(device)
    return time.perf_counter() - start, sum(r.n for r in res.tasks.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for profile.txt, profile.json and the profiler tables")
    ap.add_argument("--model", type=Path, help="HF model dir (default: a seeded random model of --preset)")
    ap.add_argument("--preset", default="350m")
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--protocols", default="lm-eval,paper")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="let batches of short rows hold more rows (off: batch-size rows)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on CPU by default")
    ap.add_argument("--profile-items", type=int, default=64, help="items per task under torch.profiler (0: skip)")
    ap.add_argument("--baseline-scorer", type=Path, help="a scoring.py whose Scorer is also timed (no breakdown)")
    ap.add_argument("--trace", action="store_true", help="also export a Chrome trace of the profiled run")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    work = Path(tempfile.mkdtemp(prefix="codestage-profile-"))
    figures: dict = {"device": str(device), "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                     "dtype": str(dtype).replace("torch.", ""), "batch_size": args.batch_size, "tasks": tasks,
                     "limit": args.limit, "max_batch_tokens": args.max_batch_tokens, "torch": torch.__version__}
    import transformers

    figures["transformers"] = transformers.__version__
    t0 = time.perf_counter()
    if args.model is None:
        args.model = build_model(work / "built", args.preset)
        figures["preset"] = args.preset
    figures["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load_model(args.model, device=device, dtype=dtype)
    tokenizer = load_tokenizer(args.model)
    figures["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer = Scorer(model, tokenizer, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens)
    sync(device)
    figures["scorer_init_s"] = time.perf_counter() - t0
    n_params = count_parameters(model)
    n_embed = model.get_input_embeddings().weight.numel()
    report(f"model {args.model} ({n_params / 1e6:.0f}M parameters, vocabulary {model.config.vocab_size}) on {device} "
           f"{figures['gpu'] or ''} {figures['dtype']}; torch {torch.__version__}, transformers {transformers.__version__}")
    report(f"batch {args.batch_size} rows, max_batch_tokens {args.max_batch_tokens}, tokenizer threads {scorer.tokenize_workers}, "
           f"split head {scorer.runner.split_head}, packing {scorer.pack}")
    report(f"build {figures['build_s']:.1f} s, load {figures['load_s']:.1f} s, Scorer() with its probes {figures['scorer_init_s']:.2f} s")
    t0 = time.perf_counter()
    for protocol in protocols:  # warm-up: CUDA context, cuBLAS, kernels (4 items barely warm the tokenizer cache)
        harness.evaluate(args.model, tasks, work / "warmup", limit=4, protocol=protocol, scorer=scorer)
    sync(device)
    figures["warmup_s"] = time.perf_counter() - t0
    report(f"warm-up (4 items per task and protocol) {figures['warmup_s']:.1f} s")

    baseline = None
    if args.baseline_scorer:
        spec = importlib.util.spec_from_file_location("baseline_scoring", args.baseline_scorer)
        module = importlib.util.module_from_spec(spec)
        sys.modules["baseline_scoring"] = module
        spec.loader.exec_module(module)
        baseline = module.Scorer(model, tokenizer, batch_size=args.batch_size)
        harness.evaluate(args.model, tasks, work / "warmup", limit=4, protocol=protocols[0], scorer=baseline)

    figures["protocols"] = {}
    for protocol in protocols:
        fig: dict = {}
        scorer.stats.clear()
        seconds, n_items = timed_evaluate(scorer, args.model, tasks, work / f"ours-{protocol}", protocol, args.limit, device)
        stats = dict(scorer.stats)
        fig.update(items=n_items, seconds=seconds, items_per_s=n_items / seconds, stats=stats)
        report()
        report(f"=== protocol {protocol}: {n_items} items in {seconds:.2f} s = {n_items / seconds:.1f} items/s (timed as eval_throughput.py)")
        if baseline is not None:
            b_seconds, _ = timed_evaluate(baseline, args.model, tasks, work / f"base-{protocol}", protocol, args.limit, device)
            fig["baseline_seconds"] = b_seconds
            report(f"    baseline scorer {args.baseline_scorer}: {b_seconds:.2f} s = {n_items / b_seconds:.1f} items/s "
                   f"(this one is {b_seconds / seconds:.2f}x faster)")
            same = (work / f"base-{protocol}" / "items.jsonl").read_text() == (work / f"ours-{protocol}" / "items.jsonl").read_text()
            fig["baseline_items_identical"] = same
            report(f"    items.jsonl identical to the baseline's: {same}")
        flops = 2 * (n_params - n_embed) * stats.get("padded_tokens", 0)
        report(f"requests {stats.get('requests', 0)}, rows {stats.get('rows', 0)} ({stats.get('packed_rows', 0)} packed), "
               f"batches {stats.get('batches', 0)}")
        report(f"tokens forwarded {stats.get('tokens', 0):,} (padded {stats.get('padded_tokens', 0):,}); scored positions "
               f"{stats.get('scored_tokens', 0):,}; a non-packed run forwards {stats.get('unpacked_tokens', 0):,} "
               f"(padded {stats.get('unpacked_padded_tokens', 0):,} in batches of {args.batch_size} requests)")
        # breakdown run
        phases = Phases(device)
        with installed(phases, scorer):
            b_total, _ = timed_evaluate(scorer, args.model, tasks, work / f"breakdown-{protocol}", protocol, args.limit, device)
        covered = sum(phases.seconds.values())
        fig["breakdown_total_s"] = b_total
        fig["phases"] = {**dict(phases.seconds), "other": b_total - covered}
        report(f"synchronised breakdown run: {b_total:.2f} s")
        report(f"  {'phase':<12}{'seconds':>9}{'share':>8}{'calls':>8}")
        for name in (*SCORER_PHASES, *HARNESS_PHASES):
            if name in phases.seconds:
                s = phases.seconds[name]
                report(f"  {name:<12}{s:>9.3f}{100 * s / b_total:>7.1f}%{phases.calls[name]:>8}")
        report(f"  {'other':<12}{b_total - covered:>9.3f}{100 * (b_total - covered) / b_total:>7.1f}%")
        fwd = phases.seconds.get("forward", 0.0)
        if fwd:
            report(f"  forward: {flops / 1e12:.2f} TFLOP (2 x non-embedding parameters x padded tokens) in {fwd:.2f} s = "
                   f"{flops / fwd / 1e12:.1f} TFLOP/s")
        if device.type == "cuda":
            fig["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            report(f"  peak GPU memory {fig['max_memory_gib']:.1f} GiB")
        figures["protocols"][protocol] = fig
        report.save()

    if args.profile_items > 0:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        for protocol in protocols:
            with profile(activities=activities) as prof:
                harness.evaluate(args.model, tasks, work / f"prof-{protocol}", limit=args.profile_items, protocol=protocol, scorer=scorer)
                sync(device)
            avg = prof.key_averages()
            tables = []
            if device.type == "cuda":
                key = "device_time_total" if avg and hasattr(avg[0], "device_time_total") else "cuda_time_total"
                tables.append(f"top 25 by CUDA time\n{avg.table(sort_by=key, row_limit=25)}")
            tables.append(f"top 25 by CPU time\n{avg.table(sort_by='cpu_time_total', row_limit=25)}")
            tables.append(f"top 25 by self CPU time\n{avg.table(sort_by='self_cpu_time_total', row_limit=25)}")
            text = f"torch.profiler, protocol {protocol}, first {args.profile_items} items per task\n\n" + "\n\n".join(tables)
            (args.out / f"torch_profile_{protocol}.txt").write_text(text + "\n")
            report()
            report(text)
            if args.trace:
                prof.export_chrome_trace(str(args.out / f"trace_{protocol}.json"))
    (args.out / "profile.json").write_text(json.dumps(figures, indent=1))
    report.save()


if __name__ == "__main__":
    main()
