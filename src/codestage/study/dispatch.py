"""A study, or several seeds of it, as one graph of jobs for the executors (docs/cluster.md).

Every job runs one step in a process of its own, `python -m codestage.cli step CONFIG --out DIR
--step NAME --seed N`, which goes through `Study.execute`: keys, markers, reuse and resume are the
inline runner's, whichever executor runs the job.

Several seeds (`--seeds 0,1,2`) are one graph: seed N's steps live in DIR/seedN and its jobs are
named `seedN/STEP`. A step whose key leaves the seed out (tokenizer, stores, decontamination) is
made once, by the first seed, and linked into the other seeds' folders (`codestage.study.share`).

`--only` names steps by prefix (in a run of several seeds, `eval/NL` is every seed's, `seed1/eval`
only seed 1's) and brings in the steps they need that are not up to date.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console

from codestage.config import DEFAULT_GPUS_PER_STEP, ExecutorConfig, StudyConfig
from codestage.errors import ConfigError
from codestage.study.executors import Job, Resources, resources_for, stage_of
from codestage.study.runner import Study

# A job's cost for the scheduler's critical path (`Job.cost`): the rough work of a step of each stage
# against the others. Stage weights rather than each step's planned tokens, because only the ranking
# matters (which chain is longest, and which ready job is on it) and steps of one stage are alike
# within a study, while an evaluation's cost (generation, several tasks) has no token count to plan
# from. The ratios follow the steps' own seconds in the GPU study on H200s (bench/RESULTS.md:
# pretraining ~64 s, evaluation ~50 s, instruction tuning ~19 s, tokenizer and a store ~12 s); a
# link of a finished step (another seed's) costs next to nothing.
STAGE_COST = {"pretrain": 6.0, "eval": 4.0, "instruct": 2.0, "ladder": 2.0}
OTHER_COST, SHARE_COST = 1.0, 0.1


@dataclass
class SeedStudy:
    """One seed's study in a run: its folder and the prefix of its job names ("" for a lone seed)."""

    seed: int
    study: Study
    prefix: str = ""


@dataclass
class Task:
    """One job of the graph: a step of one seed's study (or a link to the first seed's folder)."""

    name: str
    part: SeedStudy
    step: str
    deps: tuple[str, ...]
    shared_from: SeedStudy | None = None
    forced: bool = False

    @property
    def key(self) -> str:
        return self.part.study.steps[self.step].key

    def done(self) -> bool:
        return self.part.study.up_to_date(self.step)


def seed_studies(cfg: StudyConfig, out: Path, seeds: list[int] | None, *, console: Console,
                 progress: bool = True, verify: str = "quick") -> list[SeedStudy]:
    """The study of each seed: `out` itself for one seed, `out`/seedN for `seeds`."""
    if not seeds:
        return [SeedStudy(cfg.seed, Study(cfg, out, console=console, progress=progress, verify=verify))]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {','.join(map(str, seeds))}: a seed is listed twice")
    parts = []
    for seed in seeds:
        if seed < 0:
            raise ConfigError(f"--seeds: {seed} is not a seed (>= 0)")
        part_cfg = cfg.model_copy(update={"seed": seed}, deep=True)
        parts.append(SeedStudy(seed, Study(part_cfg, Path(out) / f"seed{seed}", console=console, progress=progress,
                                                     verify=verify),
                               f"seed{seed}/"))
    return parts


def plan_tasks(parts: list[SeedStudy]) -> list[Task]:
    """Every step that does work (not the aliases), seed by seed in plan order."""
    first = parts[0]
    tasks = []
    for part in parts:
        for name, step in part.study.steps.items():
            if step.alias_of:
                continue
            other = first.study.steps.get(name)
            if part is not first and other is not None and other.alias_of is None and other.key == step.key:
                tasks.append(Task(part.prefix + name, part, name, (first.prefix + name,), shared_from=first))
            else:
                tasks.append(Task(part.prefix + name, part, name, tuple(part.prefix + d for d in step.deps)))
    return tasks


def select(parts: list[SeedStudy], only: list[str] | None, *, force: bool = False
           ) -> tuple[list[Task], dict[str, list[str]]]:
    """The tasks to run and, per seed prefix, the steps selected (aliases too, for the report).

    Without `only`: everything. With it: the steps whose name (or job name `seedN/STEP`) starts with
    one of `only`, and every step they need that is not up to date. `force` marks the selected ones
    to run from the start (not what they need, which runs only when it is not up to date anyway).
    """
    tasks = plan_tasks(parts)
    by_name = {t.name: t for t in tasks}
    chosen: dict[str, list[str]] = {}
    wanted: list[str] = []
    for part in parts:
        names = [n for n in part.study.steps
                 if not only or any(n.startswith(o) or (part.prefix + n).startswith(o) for o in only)]
        chosen[part.prefix] = names
        for n in names:
            wanted.append(part.prefix + (part.study.steps[n].alias_of or n))
    if only and not wanted:
        steps = ", ".join(t.name for t in tasks)
        raise ConfigError(f"--only {' '.join(only)}: no step matches; steps are {steps}")
    for name in wanted:
        by_name[name].forced = force
    keep: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo += [d for d in by_name[name].deps if d not in keep and not by_name[d].done()]
    for part in parts:  # what was brought in is part of the seed's run (its report's step table too)
        extra = [t.step for t in tasks if t.part is part and t.name in keep and t.step not in chosen[part.prefix]]
        chosen[part.prefix] = [n for n in part.study.steps if n in chosen[part.prefix] or n in extra]
    # a step's inputs left out of the graph are up to date: the job waits for none of them
    return [dataclasses.replace(t, deps=tuple(d for d in t.deps if d in keep)) for t in tasks if t.name in keep], chosen


def task_cost(task: Task) -> float:
    """The task's `Job.cost` (STAGE_COST)."""
    return SHARE_COST if task.shared_from else STAGE_COST.get(stage_of(task.step), OTHER_COST)


def check_executor(cfg: ExecutorConfig, parts: list[SeedStudy]) -> None:
    """Stages the executor section names must exist; only training stages may have several GPUs."""
    steps = [s for p in parts for s in p.study.steps.values()]
    stages = {stage_of(s.name) for s in steps}
    training = {stage_of(s.name) for s in steps if "stage" in s.info}  # trained through the shared loop
    given = {f"gpus_per_step.{s}": s for s in cfg.gpus_per_step if s not in DEFAULT_GPUS_PER_STEP}
    given |= {f"steps_per_gpu.{s}": s for s in cfg.steps_per_gpu}
    given |= {f"slurm.stages.{s}": s for s in cfg.slurm.stages}
    for field, stage in given.items():
        if stage not in stages | set(DEFAULT_GPUS_PER_STEP):
            raise ConfigError(f"executor.{field}: no step of this study has the stage {stage!r} "
                              f"(stages: {', '.join(sorted(stages))})")
    for stage, gpus in cfg.gpus_per_step.items():
        if gpus > 1 and stage in stages and stage not in training:
            raise ConfigError(f"executor.gpus_per_step.{stage} = {gpus}: {stage} steps run in one process; only "
                              f"training steps ({', '.join(sorted(training)) or 'none here'}) use several GPUs")


def task_resources(cfg: ExecutorConfig, task: Task) -> Resources:
    res = resources_for(cfg, task.step)
    if task.shared_from:  # a link of finished files: one CPU, briefly
        res = dataclasses.replace(res, gpus=0, nodes=1, gpu_share=1, cpus=1, mem_gb=None)
    return res


def to_job(task: Task, cfg: ExecutorConfig, *, config: Path, full_eval: bool, rerun: list[str],
           python: str = sys.executable) -> Job:
    """The executor's job for a task: its command, inputs, resources, retries and rerun command."""
    part = task.part
    if task.shared_from:
        src = task.shared_from.study.steps[task.step].out
        argv = [python, "-m", "codestage.study.share", str(src.resolve()),
                str(part.study.steps[task.step].out.resolve()), task.key]
    else:
        argv = [python, "-m", "codestage.cli", "step", str(Path(config).resolve()), "--out",
                str(part.study.out.resolve()), "--step", task.step, "--seed", str(part.seed), "--quiet"]
        argv += ["--full-eval"] if full_eval else []
    forced = task.forced
    is_done: Callable[[], bool] = (lambda: False) if forced else task.done
    prepare = (lambda: part.study.discard(task.step)) if forced else None
    return Job(task.name, tuple(argv), deps=task.deps, resources=task_resources(cfg, task),
               env={"PYTHONUNBUFFERED": "1"}, retries=cfg.retries, key=task.key,
               rerun=shlex.join([*rerun, "--only", task.name]), is_done=is_done, prepare=prepare,
               cost=task_cost(task))


def describe(res: Resources, kind: str, gpus_here: int = 1) -> str:
    """A step's resources under an executor, for `codestage plan` (`gpus_here`: GPUs the local
    executor sees; without any, every step runs as a CPU process)."""
    if kind == "inline":
        return "this process"
    if kind == "local":
        if not res.gpus or not gpus_here:
            return "CPU"
        if res.gpu_share > 1:
            return f"1/{res.gpu_share} GPU"
        return f"{res.gpus} GPUs, torchrun" if res.gpus > 1 else "1 GPU"
    gpus = ""
    if res.gpus:
        gpus = f"{res.nodes} nodes x {res.gpus_per_node} GPUs, " if res.nodes > 1 else f"{res.gpus} GPU, "
    mem = f", {res.mem_gb:g} GB" if res.mem_gb else ""
    where = "/".join(x for x in (res.partition, res.account, res.qos) if x)
    return f"{gpus}{res.cpus} CPU{mem}, {res.time_min} min" + (f", {where}" if where else "")


__all__ = ["SeedStudy", "Task", "check_executor", "describe", "plan_tasks", "seed_studies", "select", "task_cost",
           "task_resources", "to_job"]
