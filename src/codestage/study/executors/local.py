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
    proc: subprocess.Popen | None = None  # None: adopted from an earlier coordinator


class LocalEngine:
    """Runs jobs side by side on this machine.

    `devices`: the GPU ids to hand out (default: the visible ones). A job asking G GPUs gets G of
    them in CUDA_VISIBLE_DEVICES, under `torchrun --standalone --nproc-per-node G` where G > 1.
    `max_parallel`: at most this many jobs at once (default: one per GPU, or 1 without GPUs). On a
    machine without GPUs, jobs that ask for GPUs run as one CPU process each, as `inline` would.
    """

    name = "local"
    native_deps = False
    stop_on_interrupt = True
    poll_s = 0.2
    result_grace_s = 0.0

    def __init__(self, devices: Sequence[str | int] | None = None, max_parallel: int | None = None,
                 python: str = sys.executable) -> None:
        self.devices = [str(d) for d in (visible_gpus() if devices is None else devices)]
        if max_parallel is not None and max_parallel < 1:
            raise ConfigError(f"max_parallel must be >= 1, got {max_parallel}")
        self.max_parallel = max_parallel or max(1, len(self.devices))
        self.python = python
        self._free = list(self.devices)
        self._running: dict[str, _Running] = {}

    def _gpus(self, job: Job) -> int:
        return job.resources.gpus if self.devices else 0

    def check(self, job: Job) -> None:
        r = job.resources
        if r.nodes > 1:
            raise ConfigError(f"job {job.name} asks for {r.nodes} nodes; the local executor uses this machine only "
                              "(run it with the slurm executor)")
        if self.devices and r.gpus > len(self.devices):
            raise ConfigError(f"job {job.name} asks for {r.gpus} GPUs; this machine has {len(self.devices)} "
                              f"visible ({','.join(self.devices)}): lower gpus_per_step for its stage")

    def can_start(self, job: Job) -> bool:
        return len(self._running) < self.max_parallel and len(self._free) >= self._gpus(job)

    def _take(self, devices: list[str]) -> list[str]:
        taken = [d for d in devices if d in self._free]
        for d in taken:
            self._free.remove(d)
        return taken

    def _release(self, name: str) -> None:
        run = self._running.pop(name, None)
        if run is not None:
            self._free += run.devices
            self._free.sort(key=lambda d: self.devices.index(d))

    def submit(self, job: Job, spec: JobSpec, spec_path: Path, after: list[Record]) -> tuple[str, dict[str, Any]]:
        devices = self._take(self._free[: self._gpus(job)])
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
        self._running[job.name] = _Running(devices, proc)
        return str(proc.pid), {"host": socket.gethostname(), "boot": _boot_id(), "start": _start_ticks(proc.pid),
                               "devices": devices}

    def adopt(self, record: Record) -> None:
        host = record.extra.get("host")
        if host not in (None, socket.gethostname()):
            raise ExecutorError(f"job {record.name} was started on host {host} (pid {record.id}) by a local executor "
                                f"there: run codestage on {host}, or, if that process is gone, delete "
                                f"{record.path()}")
        self._running[record.name] = _Running(self._take(list(record.extra.get("devices", []))))

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
