"""How a study's steps get run: the graph scheduler and the engines behind it.

- `inline`: the coordinator runs each step itself, one after another (the study runner's own loop;
  no engine here).
- `local` (`LocalEngine`): each step a process on this machine, with GPUs of its own, side by side.
- `slurm` (`SlurmEngine`): each step a Slurm job, through submitit; Slurm holds a job until its
  inputs succeeded, so a run can submit everything and leave (`detach`).

A caller builds `Job`s (a step's command line, the steps it reads, its `Resources`), holds the
output folder's lock and calls `run_jobs`:

    with coordinator_lock(out):
        summary = run_jobs(jobs, make_engine("local", cfg), out)
    print(summary.render())

Nothing here imports training or evaluation code: a job is a command line.
"""

from __future__ import annotations

from codestage.errors import ConfigError
from codestage.study.executors.config import (ExecutorConfig, SlurmOptions, SlurmStageOptions, default_kind,
                                              parse_slurm_time, resources_for, stage_of)
from codestage.study.executors.engine import Engine, ExecutorError, Record, Status
from codestage.study.executors.jobs import Job, Resources
from codestage.study.executors.local import LocalEngine, visible_gpus
from codestage.study.executors.lock import OutputLocked, coordinator_lock
from codestage.study.executors.runjob import launch_command
from codestage.study.executors.scheduler import JobOutcome, RunSummary, run_jobs
from codestage.study.executors.slurm import SlurmEngine


def make_engine(kind: str, cfg: ExecutorConfig | None = None) -> Engine:
    """The engine for `kind` ("local" or "slurm"), set up from the study's `executor:` section."""
    cfg = cfg or ExecutorConfig()
    if kind == "local":
        return LocalEngine(max_parallel=cfg.max_parallel, steps_per_gpu=max(cfg.steps_per_gpu.values(), default=1),
                           over_for_critical=True)
    if kind == "slurm":
        return SlurmEngine(max_requeues=cfg.slurm.max_requeues, signal_delay_s=cfg.slurm.signal_delay_s)
    raise ConfigError(f"executor {kind!r}: engines are local and slurm (inline steps run in the coordinator itself)")


__all__ = [
    "Engine", "ExecutorConfig", "ExecutorError", "Job", "JobOutcome", "LocalEngine", "OutputLocked", "Record",
    "Resources", "RunSummary", "SlurmEngine", "SlurmOptions", "SlurmStageOptions", "Status", "coordinator_lock",
    "default_kind", "launch_command", "make_engine", "parse_slurm_time", "resources_for", "run_jobs", "stage_of",
    "visible_gpus",
]
