"""`codestage run` through an executor, `codestage step` (one step, the command every job runs) and
the executor columns of `codestage plan` (docs/cluster.md).

    codestage run study.yaml --out runs/s --executor local --seeds 0,1,2
    codestage step study.yaml --out runs/s --step pretrain/NL --seed 0      # what a job runs
    torchrun --nproc-per-node 8 -m codestage.cli step study.yaml --out runs/s --step pretrain/NL
"""

from __future__ import annotations

import os
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console

from codestage.errors import ConfigError

console = Console(stderr=True)
KINDS = ("inline", "local", "slurm")


def parse_seeds(text: str | None) -> list[int] | None:
    """`0,1,2` -> [0, 1, 2]."""
    if text is None:
        return None
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give seeds as integers separated by commas, e.g. 0,1,2") from None
    if not seeds:
        raise ConfigError("--seeds: no seed given")
    return seeds


def parse_stage_counts(text: str, option: str) -> dict[str, int]:
    """`pretrain=8,eval=1` -> {"pretrain": 8, "eval": 1}."""
    out: dict[str, int] = {}
    for item in (x.strip() for x in text.split(",")):
        stage, eq, n = item.partition("=")
        if not item:
            continue
        if not eq or not stage.strip() or not n.strip().isdigit():
            raise ConfigError(f"{option} {text!r}: give stage=N pairs separated by commas, e.g. pretrain=8,eval=1")
        out[stage.strip()] = int(n)
    return out


def executor_config(cfg: Any, *, max_parallel: int | None = None, partition: str | None = None,
                    account: str | None = None, time: str | None = None, gpus_per_step: str | None = None,
                    steps_per_gpu: str | None = None) -> Any:
    """The study's `executor:` section with the command's flags over it (validated again)."""
    from pydantic import ValidationError

    from codestage.config import ExecutorConfig

    data = cfg.executor.model_dump()
    if max_parallel is not None:
        data["max_parallel"] = max_parallel
    for key, value in (("partition", partition), ("account", account), ("time", time)):
        if value is not None:
            data["slurm"][key] = value
    if gpus_per_step:
        data["gpus_per_step"] = {**data["gpus_per_step"], **parse_stage_counts(gpus_per_step, "--gpus-per-step")}
    if steps_per_gpu:
        data["steps_per_gpu"] = {**data["steps_per_gpu"], **parse_stage_counts(steps_per_gpu, "--steps-per-gpu")}
    try:
        return ExecutorConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'executor'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"executor (the config's section with the command's flags): {problems}") from None


def executor_kind(flag: str | None, cfg: Any) -> str:
    from codestage.study.executors import default_kind

    kind = flag or cfg.kind or default_kind()
    if kind not in KINDS:
        raise ConfigError(f"--executor {kind!r}: executors are {', '.join(KINDS)}")
    return kind


def rerun_base(config: Path, out: Path, kind: str, *, seeds: list[int] | None, seed: int | None, full_eval: bool,
               flags: dict[str, Any]) -> list[str]:
    """`codestage run ...` as given, without --only, --force or --detach (a failed step's rerun command)."""
    cmd = ["codestage", "run", str(config), "--out", str(out), "--executor", kind]
    if seeds:
        cmd += ["--seeds", ",".join(map(str, seeds))]
    elif seed is not None:
        cmd += ["--seed", str(seed)]
    if full_eval:
        cmd.append("--full-eval")
    for name, value in flags.items():
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
    return cmd


def run_command(config: Path, out: Path, *, executor: str | None, seeds_text: str | None, seed: int | None,
                only: list[str] | None, force: bool, full_eval: bool, quiet: bool, detach: bool,
                verify: str = "quick", **flags: Any) -> bool:
    """`codestage run`: every selected step of every seed through the executor, then each seed's
    report once its steps are done. Returns False when a step failed or did not run."""
    from codestage.cli import _report
    from codestage.config import load_config
    from codestage.denormal import flush_denormal
    from codestage.outputs import check_study_output
    from codestage.study.dispatch import check_executor, seed_studies, select, to_job
    from codestage.study.executors import coordinator_lock, make_engine, run_jobs
    from codestage.study.runner import StepOutcome

    cfg = load_config(config)
    seeds = parse_seeds(seeds_text)
    if seeds and seed is not None:
        raise ConfigError("give --seed (one seed) or --seeds (several), not both")
    if seed is not None:
        cfg.seed = seed
    if full_eval:
        cfg.eval.sample = None
    exec_cfg = executor_config(cfg, **flags)
    kind = executor_kind(executor, exec_cfg)
    if detach and kind != "slurm":
        raise ConfigError(f"--detach: the {kind} executor runs its steps while `codestage run` waits; detach "
                          "works with --executor slurm")
    check_study_output(cfg, out)
    parts = seed_studies(cfg, out, seeds, console=console, progress=not quiet, verify=verify)
    for part in parts:
        if part.prefix:
            check_study_output(part.study.cfg, part.study.out)
    check_executor(exec_cfg, parts)
    tasks, chosen = select(parts, only, force=force)
    with ExitStack() as stack:
        for folder in dict.fromkeys([Path(out), *(p.study.out for p in parts)]):
            if stack.enter_context(coordinator_lock(folder)):
                console.print(f"[yellow]{folder}: took over the lock of a codestage run that ended without "
                              "releasing it[/]")
        timings: dict[str, dict[str, StepOutcome]] = {p.prefix: {} for p in parts}
        if kind == "inline":
            from codestage.study.share import share_step

            stack.enter_context(flush_denormal())  # through the reports too; put back when the command returns
            for t in tasks:
                if t.shared_from:
                    share_step(t.shared_from.study.steps[t.step].out, t.part.study.steps[t.step].out, t.key)
                    console.print(f"[dim]= {t.name}: linked from {t.shared_from.prefix}{t.step}[/]")
                    timings[t.part.prefix][t.step] = StepOutcome(t.step, "up_to_date")
                else:
                    timings[t.part.prefix][t.step] = t.part.study.execute(t.step, force=t.forced)
            finished = {t.name for t in tasks}
            ok = True
        else:
            rerun = rerun_base(config, out, kind, seeds=seeds, seed=seed, full_eval=full_eval, flags=flags)
            jobs = [to_job(t, exec_cfg, config=config, full_eval=full_eval, rerun=rerun) for t in tasks]
            summary = run_jobs(jobs, make_engine(kind, exec_cfg), out, detach=detach, console=console)
            console.print(summary.render(), markup=False, highlight=False, soft_wrap=True)  # rerun commands unbroken
            finished = {n for n, o in summary.outcomes.items() if o.state in ("done", "up to date")}
            by_name = {t.name: t for t in tasks}
            for name, o in summary.outcomes.items():
                t = by_name[name]
                if o.state == "done" and not t.shared_from:
                    timings[t.part.prefix][t.step] = StepOutcome(t.step, "ran", _step_seconds(t) or o.seconds)
            ok = summary.ok
        for part in parts:
            mine = [t.name for t in tasks if t.part is part]
            if not all(n in finished for n in mine):
                left = len([n for n in mine if n not in finished])
                console.print(f"[yellow]{part.study.out}: no report yet ({left} step(s) not done); the same "
                              "command again runs or collects them and writes it[/]", soft_wrap=True)
                continue
            seed_timings = {}
            for n in chosen[part.prefix]:
                alias = part.study.steps[n].alias_of
                seed_timings[n] = (StepOutcome(n, "alias", alias_of=alias) if alias
                                   else timings[part.prefix].get(n, StepOutcome(n, "up_to_date")))
            if part.prefix:
                console.print(f"[bold]{part.prefix.rstrip('/')}[/]: {part.study.out}")
            _report(part.study, part.study.out, seed_timings, partial=bool(only))
    return ok


def _step_seconds(task: Any) -> float | None:
    """What the step's own work took (its marker's seconds, as inline reports), not the job's process."""
    import json

    from codestage.study.runner import MARKER

    try:
        return json.loads((task.part.study.steps[task.step].out / MARKER).read_text()).get("seconds")
    except (OSError, ValueError):
        return None


def step_command(config: Path, out: Path, name: str, *, seed: int | None, full_eval: bool, force: bool,
                 quiet: bool) -> None:
    """`codestage step`: run one step through `Study.execute` (resuming a cut-off run). Training
    steps run on every process of a torchrun job (DDP/FSDP2, rank 0 writes); other steps run in
    one process and refuse several."""
    from codestage.config import load_config
    from codestage.denormal import flush_denormal
    from codestage.outputs import check_study_output
    from codestage.study.runner import Study

    cfg = load_config(config)
    if seed is not None:
        cfg.seed = seed
    if full_eval:
        cfg.eval.sample = None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        check_study_output(cfg, out)
    study = Study(cfg, out, console=console, progress=not quiet and rank == 0)
    if name not in study.steps:
        raise ConfigError(f"--step {name}: not a step of {config} (steps: {', '.join(study.steps)})")
    step = study.steps[name]
    trains = "stage" in step.info  # pretraining and instruction tuning: the shared loop, DDP or FSDP2
    if world_size > 1 and not trains:
        raise ConfigError(f"--step {name} runs in one process (only training steps use several), but this is one "
                          f"of {world_size} (WORLD_SIZE): run it without torchrun, or give its stage one GPU "
                          f"(executor.gpus_per_step.{name.split('/', 1)[0]}: 1)")
    # tokenizer, stores and decontamination run no model: they neither need the switch nor torch's import
    model_free = name in ("tokenizer", "decontam") or name.startswith("store/")
    with nullcontext() if model_free else flush_denormal():
        if not trains:
            study.execute(name, force=force, resume=True)
            return
        import torch.distributed as dist  # here: the tokenizer, stores and decontamination need neither (seconds saved)

        from codestage.train import parallel

        train_cfg = cfg.instruct.train if name.startswith("instruct/") else cfg.pretrain.train
        had_group = dist.is_initialized()
        world = parallel.setup(train_cfg.device)
        try:
            study.execute(name, force=force, resume=True, world=world)
        finally:
            parallel.shutdown(world, created=not had_group)


def plan_rows(config: Path, out: Path, *, executor: str | None, seeds_text: str | None, seed: int | None,
              verify: str = "quick", **flags: Any) -> tuple[str, list[tuple[str, ...]]]:
    """(executor kind, rows of step, key, state, resources, folder) for `codestage plan`."""
    from codestage.config import load_config
    from codestage.study.dispatch import check_executor, describe, plan_tasks, seed_studies, task_resources
    from codestage.study.executors import visible_gpus

    cfg = load_config(config)
    seeds = parse_seeds(seeds_text)
    if seed is not None:
        cfg.seed = seed
    exec_cfg = executor_config(cfg, **flags)
    kind = executor_kind(executor, exec_cfg)
    parts = seed_studies(cfg, out, seeds, console=console, progress=False, verify=verify)
    check_executor(exec_cfg, parts)
    tasks = {t.name: t for t in plan_tasks(parts)}
    gpus_here = len(visible_gpus()) if kind == "local" else 0
    rows = []
    states = {part.prefix: part.study.states() for part in parts}
    for part in parts:
        for name, s in part.study.steps.items():
            task = tasks.get(part.prefix + name)
            state = states[part.prefix][name]
            if task is not None and task.shared_from and not part.study.up_to_date(name):
                state = f"linked from {task.shared_from.prefix}{name}"
            res = describe(task_resources(exec_cfg, task), kind, gpus_here) if task else "—"
            rows.append((part.prefix + name, s.key[:12], state, res, str(s.out)))
    return kind, rows
