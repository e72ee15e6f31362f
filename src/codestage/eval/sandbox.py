"""Run untrusted generated code against its tests, one throw-away process per item.

Each item runs in a fresh Python process (`python -I`) in its own temporary directory with a
minimal environment, in a new session (so a timeout kills the whole process group), inside a
network namespace when the kernel allows one (`unshare --net`), with limits on wall time, CPU
time, address space and output size, and with network, process-spawning and destructive
file-system calls disabled at the Python level. A program that loops, crashes, exhausts memory,
floods output or exits early fails its item; the harness carries on. This is damage control for
buggy model output, not a security boundary against a determined attacker (see
docs/evaluation.md): run untrusted models' code in a container too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

RUNNER = Path(__file__).with_name("_sandbox_runner.py")


@dataclass(frozen=True)
class Limits:
    """Per-item limits: wall time (s), address space (MiB), bytes of stdout/stderr/files."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    output_bytes: int = 1 << 20


@dataclass(frozen=True)
class Job:
    program: str
    tests: tuple[str, ...]
    setup: str = ""


@dataclass
class ExecResult:
    """`status`: passed (every test passed), failed, timeout, error (program did not run or died).
    `tests`: per test "passed" | "failed" | "error: <type>: <msg>" | "timeout" | "not run"."""

    status: str
    tests: list[str]
    detail: str = ""
    duration_s: float = 0.0
    output: str = field(default="", repr=False)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_json(self) -> dict:
        return {"status": self.status, "tests": self.tests, "detail": self.detail, "duration_s": round(self.duration_s, 3)}


@lru_cache(maxsize=1)
def network_isolation() -> list[str]:
    """The command prefix that puts a child in an empty network namespace, or [] when unavailable."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    for prefix in ([unshare, "--net"], [unshare, "--net", "--map-root-user"]):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return prefix
    return []


def _parse(report: Path, n_tests: int) -> tuple[list[str], str, bool]:
    """(per-test outcomes, program-level detail, finished) from the runner's report lines."""
    tests = ["not run"] * n_tests
    detail, finished = "", False
    lines = report.read_text(encoding="utf-8", errors="replace").splitlines() if report.exists() else []
    for line in lines:
        parts = line.split(" ", 3)
        if parts[0] in ("program", "setup") and len(parts) > 1 and parts[1] == "error":
            detail = line
        elif parts[0] == "test" and len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) < n_tests:
            i, what = int(parts[1]), parts[2]
            tests[i] = {"running": "running", "passed": "passed", "failed": "failed"}.get(what, f"error: {line.split(' ', 3)[-1]}")
        elif line == "done":
            finished = True
    return tests, detail, finished


def run_program(job: Job, limits: Limits = Limits()) -> ExecResult:
    """Execute `job.program`, then `job.setup`, then each test, in an isolated child process."""
    workdir = Path(tempfile.mkdtemp(prefix="codestage-sandbox-"))
    start = time.perf_counter()
    try:
        report = workdir / ".report"
        spec = workdir / ".spec.json"
        spec.write_text(
            json.dumps(
                {
                    "program": job.program,
                    "setup": job.setup,
                    "tests": list(job.tests),
                    "report": str(report),
                    "memory_mb": limits.memory_mb,
                    "cpu_s": max(1, int(limits.timeout_s) + 1),
                    "output_bytes": limits.output_bytes,
                }
            ),
            encoding="utf-8",
        )
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        cmd = [*network_isolation(), sys.executable, "-I", str(RUNNER), str(spec)]
        with open(workdir / ".out", "wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
        output = (workdir / ".out").read_bytes()[:4096].decode("utf-8", errors="replace")
        tests, detail, finished = _parse(report, len(job.tests))
        duration = time.perf_counter() - start
        if timed_out:
            tests = ["timeout" if t == "running" else t for t in tests]
            return ExecResult("timeout", tests, f"wall time over {limits.timeout_s:g} s", duration, output)
        if not finished:
            tests = ["error: process died" if t == "running" else t for t in tests]
            why = detail or _death(proc.returncode, output)
            return ExecResult("error", tests, why, duration, output)
        status = "passed" if tests and all(t == "passed" for t in tests) else "failed"
        return ExecResult(status, tests, detail, duration, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _death(returncode: int | None, output: str) -> str:
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else str(-returncode)
        hint = {"SIGXFSZ": " (output limit)", "SIGXCPU": " (CPU time limit)", "SIGKILL": " (killed)"}.get(name, "")
        return f"killed by {name}{hint}"
    tail = output.strip().splitlines()[-1:] if output.strip() else []
    return f"exited with code {returncode} before finishing" + (f": {tail[0][:200]}" if tail else "")


def run_many(jobs: Sequence[Job], limits: Limits = Limits(), workers: int | None = None) -> list[ExecResult]:
    """`run_program` over many jobs in parallel (one process each), results in job order."""
    if not jobs:
        return []
    workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda j: run_program(j, limits), jobs))
