"""Run one job where it was placed: its command (under torchrun where it has several GPUs), its
retries, its log and the result file the coordinator reads.

The same code runs a job for every engine: the local engine starts `python -m
codestage.study.executors SPEC.json` as a process of its own (so the job outlives a killed
coordinator and still leaves its result), the Slurm engine calls `run_job` inside the allocation.

The command runs in a session of its own so that stopping a job stops its whole process tree
(torchrun's agent, on SIGTERM, stops its workers itself).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from codestage.atomic import write_json

STOP_GRACE_S = 60.0  # how long a stopped command may take to exit (a training step checkpoints) before SIGKILL


@dataclass
class JobSpec:
    """What a job process needs to know: written by the coordinator, read where the job runs."""

    name: str
    argv: list[str]
    log: str
    result: str
    run_id: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    retries: int = 0
    gpus_per_node: int = 0
    nodes: int = 1

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "JobSpec":
        return cls(**json.loads(Path(path).read_text()))


def launch_command(argv: Sequence[str], *, gpus_per_node: int, nodes: int = 1, rdzv_host: str | None = None,
                   rdzv_port: int = 29500, rdzv_id: str = "codestage", max_restarts: int = 0,
                   python: str = sys.executable) -> list[str]:
    """The job's command, wrapped in torchrun when it has more than one GPU or node.

    One node: `torchrun --standalone` (a free port of its own, so jobs run side by side). Several
    nodes: one torchrun per node, meeting at a c10d rendezvous on the first node; torchrun restarts
    the whole group up to `max_restarts` times. `--no-python` runs the command as given, so a step's
    command line is the same with or without torchrun.
    """
    if nodes == 1 and gpus_per_node <= 1:
        return list(argv)
    cmd = [python, "-m", "torch.distributed.run", f"--nproc-per-node={max(gpus_per_node, 1)}"]
    if nodes == 1:
        cmd.append("--standalone")
    else:
        if not rdzv_host:
            raise ValueError("a multi-node job needs the rendezvous host (its first node)")
        cmd += [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_host}:{rdzv_port}",
                f"--rdzv-id={rdzv_id}", f"--max-restarts={max_restarts}"]
    return cmd + ["--no-python", *argv]


_child: subprocess.Popen | None = None


def signal_command(sig: int) -> None:
    """Send `sig` to the running command's process group. Safe in a signal handler: it does not wait
    (waiting there could deadlock on the wait the handler interrupted)."""
    child = _child
    if child is not None and child.returncode is None:
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            pass


def command_exited(timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the command to exit, without reaping it (`WNOWAIT`): safe in a
    signal handler, and the interrupted `Popen.wait` still collects its status."""
    child = _child
    deadline = time.time() + timeout_s
    while child is not None and child.returncode is None:
        try:
            if os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.2)
    return True


def stop_command(grace_s: float = STOP_GRACE_S) -> None:
    """Stop the running command's process tree: SIGTERM, then SIGKILL after `grace_s`."""
    child = _child
    if child is None or child.poll() is not None:
        return
    signal_command(signal.SIGTERM)
    try:
        child.wait(grace_s)
    except subprocess.TimeoutExpired:
        signal_command(signal.SIGKILL)
        child.wait()


def _log(log: Path, text: str) -> None:
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"[codestage {time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()}] {text}\n")


def _attempt(cmd: list[str], spec: JobSpec, log: Path, *, ignore_usr2: bool) -> int:
    global _child
    env = {**os.environ, **spec.env}
    with open(log, "ab") as out:
        # Slurm sends its preemption/time-limit warning (USR2) to every process of the job; only the
        # submitit wrapper must act on it (checkpoint, requeue), so the command's tree ignores it.
        old = signal.signal(signal.SIGUSR2, signal.SIG_IGN) if ignore_usr2 else None
        try:
            _child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      cwd=spec.cwd, start_new_session=True)
        finally:
            if old is not None:
                signal.signal(signal.SIGUSR2, old)
        try:
            return _child.wait()
        finally:
            stop_command()  # a signal handler that raised while we waited must not leave the command running


def _rdzv_port(rdzv_id: str | None) -> int:
    """MASTER_PORT where set, else one derived from the Slurm job id (two jobs sharing a first node
    then rarely pick the same port)."""
    if os.environ.get("MASTER_PORT"):
        return int(os.environ["MASTER_PORT"])
    return 20000 + int(rdzv_id) % 30000 if rdzv_id and rdzv_id.isdigit() else 29500


def run_job(spec: JobSpec, *, node_rank: int = 0, hosts: Sequence[str] = (), rdzv_id: str | None = None,
            ignore_usr2: bool = False) -> int:
    """Run the job's attempts; the first node writes the result file. Returns the last exit code.

    One node: a failed attempt is started again, up to `retries` times. Several nodes: torchrun
    restarts the group itself (`--max-restarts`), since every node must restart together.
    """
    log = Path(spec.log)
    if node_rank:
        log = log.with_name(f"{log.name}.node{node_rank}")
    log.parent.mkdir(parents=True, exist_ok=True)
    port = _rdzv_port(rdzv_id)
    cmd = launch_command(spec.argv, gpus_per_node=spec.gpus_per_node, nodes=spec.nodes,
                         rdzv_host=hosts[0] if hosts else None, rdzv_port=port, rdzv_id=rdzv_id or spec.run_id,
                         max_restarts=spec.retries)
    tries = 1 if spec.nodes > 1 else spec.retries + 1
    started = time.time()
    rc = 1
    for attempt in range(1, tries + 1):
        _log(log, f"{spec.name}: attempt {attempt}/{tries}: {shlex.join(cmd)}")
        rc = _attempt(cmd, spec, log, ignore_usr2=ignore_usr2)
        _log(log, f"{spec.name}: attempt {attempt}/{tries} exited with {rc}")
        if rc == 0:
            break
    if node_rank == 0:
        write_json(Path(spec.result), {"run_id": spec.run_id, "name": spec.name, "returncode": rc, "attempts": attempt,
                                       "host": socket.gethostname(), "started": started, "finished": time.time()})
    return rc


def _stop_and_exit(signum: int, _frame: Any) -> None:
    signal_command(signal.SIGTERM)
    raise SystemExit(128 + signum)  # `_attempt` then waits for the command's tree; no result is written


def main(argv: list[str] | None = None) -> int:
    """`python -m codestage.study.executors SPEC.json`: how the local engine runs a job."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m codestage.study.executors SPEC.json", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop_and_exit)  # cancel: stop the command's tree, leave no result
    return run_job(JobSpec.load(Path(args[0])))


