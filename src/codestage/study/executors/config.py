"""What one step asks for, from the study's `executor:` section (`codestage.config.ExecutorConfig`:
which engine, GPUs per stage, GPUs shared by several steps, the Slurm options with per-stage
overrides).

A step's stage is the first part of its name: `pretrain/NL` -> `pretrain`, `eval/CC` -> `eval`,
`store/web` -> `store`, `tokenizer` -> `tokenizer`.
"""

from __future__ import annotations

import math

from codestage.config import ExecutorConfig, SlurmOptions, SlurmStageOptions, parse_slurm_time
from codestage.errors import ConfigError
from codestage.study.executors.jobs import Resources


def stage_of(step: str) -> str:
    """The stage whose resources a step gets: its name's first part (`pretrain/NL` -> pretrain);
    a ladder's small runs and their evaluations are the stage `ladder`, its points and fit CPU work."""
    parts = step.split("/")
    if parts[0] == "ladder" and len(parts) > 2:
        return "ladder"
    return parts[0] if parts[0] != "ladder" else "ladder_fit"


def resources_for(cfg: ExecutorConfig, step: str) -> Resources:
    """What one step asks for, by its stage."""
    stage = stage_of(step)
    gpus = cfg.gpus_per_step.get(stage, 0)
    s = cfg.slurm
    per_node = s.gpus_per_node
    nodes = max(1, math.ceil(gpus / per_node))
    if nodes > 1 and gpus % per_node:
        raise ConfigError(f"executor.gpus_per_step.{stage} = {gpus} spans several nodes: make it a multiple of "
                          f"executor.slurm.gpus_per_node ({per_node})")
    gpn = gpus // nodes
    over = s.stages.get(stage, SlurmStageOptions())
    time = over.time if over.time is not None else s.time
    where = f"executor.slurm{'.stages.' + stage if over.time is not None else ''}.time"
    return Resources(
        gpus=gpus, nodes=nodes, gpu_share=cfg.steps_per_gpu.get(stage, 1) if gpus == 1 else 1,
        cpus=gpn * s.cpus_per_gpu if gpus else s.cpus_per_step,
        mem_gb=(gpn * s.mem_per_gpu_gb if s.mem_per_gpu_gb else None) if gpus else s.mem_per_step_gb,
        time_min=parse_slurm_time(time, where),
        partition=over.partition or s.partition, account=over.account or s.account, qos=over.qos or s.qos,
        sbatch={**s.sbatch, **over.sbatch}, setup=tuple(s.setup))


def default_kind() -> str:
    """`local` where this machine shows GPUs (so that a study uses all of them without flags), else
    `inline` (one process, one step after another, as codestage always ran)."""
    from codestage.study.executors.local import visible_gpus

    return "local" if visible_gpus() else "inline"


__all__ = ["ExecutorConfig", "SlurmOptions", "SlurmStageOptions", "default_kind", "parse_slurm_time", "resources_for",
           "stage_of"]
