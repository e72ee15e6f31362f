"""Jobs as processes on this machine, each with GPUs of its own, as many at a time as GPUs allow.

Plain subprocesses rather than submitit's LocalExecutor: that one runs pickled Python functions
with a timeout and cannot find its jobs again after the coordinator dies. Here every job is
`python -m codestage.study.executors SPEC` (`runjob`) in a session of its own: it gets its GPUs through
CUDA_VISIBLE_DEVICES, outlives a killed coordinator (the next one finds it by pid, start time and
boot id, and waits for it), and is stopped as a whole process tree.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

from codestage.errors import ConfigError
from codestage.study.executors.engine import ExecutorError, Record, Status
from codestage.study.executors.jobs import Job
from codestage.study.executors.runjob import STOP_GRACE_S, JobSpec


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES where set, else every device torch sees."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [d.strip() for d in cvd.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch  # only here: the executors must not pull torch in at import time

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch / no driver: no GPU
        return []


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """The process's start time since boot (field 22 of /proc/PID/stat): with the pid and boot id
    it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(rec: Record) -> bool:
    if rec.id is None:
        return False
    return (rec.extra.get("boot") == _boot_id() and rec.extra.get("start") is not None
            and _start_ticks(int(rec.id)) == rec.extra["start"])


def record_status(records: list[Record]) -> dict[str, Status]:
    """Status of jobs started by any local coordinator (this machine's processes only)."""
    out = {}
    for rec in records:
        if rec.extra.get("host") not in (None, socket.gethostname()):
            out[rec.name] = Status("running", f"on host {rec.extra['host']}, which this machine cannot check")
        else:
            out[rec.name] = Status("running", f"pid {rec.id}") if _alive(rec) else Status("ended", "process gone")
    return out


@dataclass
class _Running:
    devices: list[str]
    share: int = 1  # jobs that may share each of these GPUs (1: the GPUs are the job's alone)
    proc: subprocess.Popen | None = None  # None: adopted from an earlier coordinator


class LocalEngine:
    """Runs jobs side by side on this machine.

    `devices`: the GPU ids to hand out (default: the visible ones). A job asking G GPUs gets G of
    them in CUDA_VISIBLE_DEVICES, under `torchrun --standalone --nproc-per-node G` where G > 1. A
    one-GPU job whose resources allow `gpu_share` k > 1 takes 1/k of a GPU: up to k such jobs run on
    one GPU, each placed on the least-loaded GPU with room (ties in turn), so small steps spread over
    all GPUs. `max_parallel`: at most this many jobs at once (default: GPUs x `steps_per_gpu`, or 1
    without GPUs). On a machine without GPUs, jobs that ask for GPUs run as one CPU process each, as
    `inline` would.

    `over_for_critical`: an urgent job (on the critical path, `can_start(job, urgent=True)`) that
    shares a GPU may start on a GPU that is full: one share over its limit, at most one such job per
    GPU (so beyond `max_parallel` by at most the number of GPUs). A job with whole GPUs, or without
    GPUs, never goes over. Off by default: a graph of equal independent jobs (a ladder's runs) has
    no critical path to protect, and there every job would count as urgent.
    """

    name = "local"
    native_deps = False
    stop_on_interrupt = True
    poll_s = 0.2
    result_grace_s = 0.0

    def __init__(self, devices: Sequence[str | int] | None = None, max_parallel: int | None = None,
                 python: str = sys.executable, steps_per_gpu: int = 1, over_for_critical: bool = False) -> None:
        self.devices = [str(d) for d in (visible_gpus() if devices is None else devices)]
        if max_parallel is not None and max_parallel < 1:
            raise ConfigError(f"max_parallel must be >= 1, got {max_parallel}")
        self.max_parallel = max_parallel or max(1, len(self.devices) * steps_per_gpu)
        self.python = python
        self.over_for_critical = over_for_critical
        self._load = {d: Fraction(0) for d in self.devices}  # the share of each GPU that running jobs hold
        self._turn = 0  # where the next search for a GPU starts (round robin among equally loaded ones)
        self._running: dict[str, _Running] = {}

    def _gpus(self, job: Job) -> int:
        return job.resources.gpus if self.devices else 0

    def in_use(self) -> dict[str, Fraction]:
        """The share of each GPU held by running jobs (GPUs held by none left out)."""
        return {d: x for d, x in self._load.items() if x}

    def check(self, job: Job) -> None:
        r = job.resources
        if r.nodes > 1:
            raise ConfigError(f"job {job.name} asks for {r.nodes} nodes; the local executor uses this machine only "
                              "(run it with the slurm executor)")
        if self.devices and r.gpus > len(self.devices):
            raise ConfigError(f"job {job.name} asks for {r.gpus} GPUs; this machine has {len(self.devices)} "
                              f"visible ({','.join(self.devices)}): lower gpus_per_step for its stage")

    def _shared(self, job: Job) -> bool:
        return self._gpus(job) == 1 and job.resources.gpu_share > 1

    def _place(self, job: Job, urgent: bool = False) -> list[str] | None:
        """The GPUs the job would get now, or None if they are not free. An urgent shared job may
        fill a GPU one share past full (a GPU already past full takes no more)."""
        g = self._gpus(job)
        if g == 0:
            return []
        n = len(self.devices)
        in_turn = [self.devices[(self._turn + i) % n] for i in range(n)]
        if self._shared(job):
            over = Fraction(1, job.resources.gpu_share) if urgent else Fraction(0)
            room = [d for d in in_turn if self._load[d] + Fraction(1, job.resources.gpu_share) <= 1 + over]
            return [min(room, key=lambda d: self._load[d])] if room else None  # min keeps the first of equals
        idle = [d for d in in_turn if self._load[d] == 0]
        return idle[:g] if len(idle) >= g else None

    def can_start(self, job: Job, urgent: bool = False) -> bool:
        urgent = urgent and self.over_for_critical and self._shared(job)
        limit = self.max_parallel + (len(self.devices) if urgent else 0)
        return len(self._running) < limit and self._place(job, urgent) is not None

    def _hold(self, name: str, run: _Running) -> None:
        for d in run.devices:
            if d in self._load:
                self._load[d] += Fraction(1, run.share)
        self._running[name] = run

    def _release(self, name: str) -> None:
        run = self._running.pop(name, None)
        if run is not None:
            for d in run.devices:
                if d in self._load:
                    self._load[d] -= Fraction(1, run.share)

    def submit(self, job: Job, spec: JobSpec, spec_path: Path, after: list[Record]) -> tuple[str, dict[str, Any]]:
        devices = self._place(job)
        if devices is None:
            devices = self._place(job, urgent=True) if self.over_for_critical and self._shared(job) else None
        if devices is None:
            raise ExecutorError(f"job {job.name}: its GPUs are not free (submit only what can_start allows)")
        share = job.resources.gpu_share if devices else 1
        if devices:
            self._turn = (self.devices.index(devices[-1]) + 1) % len(self.devices)
        spec.gpus_per_node = len(devices)
        if self.devices:
            spec.env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)  # also hides the GPUs from a job that asks none
        spec.save(spec_path)
        log = Path(spec.log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:  # the runner's own errors (it could not start the command) land here too
            proc = subprocess.Popen([self.python, "-m", "codestage.study.executors", str(spec_path)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._hold(job.name, _Running(devices, share, proc))
        return str(proc.pid), {"host": socket.gethostname(), "boot": _boot_id(), "start": _start_ticks(proc.pid),
                               "devices": devices, "share": share}

    def adopt(self, record: Record) -> None:
        host = record.extra.get("host")
        if host not in (None, socket.gethostname()):
            raise ExecutorError(f"job {record.name} was started on host {host} (pid {record.id}) by a local executor "
                                f"there: run codestage on {host}, or, if that process is gone, delete "
                                f"{record.path()}")
        self._hold(record.name, _Running(list(record.extra.get("devices", [])), int(record.extra.get("share", 1))))

    def poll(self, records: list[Record]) -> dict[str, Status]:
        out = {}
        for rec in records:
            run = self._running.get(rec.name)
            if run is None or run.proc is None:
                out[rec.name] = record_status([rec])[rec.name]
            else:
                rc = run.proc.poll()
                out[rec.name] = Status("running", f"pid {rec.id}") if rc is None else Status("ended", f"exit {rc}")
            if out[rec.name].state == "ended":
                self._release(rec.name)
        return out

    def cancel(self, record: Record) -> None:
        """SIGTERM to the job's runner, which stops the command's tree; SIGKILL if it does not end."""
        run = self._running.get(record.name)
        proc = run.proc if run else None

        def ended() -> bool:
            return proc.poll() is not None if proc is not None else not _alive(record)

        if record.id is not None and not ended():
            pid = int(record.id)
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.time() + STOP_GRACE_S + 5
                while not ended() and time.time() < deadline:
                    time.sleep(0.1)
                if not ended():
                    os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc is not None:
            proc.wait()
        self._release(record.name)

    def cancel_hint(self, records: list[Record]) -> str:
        return "kill " + " ".join(str(r.id) for r in records)
