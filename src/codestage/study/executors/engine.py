"""The small interface between the graph scheduler and an engine that runs jobs (local, Slurm), and
the record each submitted job leaves in DIR/.executor/ so that a new coordinator can find it.

An engine submits a job, reports whether it is still queued, running or has ended, and cancels it.
Whether an ended job succeeded is read from the result file the job itself writes (`runjob`), the
same way for every engine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from codestage.atomic import write_json
from codestage.errors import CodestageError
from codestage.study.executors.jobs import Job
from codestage.study.executors.runjob import JobSpec

STATE_DIR = ".executor"


class ExecutorError(CodestageError):
    """A job graph cannot be run as asked (a job from an earlier run is in the way, Slurm refused...)."""


@dataclass
class Record:
    """One submission of a job, saved before and after it is handed to the engine."""

    name: str
    fingerprint: str
    engine: str
    run_id: str
    log: str
    result: str
    submitted: float
    id: str | None = None  # the process id (local) or Slurm job id; None while being submitted
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, state_dir: Path) -> None:
        write_json(record_path(state_dir, self.name), asdict(self))

    @classmethod
    def load(cls, state_dir: Path, name: str) -> "Record | None":
        path = record_path(state_dir, name)
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, TypeError) as e:
            raise ExecutorError(f"{path}: unreadable job record ({e}); delete it if no job of that run is left") from e

    def path(self) -> Path:
        """This record's file (next to the result file, in DIR/.executor/)."""
        return Path(self.result[: -len(".result.json")] + ".json")

    def read_result(self) -> dict[str, Any] | None:
        """The job's result, if this submission (same run id) wrote one."""
        try:
            res = json.loads(Path(self.result).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return res if res.get("run_id") == self.run_id else None


def record_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.json"


@dataclass(frozen=True)
class Status:
    state: Literal["queued", "running", "ended"]
    detail: str = ""  # the engine's own words: "PENDING (Dependency)", "exit 1", "not running"
    expect_result: bool = True  # ended after running the job's code, so a result file should appear


class Engine(Protocol):
    """How jobs get run. `native_deps`: the engine itself holds a job until the jobs it depends on
    have succeeded (Slurm's afterok), so the whole graph can be submitted at once (`detach`).
    `stop_on_interrupt`: Ctrl-C of the coordinator stops the running jobs (local processes) rather
    than leaving them queued (Slurm). `poll_s`: seconds between two polls. `result_grace_s`: how
    long a job that ended may take to show its result file (a network file system can be late)."""

    name: str
    native_deps: bool
    stop_on_interrupt: bool
    poll_s: float
    result_grace_s: float

    def check(self, job: Job) -> None:
        """Raise ConfigError if the job can never run here (more GPUs than exist, several nodes...)."""

    def can_start(self, job: Job, urgent: bool = False) -> bool:
        """Whether resources are free to start it now. `urgent`: the job is on the critical path and
        may take a place past the engine's limits where it has one (local: one step over
        `steps_per_gpu` on a GPU)."""

    def submit(self, job: Job, spec: JobSpec, spec_path: Path, after: list[Record]) -> tuple[str, dict[str, Any]]:
        """Place the job (its GPUs go into `spec`), save `spec` to `spec_path`, start or queue it (after
        the submissions in `after` succeeded, where the engine holds jobs itself); return its id and
        what the record must keep to find it again."""

    def poll(self, records: list[Record]) -> dict[str, Status]:
        """The status of each record's job, by job name."""

    def adopt(self, record: Record) -> None:
        """Take over a job an earlier coordinator submitted and that is still queued or running."""

    def cancel(self, record: Record) -> None:
        """Stop the job (its whole process tree / its Slurm job)."""

    def cancel_hint(self, records: list[Record]) -> str:
        """The shell command that stops these jobs, for messages."""
