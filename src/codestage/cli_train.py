"""`codestage pretrain`: plan (--dry-run) or run the pretraining step(s) of a study, on 1..N GPUs.

    codestage pretrain study.yaml --dry-run [--world 8]
    codestage pretrain study.yaml --out runs/study [--arm NL] [--resume]
    torchrun --nproc_per_node 8 -m codestage.cli pretrain study.yaml --out runs/study --arm CODE

The tokenizer and token stores are built first when missing (rank 0; the others wait). Every step
runs through `Study.execute`, so run folders, step keys and markers are the study runner's and a
later `codestage run` sees the pretraining steps as done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from codestage.errors import ConfigError

console = Console(stderr=True)


def _gib(x: float) -> str:
    return f"{x / 2**30:,.1f} GiB"


def dry_run(config: Path, arms: list[str] | None, world: int) -> None:
    """Print what pretraining would cost, before spending anything."""
    from codestage.config import load_config
    from codestage.model import model_config
    from codestage.train.batches import BatchPlan
    from codestage.train.estimate import flops_per_token, memory_estimate, planned_parameters, planned_tokens
    from codestage.train.loop import compile_scope
    from codestage.train.parallel import AUTO_FSDP_PARAMS
    from codestage.study.runner import groups_of
    from codestage.mixing import build_schedule
    from codestage.train.pretrain import PretrainSource

    cfg = load_config(config)
    tc = cfg.pretrain.train
    mc = cfg.model
    if mc.init_from:
        from transformers import AutoConfig

        conf = AutoConfig.from_pretrained(str((cfg.base_dir / mc.init_from).resolve()))
        vocab_note = "from init_from"
    else:
        if cfg.tokenizer.path:
            from codestage.tokenizer import load_tokenizer

            vocab = len(load_tokenizer((cfg.base_dir / cfg.tokenizer.path).resolve()))
            vocab_note = f"tokenizer {cfg.tokenizer.path}"
        else:
            vocab = cfg.tokenizer.vocab_size
            vocab_note = "tokenizer.vocab_size (to be trained)"
        conf = model_config(mc.preset, vocab, eos_token_id=0, pad_token_id=0, **mc.overrides)
    n = planned_parameters(conf)
    fpt = flops_per_token(conf, n, tc.seq_len)
    plan = BatchPlan.make(tc, world)
    mode = tc.parallel if tc.parallel != "auto" else ("none" if world == 1 else ("fsdp" if n > AUTO_FSDP_PARAMS else "ddp"))
    mem = memory_estimate(conf, n, micro_batch=plan.micro_rows, seq_len=tc.seq_len, world=world, sharded=mode == "fsdp",
                          activation_checkpointing=tc.activation_checkpointing, mixed=tc.dtype != "float32",
                          grad_accum=plan.grad_accum, keep_gathered=tc.fsdp_keep_gathered)
    tokens = tc.steps * plan.global_rows * tc.seq_len
    t = Table(title=f"pretraining plan: {config}", show_header=False)
    t.add_column(justify="right")
    t.add_column()
    t.add_row("model", f"{mc.init_from or mc.preset}: {conf.num_hidden_layers} layers x {conf.hidden_size}, "
                       f"{conf.num_attention_heads} heads, vocab {conf.vocab_size} ({vocab_note})")
    t.add_row("parameters", f"{n:,} ({n / 1e6:,.1f} M)")
    t.add_row("FLOPs / token", f"{fpt / 1e9:,.3f} GFLOP (6N + 12 L d T, T = {tc.seq_len})")
    t.add_row("batch", f"{world} process(es) x {plan.micro_rows} rows x {plan.grad_accum} accumulation = "
                       f"{plan.global_rows} rows = {plan.global_rows * tc.seq_len:,} tokens / step; parallel: {mode}")
    graph = "the whole decoder" if compile_scope(tc, world, PretrainSource) == "decoder" else "each block"
    t.add_row("compile", f"torch.compile {tc.compile} (auto: on CUDA): one graph for {graph} "
                         f"(compile_scope {tc.compile_scope}); float8 {'on' if tc.float8 else 'off'}")
    t.add_row("steps / tokens", f"{tc.steps:,} steps, {tokens:,} tokens per arm")
    t.add_row("compute / arm", f"{fpt * tokens:.3e} FLOP = {fpt * tokens / (989.4e12 * 0.5) / 3600:.3g} GPU-hours "
                               f"at 50% MFU of an H100 (989 TFLOP/s bf16)")
    t.add_row("memory / GPU", f"~{_gib(mem['total'])}: params {_gib(mem['params'])}, grads {_gib(mem['grads'])}, "
                              f"Adam {_gib(mem['adam'])}, activations {_gib(mem['activations'])}, "
                              f"bf16 weight copies {_gib(mem['weights_bf16'])} (peak; docs/training.md)")
    Console().print(t)
    groups = groups_of(cfg.sources)
    for arm, mix in cfg.pretrain.arms.items():
        if arms and arm not in arms:
            continue
        sched = build_schedule(mix, groups, where=f"pretrain.arms.{arm}")
        planned = planned_tokens(sched, groups, steps=tc.steps, rows_per_step=plan.global_rows, seq_len=tc.seq_len)
        st = Table(title=f"arm {arm}: {sched.name}", show_header=True)
        st.add_column("source")
        st.add_column("group")
        st.add_column("tokens planned", justify="right")
        st.add_column("share", justify="right")
        total = sum(planned.values()) or 1.0
        for src in cfg.sources:
            v = planned.get(src, 0.0)
            st.add_row(src, cfg.sources[src].group, f"{v:,.0f}", f"{v / total:.1%}")
        Console().print(st)


def pretrain(
    config: Path = typer.Argument(..., help="study YAML"),
    out: Optional[Path] = typer.Option(None, "--out", help="the study's output folder (runs/<arm> inside it)"),
    arm: Optional[list[str]] = typer.Option(None, "--arm", help="pretrain only this arm (repeatable); default: all"),
    resume: bool = typer.Option(False, "--resume", help="continue a cut-off run from its last complete checkpoint"),
    force: bool = typer.Option(False, "--force", help="start the arm(s) over, discarding checkpoints and outputs"),
    dry_run_: bool = typer.Option(False, "--dry-run", help="print parameters, FLOPs, memory and planned tokens; train nothing"),
    world: int = typer.Option(0, "--world", help="processes to plan for with --dry-run (default: WORLD_SIZE or 1)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Pretrain the study's arms (NL, CODE, ...); under torchrun on all its GPUs."""
    from codestage.config import load_config

    cfg = load_config(config)
    unknown = [a for a in arm or [] if a not in cfg.pretrain.arms]
    if unknown:
        raise ConfigError(f"--arm {', '.join(unknown)}: not an arm of {config} ({', '.join(cfg.pretrain.arms)})")
    if dry_run_:
        dry_run(config, arm, world or int(os.environ.get("WORLD_SIZE", "1")))
        return
    if out is None:
        raise ConfigError("--out is required (the study's output folder), unless --dry-run")
    from codestage.outputs import check_study_output

    check_study_output(cfg, out)
    run_pretraining(cfg, out, arms=arm, resume=resume, force=force, progress=not quiet)


def run_pretraining(cfg, out: Path, *, arms: list[str] | None, resume: bool, force: bool, progress: bool) -> None:
    import torch.distributed as dist

    from codestage.study.runner import Study
    from codestage.train import parallel

    had_group = dist.is_initialized()
    world = parallel.setup(cfg.pretrain.train.device)
    try:
        study = Study(cfg, out, console=console, progress=progress and world.main)
        if world.main:
            study.run(only=["tokenizer", "store/"])
        parallel.barrier(world)
        for name, step in study.steps.items():
            if not name.startswith("pretrain/") or (arms and step.info["run"] not in arms):
                continue
            if world.main and resume and not force and study.state(name) == "to run" and study.checkpoint(name) is None:
                console.print(f"[yellow]{name}: no checkpoint to resume; starting from step 0[/]")
            study.execute(name, force=force, resume=resume, world=world)
    finally:
        parallel.shutdown(world, created=not had_group)
