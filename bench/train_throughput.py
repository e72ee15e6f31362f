"""Training throughput on one GPU: codestage's loop against a plain HF baseline, same shapes.

For each preset (default 125m, 350m, 760m, 1.3b; sequence 1024; vocabulary 50257) it runs

  ours  codestage.train.loop.train(): our Llama (fused QKV / gate-up, SDPA, torch.compile of
        the decoder, Triton SwiGLU), chunked linear+cross-entropy (Triton softmax/gradient step),
        bf16 autocast over fp32 master weights, fused AdamW, prefetch thread, deferred loss
        reads; random token batches.
  peer  the faster of two plain baselines (--peers), as issue 4 defines the peer figure:
        hf    Hugging Face LlamaForCausalLM + torch.compile(model) + fused AdamW, the HF loss;
        gpt2  a GPT-2-style PyTorch model at the same width/depth/heads, compiled per block,
              plain cross-entropy over full logits (bench/gpt2_peer.py);
        both with bf16 autocast over fp32 weights, the same micro-batch, grad accumulation, clipping.

and prints tokens/s and MFU for both, where MFU = (6 N + 12 L d T) x tokens/s / ceiling and the
ceiling is a big bf16 matmul measured here first. Timings: `--warmup` optimizer steps (compile
included) then `--steps` timed ones, bracketed by cuda synchronize. Results go to --json.

Memory (ours): `max_memory_allocated` in GiB (the JSON's `*_gb` fields are GiB) over the run and
per phase (build, forward, backward with clipping, optimizer step; the peak is reset at each
boundary), `max_memory_reserved`, and `memory_estimate` for the same shape (`estimate_gb`,
`estimate_error` = estimate / peak - 1). The HF model we train from stays on the CPU, as in
`codestage pretrain` (before 2026-12-01 it sat on the GPU beside ours, 4 bytes a parameter more).
`--micro-batches 2,4,8` measures each micro-batch in one process, the model built once per preset.
Without a GPU (or with --cpu) ours runs eager on the CPU: a check that the script works.

    python bench/train_throughput.py --json results/train_throughput.json
    python bench/train_throughput.py --presets 125m --steps 20 --skip-peer
    python bench/train_throughput.py --presets 125m --peers hf --rounds 3   # medians of 3 alternating runs
    python bench/train_throughput.py --presets pangu-2.6b,1.3b --micro-batches 2,4,8 --skip-peer --warmup 2 --steps 3
    python bench/train_throughput.py --presets tiny --micro-batches 2,4 --seq 64 --vocab 500 --warmup 1 --steps 2  # CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from codestage.config import TrainConfig  # noqa: E402
from codestage.model import model_config  # noqa: E402
from codestage.train.estimate import flops_per_token  # noqa: E402

DEFAULT_MICRO = {"125m": 16, "350m": 16, "760m": 8, "1.3b": 8, "small": 32, "tiny": 64, "pangu-2.6b": 4}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def matmul_ceiling(n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def cuda_correctness() -> dict:
    """Our Llama and chunked loss against HF / plain cross-entropy on this GPU (bf16): max differences."""
    import torch.nn.functional as F

    from codestage.model import build_model
    from codestage.train.fused_ce import linear_cross_entropy
    from codestage.train.llama import FastLlama

    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(5000, 256, device="cuda", generator=g, requires_grad=True)
    w = torch.randn(50257, 256, device="cuda", generator=g, requires_grad=True)
    t = torch.randint(0, 50257, (5000,), device="cuda", generator=g)
    t[:100] = -100
    ours = linear_cross_entropy(h, w, t, torch.bfloat16, compiled=True)
    ours.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy((h.bfloat16() @ w.bfloat16().t()).float(), t, reduction="sum")
    ref.backward()
    conf = model_config("small", 1000, eos_token_id=0, pad_token_id=1)
    hf = build_model(conf, 0).cuda()
    fast = FastLlama(conf).cuda()
    fast.from_hf_state_dict(hf.state_dict())
    ids = torch.randint(0, 1000, (2, 128), device="cuda", generator=g)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = hf(ids).logits.float(), fast(ids).float()
    out = {"ce_loss_rel": abs(ours.item() - ref.item()) / abs(ref.item()),
           "ce_grad_h_rel": ((gh - h.grad).abs().max() / h.grad.abs().max()).item(),
           "ce_grad_w_rel": ((gw - w.grad).abs().max() / w.grad.abs().max()).item(),
           "logits_bf16_rel": ((a - b).abs().max() / a.abs().max()).item()}
    out["ok"] = out["ce_loss_rel"] < 1e-3 and out["ce_grad_h_rel"] < 2e-2 and out["ce_grad_w_rel"] < 2e-2 and out["logits_bf16_rel"] < 5e-2
    return out


class RandomTokens:
    """A BatchSource of seeded random token rows (throughput does not depend on the text)."""

    fixed_width = True

    def __init__(self, vocab: int, seq: int, seed: int = 0) -> None:
        self.vocab, self.seq = vocab, seq
        self.gen = torch.Generator().manual_seed(seed)
        self.rows = 0

    def next_batch(self, fraction: float, rows: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, self.vocab, (rows, self.seq), generator=self.gen)
        self.rows += rows
        return {"input_ids": ids, "labels": ids}

    def state(self) -> dict:
        return {"rows": self.rows}

    def load(self, state: dict) -> None:
        self.rows = state["rows"]

    def report(self, total_steps: int) -> dict:
        return {"random_rows": self.rows}

    def tokens_per_source(self) -> dict[str, int]:
        return {"random": self.rows * self.seq}


class _Tok:
    """The few tokenizer members the loop uses when it saves the final model."""

    def save_pretrained(self, folder) -> None:
        (Path(folder) / "tokenizer_note.txt").write_text("benchmark run: random tokens, no tokenizer\n")


def hf_model(conf, device: str = "cuda"):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(conf, attn_implementation="sdpa")


class PhasePeaks:
    """Peak CUDA memory per phase of our trainer's steps: build (up to the first forward), forward,
    backward (with clipping), optimizer step; the peak is reset at each boundary. On the CPU it records nothing.

    Boundaries come from the outside: our loss call (Trainable.loss_sum, the forward) and the
    optimizer's global step hooks, so the loop itself is measured unchanged.
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.phase = cuda, "build"
        self.allocated: dict[str, float] = {}
        self.reserved = 0.0

    def mark(self, next_phase: str) -> None:
        if self.cuda:
            self.allocated[self.phase] = max(self.allocated.get(self.phase, 0.0), torch.cuda.max_memory_allocated() / 2**30)
            self.reserved = max(self.reserved, torch.cuda.max_memory_reserved() / 2**30)
            torch.cuda.reset_peak_memory_stats()
        self.phase = next_phase

    def __enter__(self) -> "PhasePeaks":
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        from codestage.train import modules

        self._loss_sum = loss_sum = modules.Trainable.loss_sum

        def measured_loss_sum(tm, net, batch):
            self.mark("forward")
            out = loss_sum(tm, net, batch)
            self.mark("backward")
            return out

        modules.Trainable.loss_sum = measured_loss_sum
        self._hooks = [register_optimizer_step_pre_hook(lambda *_: self.mark("optimizer")),
                       register_optimizer_step_post_hook(lambda *_: self.mark("between steps"))]
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        from codestage.train import modules

        self.mark("done")
        modules.Trainable.loss_sum = self._loss_sum
        for h in self._hooks:
            h.remove()

    def report(self) -> dict:
        if not self.cuda:
            return {}
        return {"peak_mem_gb": max(self.allocated.values()), "peak_reserved_gb": self.reserved,
                "peak_mem_by_phase_gb": {k: round(v, 3) for k, v in self.allocated.items()}}


def run_ours(conf, micro: int, accum: int, seq: int, warmup: int, steps: int, workdir: Path, act_ckpt: bool,
             float8: bool = False, compile_scope: str = "auto", profile: Path | None = None, *, hf=None,
             device: str = "cuda", write_model: bool = True) -> dict:
    """Our loop, timed from the end of warm-up; with `profile`, one more step runs under torch.profiler.

    `hf`: the Hugging Face model to train, on the CPU as `codestage pretrain` builds it (made here
    when None; one may serve several runs). Peak memory (GiB, `max_memory_allocated`) is recorded
    per phase (PhasePeaks). `write_model=False` skips writing the final model (after the timed
    steps; it changes neither the timing nor the GPU peak, and takes seconds at 2.6b).
    """
    from codestage.train import loop
    from codestage.train.loop import train

    model = hf if hf is not None else cpu_hf_model(conf, device)
    extra = 1 if profile else 0
    cfg = TrainConfig(steps=warmup + steps + extra, batch_size=micro, grad_accum=accum, seq_len=seq, lr=3e-4, warmup_steps=1,
                      log_every=10**6, dtype="bfloat16", compile="on" if device == "cuda" else "auto", device=device,
                      tensorboard=False, activation_checkpointing=act_ckpt, float8=float8, compile_scope=compile_scope)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    marks: dict[int, float] = {}
    prof = None

    def on_step(done: int) -> None:
        nonlocal prof
        if done in (1, warmup, warmup + steps, warmup + steps + extra):
            sync()
            marks[done] = time.perf_counter()
        if profile and done == warmup + steps:
            from torch.profiler import ProfilerActivity, profile as start_profile

            prof = start_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            prof.start()
            marks[-1] = time.perf_counter()  # the profiled step starts here; the timed steps ended above
        elif prof is not None and done == warmup + steps + 1:
            prof.stop()

    writer = loop._Run._write_final_model
    if not write_model:
        loop._Run._write_final_model = lambda self: None
    t_start = time.perf_counter()
    try:
        with PhasePeaks(cuda) as peaks:
            res = train(model, _Tok(), RandomTokens(conf.vocab_size, seq), cfg, workdir / "ours", name="ours", progress=False,
                        on_step=on_step)
    finally:
        loop._Run._write_final_model = writer
    tokens = steps * micro * accum * seq
    del model
    if prof is not None:
        from train_variants import append_profile

        append_profile(profile, f"ours {conf.hidden_size}x{conf.num_hidden_layers} (one step in the trainer, wall "
                       f"{1e3 * (marks[warmup + steps + 1] - marks[-1]):.1f} ms under the profiler)", prof.key_averages())
    out = {"tokens_per_s": tokens / (marks[warmup + steps] - marks[warmup]), "first_step_s": marks[1] - t_start,
           "final_loss": res.final_loss}
    out.update(peaks.report())
    return out


def cpu_hf_model(conf, device: str = "cuda"):
    """The HF model with its weights on the CPU, as `codestage pretrain` hands it to the loop (initialised
    on `device`, which is quicker at 2.6b, and moved off it: the trainer copies what it trains)."""
    model = hf_model(conf, device).to("cpu")
    if device == "cuda":
        torch.cuda.empty_cache()
    return model


def median_run(runs: list[dict]) -> dict:
    """The run with the median tokens/s (the lower middle one for an even count), with every
    round's figure under "rounds"; the first failure if no run succeeded."""
    ok = sorted((r for r in runs if "tokens_per_s" in r), key=lambda r: r["tokens_per_s"])
    if not ok:
        return runs[0] if runs else {"error": "not run"}
    return dict(ok[(len(ok) - 1) // 2], rounds=[round(r["tokens_per_s"]) for r in runs if "tokens_per_s" in r],
                failed_rounds=len(runs) - len(ok))


def gpu_batches(vocab: int, micro: int, seq: int, accum: int) -> list[torch.Tensor]:
    """One optimizer step's micro-batches of seeded random tokens, already on the GPU."""
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (micro, seq), generator=gen).cuda() for _ in range(accum)]


def time_steps(step, warmup: int, steps: int, tokens_per_step: int) -> dict:
    """Run `step` warmup times (the first one, compile included, timed alone), then time `steps` more."""
    t = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t
    for _ in range(warmup - 1):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return {"tokens_per_s": steps * tokens_per_step / (time.perf_counter() - t), "first_step_s": first,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30}


def run_peer(conf, micro: int, accum: int, seq: int, warmup: int, steps: int, compile_mode: str) -> dict:
    """HF LlamaForCausalLM + torch.compile (whole model, or per decoder layer) + fused AdamW."""
    model = hf_model(conf)
    model.config.use_cache = False
    model.train()
    if compile_mode == "model":
        fwd = torch.compile(model)
    else:  # per decoder layer
        for layer in model.model.layers:
            layer.compile()
        fwd = model
    return _time_plain(model, lambda ids: fwd(input_ids=ids, labels=ids, use_cache=False).loss, conf.vocab_size, micro,
                       accum, seq, warmup, steps)


def run_gpt2_peer(conf, micro: int, accum: int, seq: int, warmup: int, steps: int) -> dict:
    """A plain GPT-2-style PyTorch model at the preset's shape, compiled per block (gpt2_peer.py)."""
    from gpt2_peer import gpt2_like

    torch.manual_seed(0)
    model = gpt2_like(conf).cuda()
    model.train()
    for block in model.blocks:
        block.compile()
    return _time_plain(model, model, conf.vocab_size, micro, accum, seq, warmup, steps)


def _time_plain(model, mean_loss, vocab: int, micro: int, accum: int, seq: int, warmup: int, steps: int) -> dict:
    """A peer's step: bf16 autocast over fp32 weights, grad accumulation, clipping, fused AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=True)
    batches = gpu_batches(vocab, micro, seq, accum)

    def step() -> None:
        for ids in batches:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = mean_loss(ids) / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_steps(step, warmup, steps, micro * accum * seq)


def memory_row(conf, n: int, micro: int, seq: int, accum: int, act_ckpt: bool) -> dict:
    """memory_estimate (GiB) for this shape: what `codestage pretrain --dry-run` prints for it."""
    from codestage.train.estimate import memory_estimate

    est = memory_estimate(conf, n, micro_batch=micro, seq_len=seq, grad_accum=accum, activation_checkpointing=act_ckpt)
    return {k: round(v / 2**30, 3) for k, v in est.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="125m,350m,760m,1.3b")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--micro", default="", help="per-preset micro-batch rows, e.g. '125m=16,1.3b=8' (defaults in the script)")
    ap.add_argument("--micro-batches", default="", help="micro-batch rows to measure for every preset, e.g. '2,4,8' "
                    "(one run each, in one process: the model is built once per preset); overrides --micro")
    ap.add_argument("--accum", type=int, default=4, help="micro-batches per optimizer step")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check against HF / plain cross-entropy")
    ap.add_argument("--cpu", action="store_true", help="run ours on the CPU (a check that the script works: no compile, "
                    "no memory or MFU figures); the default where no GPU is found")
    ap.add_argument("--float8", default="", help="presets to also run ours with train.float8 (torchao), e.g. '760m,1.3b'")
    ap.add_argument("--peers", default="hf,gpt2", help="peer baselines to run; the best one is the peer figure "
                    "(hf: LlamaForCausalLM + torch.compile; gpt2: plain GPT-2-style model compiled per block)")
    ap.add_argument("--peer-compile", choices=["model", "blocks"], default="model", help="how the hf peer is compiled")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--compile-scope", choices=["auto", "blocks", "decoder"], default="auto",
                    help="ours: train.compile_scope (one compiled graph per block, or the whole decoder; auto, the "
                    "trainer's default, is the decoder here: one process, fixed-width batches)")
    ap.add_argument("--sdpa", choices=["default", "cudnn", "flash"], default="default",
                    help="restrict scaled_dot_product_attention to one backend (both runs)")
    ap.add_argument("--json", type=Path, default=Path("train_throughput.json"), help="where to write the results")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure ours and the peers this many times, alternating, and report each side's median "
                    "run (machines drift 1-2%% over minutes; alternating rounds put both sides under the same drift)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="append a torch.profiler table of one of our trainer's steps (after the timed ones) here")
    a = ap.parse_args()
    peers = [] if a.skip_peer else [f"peer_{p.strip()}" for p in a.peers.split(",") if p.strip()]
    unknown = {p[5:] for p in peers} - {"hf", "gpt2"}
    if unknown:
        sys.exit(f"--peers: unknown peer(s) {', '.join(sorted(unknown))} (known: hf, gpt2)")
    if a.rounds < 1:
        sys.exit("--rounds: at least 1")
    device = "cpu" if a.cpu or not torch.cuda.is_available() else "cuda"
    if device == "cpu":
        peers = []  # the peers are CUDA-only; ours runs eager on the CPU
    if a.sdpa != "default":
        torch.backends.cuda.enable_flash_sdp(a.sdpa == "flash")
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        torch.backends.cuda.enable_cudnn_sdp(a.sdpa == "cudnn")
    torch.backends.cuda.matmul.allow_tf32 = True
    micro = dict(DEFAULT_MICRO)
    for part in filter(None, a.micro.split(",")):
        k, v = part.split("=")
        micro[k.strip()] = int(v)

    micro_list = [int(x) for x in a.micro_batches.split(",") if x.strip()]

    t_all = time.perf_counter()
    ceiling = matmul_ceiling() if device == "cuda" else None
    dev = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    log(f"{dev}: bf16 matmul ceiling {f'{ceiling:.0f} TFLOP/s' if ceiling else '-'}; torch {torch.__version__}")
    import transformers

    check = cuda_correctness() if device == "cuda" and not a.no_check else {"ok": None}
    torch._dynamo.reset()
    if check["ok"] is not None:
        log(f"correctness on this GPU: {'OK' if check['ok'] else 'MISMATCH'} {json.dumps({k: round(v, 6) for k, v in check.items() if k != 'ok'})}")
    results = {"correctness": check, "device": dev, "torch": torch.__version__, "transformers": transformers.__version__,
               "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "ceiling_tflops": ceiling, "device_type": device, "seq": a.seq, "vocab": a.vocab, "accum": a.accum, "warmup": a.warmup,
               "steps": a.steps, "peers": {"hf": f"HF LlamaForCausalLM + torch.compile({a.peer_compile}) + fused AdamW, bf16 autocast",
                                           "gpt2": "GPT-2-style PyTorch model (bench/gpt2_peer.py), compiled per block, "
                                                   "fused AdamW, bf16 autocast"},
               "peer": "the faster of the peers run, per preset",
               "sdpa": a.sdpa, "compile_scope": a.compile_scope, "command": " ".join(sys.argv), "presets": {}}
    workdir = Path(tempfile.mkdtemp(prefix="cs-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    for preset in [p.strip() for p in a.presets.split(",") if p.strip()]:
        conf = model_config(preset, a.vocab, eos_token_id=0, pad_token_id=0, max_position_embeddings=max(a.seq, 1024))
        from codestage.train.estimate import planned_parameters

        n = planned_parameters(conf)
        fpt = flops_per_token(conf, n, a.seq)
        hf_cpu = None  # built once per preset, on the CPU as the CLI has it, for all of our runs
        for mb in micro_list or [micro.get(preset, 8)]:
            key = f"{preset} x{mb}" if micro_list else preset
            row: dict = {"preset": preset, "params": n, "flops_per_token": fpt, "micro_batch": mb,
                         "tokens_per_step": mb * a.accum * a.seq,
                         "estimate_gb": memory_row(conf, n, mb, a.seq, a.accum, a.activation_checkpointing)}
            runs = ([] if a.skip_ours else ["ours"]) + peers + (["ours_fp8"] if preset in a.float8.split(",") else [])
            rounds: dict[str, list[dict]] = {who: [] for who in runs}
            for i, who in enumerate([w for _ in range(a.rounds) for w in runs]):
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                try:
                    if who.startswith("ours"):
                        if hf_cpu is None:
                            hf_cpu = cpu_hf_model(conf, device)
                        r = run_ours(conf, mb, a.accum, a.seq, a.warmup, a.steps, workdir, a.activation_checkpointing,
                                     float8=who == "ours_fp8", compile_scope=a.compile_scope,
                                     profile=a.profile if i < len(runs) else None,  # profiled in the first round only
                                     hf=hf_cpu, device=device, write_model=False)
                    elif who == "peer_hf":
                        r = run_peer(conf, mb, a.accum, a.seq, a.warmup, a.steps, a.peer_compile)
                    else:
                        r = run_gpt2_peer(conf, mb, a.accum, a.seq, a.warmup, a.steps)
                    r["mfu"] = r["tokens_per_s"] * fpt / (ceiling * 1e12) if ceiling else None
                    r["wall_s"] = time.perf_counter() - t
                    mem = f"peak mem {r['peak_mem_gb']:.1f} GiB" if "peak_mem_gb" in r else "no memory figures on the CPU"
                    mfu = f"MFU {r['mfu']:.3f}" if r["mfu"] is not None else "MFU -"
                    log(f"{key:>6} {who}: {r['tokens_per_s']:,.0f} tok/s  {mfu}  first step {r['first_step_s']:.1f}s  "
                        f"{mem}  ({r['wall_s']:.0f}s)")
                except Exception as exc:  # one failed preset should not hide the others
                    r = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                    log(f"{key:>6} {who}: FAILED {r['error'][:300]}")
                rounds[who].append(r)
                # Fresh compile caches for the next run, as in a new process: otherwise the shared
                # compiled functions (one Block.forward, one loss chunk) see a second set of shapes,
                # switch to dynamic-shape kernels, and the next preset measures those.
                torch._dynamo.reset()
                gc.collect()
                if device == "cuda":
                    torch.cuda.empty_cache()
            for who, rs in rounds.items():
                row[who] = median_run(rs)
            measured = [p for p in peers if "tokens_per_s" in row.get(p, {})]
            if measured:
                best = max(measured, key=lambda p: row[p]["tokens_per_s"])
                row["peer"] = dict(row[best], which=best[5:])
            if "tokens_per_s" in row.get("ours", {}) and "tokens_per_s" in row.get("peer", {}):
                row["speedup"] = row["ours"]["tokens_per_s"] / row["peer"]["tokens_per_s"]
            if "tokens_per_s" in row.get("ours_fp8", {}) and "tokens_per_s" in row.get("peer", {}):
                row["speedup_fp8"] = row["ours_fp8"]["tokens_per_s"] / row["peer"]["tokens_per_s"]
            if "peak_mem_gb" in row.get("ours", {}):
                row["estimate_error"] = row["estimate_gb"]["total"] / row["ours"]["peak_mem_gb"] - 1
            results["presets"][key] = row
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(results, indent=1))
        del hf_cpu
    results["total_s"] = time.perf_counter() - t_all
    a.json.write_text(json.dumps(results, indent=1))

    print(f"\n{dev}, seq {a.seq}, vocab {a.vocab}, ceiling {f'{ceiling:.0f} TFLOP/s' if ceiling else '-'} (bf16 matmul, measured)")
    print(f"{'preset':>7} {'params':>8} {'tok/step':>8} {'ours tok/s':>11} {'MFU':>6} {'peer tok/s':>11} {'MFU':>6} "
          f"{'speedup':>8}  peer")
    for preset, row in results["presets"].items():
        o, p = row.get("ours", {}), row.get("peer", {})
        fmt = lambda r, k, f: f.format(r[k]) if r.get(k) is not None else "-"  # noqa: E731
        others = ", ".join(f"{k[5:]} {fmt(v, 'tokens_per_s', '{:,.0f}')}" for k, v in row.items() if k.startswith("peer_"))
        print(f"{preset:>7} {row['params'] / 1e6:>7.0f}M {row['tokens_per_step']:>8} {fmt(o, 'tokens_per_s', '{:,.0f}'):>11} "
              f"{fmt(o, 'mfu', '{:.3f}'):>6} {fmt(p, 'tokens_per_s', '{:,.0f}'):>11} {fmt(p, 'mfu', '{:.3f}'):>6} "
              f"{fmt(row, 'speedup', '{:.2f}x'):>8}  {p.get('which', '-')} (of: {others or '-'})")
        if a.rounds > 1:
            print(f"{'':>7} rounds: " + "; ".join(f"{k} {v['rounds']}" for k, v in row.items()
                                                  if k.startswith(("ours", "peer_")) and "rounds" in v))
        if "ours_fp8" in row:
            f8 = row["ours_fp8"]
            print(f"{'':>7} {'float8':>8} {'':>8} {fmt(f8, 'tokens_per_s', '{:,.0f}'):>11} {fmt(f8, 'mfu', '{:.3f}'):>6} "
                  f"{'':>11} {'':>6} {fmt(row, 'speedup_fp8', '{:.2f}x'):>8}")
    print_memory(results)
    print(f"total {results['total_s']:.0f}s; results in {a.json}")


def print_memory(results: dict) -> None:
    """Ours: measured peak (max_memory_allocated, GiB) overall and per phase, reserved, and the estimate."""
    rows = [(k, r) for k, r in results["presets"].items() if "peak_mem_gb" in r.get("ours", {})]
    if not rows:
        return
    phases = ["build", "forward", "backward", "optimizer"]
    print(f"\n{'ours':>16} {'micro':>5} {'tok/s':>9} {'MFU':>6} {'peak':>7} {'reserved':>8} {'estimate':>8} {'est/peak':>8}  "
          + " ".join(f"{p:>9}" for p in phases) + "  (GiB)")
    for key, r in rows:
        o, est = r["ours"], r["estimate_gb"]
        by = o["peak_mem_by_phase_gb"]
        mfu = f"{o['mfu']:.3f}" if o.get("mfu") is not None else "-"
        print(f"{key:>16} {r['micro_batch']:>5} {o['tokens_per_s']:>9,.0f} {mfu:>6} {o['peak_mem_gb']:>7.2f} "
              f"{o['peak_reserved_gb']:>8.2f} {est['total']:>8.2f} {est['total'] / o['peak_mem_gb']:>8.3f}  "
              + " ".join(f"{by.get(p, float('nan')):>9.2f}" for p in phases))


if __name__ == "__main__":
    main()
