"""Every job a Slurm job, through submitit.

submitit writes the sbatch script (partition, account, time, GPUs, CPUs, memory, nodes), runs our
Python callable inside the allocation under `srun` (one task per node) and, when Slurm warns of a
time limit or preemption (USR2, `signal_delay_s` before), calls the callable's `checkpoint` and
requeues the job under the same id. The callable stops the step's command and lets it run again:
a step is content-keyed and resumes from its last checkpoint by itself.

Dependencies are Slurm's own (`--dependency=afterok:ID`, `--kill-on-invalid-dep=yes`): the whole
graph can be submitted at once and the coordinator may leave (`detach`); a failed job makes Slurm
cancel what waits on it. Retries happen inside the job's allocation (`runjob`), so they keep the
job id the dependants wait on.

State comes from `squeue --states=all` (no accounting database needed; a job stays listed for
MinJobAge after it ends) and from the result file the job writes. Each job carries the comment
`codestage:RUN_ID`, so a submission cut off before its id was recorded is still found.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from codestage.errors import ConfigError
from codestage.study.executors.engine import ExecutorError, Record, Status
from codestage.study.executors.jobs import Job
from codestage.study.executors.runjob import JobSpec, command_exited, run_job, signal_command

DEFAULT_TIME_MIN = 24 * 60
_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "STOPPED", "PREEMPTED"}
_RUNNING = {"RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}
_RAN = {"COMPLETED", "FAILED"}  # states in which the job's own code ran to its end and wrote its result
PREEMPTED_WAIT_S = 120.0  # a preempted job is requeued; one still PREEMPTED after this was not


class SlurmStep:
    """The callable submitit runs in each task of the allocation (one per node)."""

    def __init__(self, spec: JobSpec, stop_grace_s: float) -> None:
        self.spec = spec
        self.stop_grace_s = stop_grace_s

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        rc = run_job(self.spec, node_rank=env.node, hosts=env.hostnames, rdzv_id=str(env.job_id), ignore_usr2=True)
        if rc != 0:  # a failed Slurm job: Slurm then cancels the jobs that wait on it
            raise RuntimeError(f"{self.spec.name} failed with exit code {rc}; log {self.spec.log}")
        return rc

    def checkpoint(self) -> Any:
        """Time limit or preemption (called in submitit's signal handler, `signal_delay_s` before the
        end): ask the command to stop, give it time to write its checkpoint, then requeue; the step
        resumes from that checkpoint when the job runs again."""
        import submitit

        signal_command(signal.SIGTERM)  # the training loop stops after its current step and checkpoints
        command_exited(self.stop_grace_s)
        return submitit.helpers.DelayedSubmission(self)


def _squeue() -> dict[str, tuple[str, str, str]]:
    """This user's jobs, finished ones included: {job id: (state, reason, comment)}."""
    try:
        out = subprocess.run(["squeue", "--me", "--states=all", "-h", "-o", "%i|%T|%r|%k"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ExecutorError(f"squeue failed: {getattr(e, 'stderr', '') or e}") from e
    jobs = {}
    for line in out.splitlines():
        parts = line.split("|", 3)
        if len(parts) == 4:
            jobs[parts[0]] = (parts[1], parts[2], parts[3])
    return jobs


def _status(rec: Record, queue: dict[str, tuple[str, str, str]], preempted_since: dict[str, float]) -> Status:
    if rec.id is None:  # submitted, but the coordinator died before it wrote the id down: find it by comment
        rec.id = next((i for i, (_, _, c) in queue.items() if c == f"codestage:{rec.run_id}"), None)
        if rec.id is None:
            return Status("ended", "never reached the queue", expect_result=False)
    if rec.id not in queue:
        return Status("ended", "no longer in the queue")
    state, reason, _ = queue[rec.id]
    detail = f"{state} ({reason})" if reason and reason != "None" else state
    if state == "PREEMPTED":  # requeued soon, unless the cluster cancels preempted jobs
        since = preempted_since.setdefault(rec.id, time.time())
        if time.time() - since > PREEMPTED_WAIT_S:
            return Status("ended", detail, expect_result=False)
    else:
        preempted_since.pop(rec.id, None)
    if state in _QUEUED:
        return Status("queued", detail)
    if state in _RUNNING:
        return Status("running", detail)
    return Status("ended", detail, expect_result=state in _RAN)


def record_status(records: list[Record]) -> dict[str, Status]:
    queue = _squeue()
    return {r.name: _status(r, queue, {}) for r in records}


def sbatch_parameters(job: Job, *, after: list[str], run_id: str, signal_delay_s: int) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for one job."""
    r = job.resources
    p: dict[str, Any] = {
        "job_name": job.name, "time": r.time_min or DEFAULT_TIME_MIN, "nodes": r.nodes, "ntasks_per_node": 1,
        "cpus_per_task": r.cpus, "stderr_to_stdout": True, "signal_delay_s": signal_delay_s,
        "comment": f"codestage:{run_id}",
        "additional_parameters": {"kill-on-invalid-dep": "yes", "requeue": True, **dict(r.sbatch)},
    }
    if r.gpus:
        p["gpus_per_node"] = r.gpus_per_node
    if r.mem_gb:
        p["mem"] = f"{int(r.mem_gb * 1024)}M"
    for key in ("partition", "account", "qos"):
        if getattr(r, key):
            p[key] = getattr(r, key)
    if r.setup:
        p["setup"] = list(r.setup)
    if after:
        p["dependency"] = "afterok:" + ":".join(after)
    return p


class SlurmEngine:
    """Submits each job with sbatch (through submitit); Slurm holds it until its inputs succeeded.

    `max_requeues`: how many times a job that reached its time limit is requeued (preemptions do not
    count). `signal_delay_s`: how long before the limit Slurm warns the job. `python`: the command
    that runs Python on the compute nodes (default: this interpreter, which must be visible there).
    """

    name = "slurm"
    native_deps = True
    stop_on_interrupt = False
    result_grace_s = 15.0  # a result written on a compute node may show up late on a network file system

    def __init__(self, *, poll_s: float = 5.0, max_requeues: int = 3, signal_delay_s: int = 90,
                 python: str | None = None) -> None:
        self.poll_s = poll_s
        self.max_requeues = max_requeues
        self.signal_delay_s = signal_delay_s
        self.python = python
        self._preempted_since: dict[str, float] = {}

    def check(self, job: Job) -> None:
        if shutil.which("sbatch") is None:
            raise ConfigError("the slurm executor needs Slurm's commands (sbatch, squeue, scancel) on PATH")

    def can_start(self, job: Job, urgent: bool = False) -> bool:
        return True  # Slurm queues the job itself

    def submit(self, job: Job, spec: JobSpec, spec_path: Path, after: list[Record]) -> tuple[str, dict[str, Any]]:
        import submitit

        spec.save(spec_path)
        folder = spec_path.parents[job.name.count("/")] / "slurm" / "%j"  # DIR/.executor/slurm/JOBID/
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.max_requeues, python=self.python)
        ex.update_parameters(**sbatch_parameters(job, after=[a.id for a in after if a.id], run_id=spec.run_id,
                                                 signal_delay_s=self.signal_delay_s))
        try:
            sjob = ex.submit(SlurmStep(spec, stop_grace_s=max(5.0, self.signal_delay_s - 20.0)))
        except (subprocess.CalledProcessError, submitit.core.utils.FailedSubmissionError,
                submitit.core.utils.UncompletedJobError) as e:  # submitit reports sbatch's own error as FailedJobError
            detail = getattr(e, "output", b"") or b""
            detail = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
            raise ExecutorError(f"sbatch refused job {job.name}: {str(e).strip()} {detail.strip()}".strip()) from e
        return str(sjob.job_id), {"slurm_log": str(sjob.paths.stdout).replace("%t", "0")}

    def poll(self, records: list[Record]) -> dict[str, Status]:
        queue = _squeue()
        return {r.name: _status(r, queue, self._preempted_since) for r in records}

    def adopt(self, record: Record) -> None:
        pass  # Slurm keeps the job; nothing to reserve here

    def cancel(self, record: Record) -> None:
        if record.id:
            subprocess.run(["scancel", record.id], capture_output=True, timeout=60)

    def cancel_hint(self, records: list[Record]) -> str:
        return "scancel " + " ".join(str(r.id) for r in records)
