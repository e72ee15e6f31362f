"""The `executor:` section of a study: which engine, how many GPUs each stage's steps get, and the
Slurm options (partition, account, time...), with per-stage overrides.

A step's stage is the first part of its name: `pretrain/NL` -> `pretrain`, `eval/CC` -> `eval`,
`store/web` -> `store`, `tokenizer` -> `tokenizer`.
"""

from __future__ import annotations

import math
import re
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from codestage.errors import ConfigError
from codestage.study.executors.jobs import Resources

SbatchValue = Union[str, int, bool]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlurmStageOptions(_Strict):
    """What differs for one stage's steps (e.g. evaluation on a cheaper partition, for less time)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = Field(None, description="Slurm's time format: MM, HH:MM:SS, D-HH:MM:SS")
    sbatch: dict[str, SbatchValue] = Field(default_factory=dict)


class SlurmOptions(_Strict):
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = Field("24:00:00", description="time limit of one step's job (MM, HH:MM:SS, D-HH:MM:SS)")
    gpus_per_node: int = Field(8, ge=1, description="a step asking more GPUs spans gpus / gpus_per_node nodes")
    cpus_per_gpu: int = Field(8, ge=1)
    mem_per_gpu_gb: float | None = Field(None, gt=0, description="none: the partition's default")
    cpus_per_step: int = Field(4, ge=1, description="CPUs of a step without GPUs (tokenizer, stores)")
    mem_per_step_gb: float | None = Field(None, gt=0)
    sbatch: dict[str, SbatchValue] = Field(default_factory=dict, description="any other sbatch option, every step")
    setup: list[str] = Field(default_factory=list, description="shell lines before each job (module load ...)")
    stages: dict[str, SlurmStageOptions] = Field(default_factory=dict)
    max_requeues: int = Field(3, ge=0, description="requeues of a job that reached its time limit")
    signal_delay_s: int = Field(90, ge=10, description="Slurm warns a job this long before its limit")


class ExecutorConfig(_Strict):
    """How a study's steps run. `kind`: inline (in the coordinator, one after another), local (each
    step a process on this machine, side by side on its GPUs) or slurm (each step a Slurm job);
    none: local where GPUs are visible, else inline."""

    kind: Literal["inline", "local", "slurm"] | None = None
    retries: int = Field(1, ge=0, description="how many times a failed step is started again")
    max_parallel: int | None = Field(None, ge=1, description="local: at most this many steps at once")
    gpus_per_step: dict[str, int] = Field(default_factory=lambda: {"pretrain": 1, "instruct": 1, "eval": 1},
                                          description="GPUs of each stage's steps; stages not named get none")
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)

    def resources_for(self, step: str) -> Resources:
        """What one step asks for, by its stage."""
        stage = step.split("/", 1)[0]
        gpus = self.gpus_per_step.get(stage, 0)
        if gpus < 0:
            raise ConfigError(f"executor.gpus_per_step.{stage}: must be >= 0, got {gpus}")
        s = self.slurm
        per_node = s.gpus_per_node
        nodes = max(1, math.ceil(gpus / per_node))
        if nodes > 1 and gpus % per_node:
            raise ConfigError(f"executor.gpus_per_step.{stage} = {gpus} spans several nodes: make it a multiple of "
                              f"executor.slurm.gpus_per_node ({per_node})")
        gpn = gpus // nodes
        over = s.stages.get(stage, SlurmStageOptions())
        return Resources(
            gpus=gpus, nodes=nodes,
            cpus=gpn * s.cpus_per_gpu if gpus else s.cpus_per_step,
            mem_gb=(gpn * s.mem_per_gpu_gb if s.mem_per_gpu_gb else None) if gpus else s.mem_per_step_gb,
            time_min=parse_slurm_time(over.time or s.time, f"executor.slurm{'.stages.' + stage if over.time else ''}.time"),
            partition=over.partition or s.partition, account=over.account or s.account, qos=over.qos or s.qos,
            sbatch={**s.sbatch, **over.sbatch}, setup=tuple(s.setup))


def default_kind() -> str:
    """`local` where this machine shows GPUs, else `inline` (today's behaviour)."""
    from codestage.study.executors.local import visible_gpus

    return "local" if visible_gpus() else "inline"


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_slurm_time(text: str, where: str = "time") -> int:
    """Minutes (rounded up) of a time in sbatch's formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    m = _TIME.match(str(text).strip())
    if not m:
        raise ConfigError(f"{where}: {text!r} is not a Slurm time (MM, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:  # MM
        seconds = int(a) * 60
    if seconds <= 0:
        raise ConfigError(f"{where}: {text!r} is no time at all")
    return math.ceil(seconds / 60)
