"""What the scheduler runs: a job is a command, its inputs (other jobs) and the resources it needs.

A job is any command line: for a study step, `python -m codestage.cli step CONFIG --out DIR --step
NAME`. The command is the same whatever the engine; an engine only decides where it runs and wraps
it in torchrun where it has several GPUs (`codestage.study.executors.runjob`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from codestage.errors import ConfigError
from codestage.hashing import sha256_json

_NAME = re.compile(r"^[A-Za-z0-9_.+=-]+(/[A-Za-z0-9_.+=-]+)*$")


@dataclass(frozen=True)
class Resources:
    """What one job asks for. `gpus` counts all GPUs of the job (`nodes` x GPUs per node); cpus and
    memory are per node. `gpu_share`: a one-GPU job may share its GPU with this many jobs in all
    (the local engine packs small steps side by side; a Slurm job has its GPUs to itself). The Slurm
    fields are ignored by the local engine."""

    gpus: int = 0
    nodes: int = 1
    gpu_share: int = 1
    cpus: int = 1
    mem_gb: float | None = None
    time_min: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch: Mapping[str, Any] = field(default_factory=dict)  # any other sbatch option: {"constraint": "h100"}
    setup: tuple[str, ...] = ()  # shell lines run before the job in its Slurm script (module load ...)

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.nodes < 1 or self.cpus < 1:
            raise ConfigError(f"resources: gpus >= 0, nodes >= 1 and cpus >= 1 are required, got {self}")
        if self.gpu_share < 1 or (self.gpu_share > 1 and self.gpus != 1):
            raise ConfigError(f"resources: gpu_share >= 1, and > 1 only for a job of one GPU, got {self}")
        if self.gpus % self.nodes:
            raise ConfigError(f"resources: {self.gpus} GPUs do not split evenly over {self.nodes} nodes")

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes


@dataclass(frozen=True)
class Job:
    """One node of the graph.

    `deps` name the jobs whose outputs this one reads: it starts when they have succeeded and never
    runs if one of them failed. `retries` is how many times a failed run is started again (a step
    resumes from its last checkpoint by itself). `key` is the content key of what the job computes
    (a study step's key): with the command it decides whether a job recorded by an earlier run is the
    same job. `is_done`, where given, says whether the job's outputs already exist; a job that is done
    is not run again. `rerun` is the command a user types to run the job again (shown in the summary).
    `prepare`, where given, runs in the coordinator right before the job is submitted (a forced
    step's old outputs are removed there, so that its retries resume instead of starting over).
    `cost` is a rough estimate of the job's work against the other jobs' (any unit, the same for
    all): the scheduler starts first the jobs with the longest chain of cost behind them and lets
    the jobs on that chain past a full GPU (`codestage.study.executors.scheduler`).
    """

    name: str
    argv: tuple[str, ...]
    deps: tuple[str, ...] = ()
    resources: Resources = Resources()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    log: Path | None = None
    retries: int = 0
    key: str = ""
    rerun: str | None = None
    is_done: Callable[[], bool] | None = field(default=None, compare=False)
    prepare: Callable[[], None] | None = field(default=None, compare=False)
    cost: float = 1.0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or ".." in self.name.split("/"):
            raise ConfigError(f"job name {self.name!r}: use letters, digits, _ . + = - and / between parts")
        if not self.argv:
            raise ConfigError(f"job {self.name}: empty command")
        if self.retries < 0:
            raise ConfigError(f"job {self.name}: retries must be >= 0, got {self.retries}")
        if not self.cost >= 0:
            raise ConfigError(f"job {self.name}: cost must be >= 0, got {self.cost}")
        object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))
        object.__setattr__(self, "deps", tuple(self.deps))

    def fingerprint(self) -> str:
        """Identity of the work: the same command, environment, folder and content key."""
        return sha256_json({"argv": self.argv, "env": dict(self.env), "cwd": str(self.cwd or ""), "key": self.key})

    def rerun_command(self) -> str:
        if self.rerun:
            return self.rerun
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        cd = f"cd {shlex.quote(str(self.cwd))} && " if self.cwd else ""
        return cd + (env + " " if env else "") + shlex.join(self.argv)


def check_graph(jobs: list[Job]) -> None:
    """Unique names, dependencies that exist and come first (the list is in an order that runs)."""
    seen: set[str] = set()
    names = {j.name for j in jobs}
    for job in jobs:
        if job.name in seen:
            raise ConfigError(f"job {job.name} is listed twice")
        for dep in job.deps:
            if dep not in names:
                raise ConfigError(f"job {job.name} depends on {dep}, which is not in the graph "
                                  "(leave out dependencies that are already done)")
            if dep not in seen:
                raise ConfigError(f"job {job.name} depends on {dep}, which comes after it: list jobs in an "
                                  "order where inputs come first (a cycle cannot be ordered)")
        seen.add(job.name)
