"""Run untrusted generated code against its tests, one throw-away process per item.

Each item runs in a fresh Python process (`python -I`) with a minimal environment, in a new session,
under layered containment (docs/reliability.md has the full model and its limits):

- kernel namespaces when available (`unshare`, probed once): an empty network namespace, a PID
  namespace (the runner is its init, so when it ends every process it started ends too, and no
  outside process is visible or signallable) and a mount namespace with a fresh /proc and private
  tmpfs over the world-writable directories; without root, inside a user namespace;
- when the parent is root: the child switches to a uid of its own (unprivileged, unused, one per
  concurrent run), so RLIMIT_NPROC bounds fork bombs, file permissions protect the system and
  other processes cannot be read or signalled; no_new_privs blocks set-uid binaries;
- resource limits (address space, CPU, file size, processes) and a wall-clock limit;
- Python-level guards that make network, process, signal and destructive file calls raise.

After every run the parent kills the process group, then sweeps any survivor (by the run's uid, or
by a per-run marker in the environment) and any file the run's uid left in shared temp directories.
Results come back on a private pipe, every line carrying a per-run nonce, so nothing the program
prints, writes or fakes with `os._exit` reads as a pass. A program that loops, forks, exhausts
memory, floods output, crashes or exits early fails its own item; the batch carries on.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

RUNNER = Path(__file__).with_name("_sandbox_runner.py")
MARKER = "CODESTAGE_SANDBOX_RUN"
# Per-run uids when the parent is root: unprivileged, without a passwd entry, owning no process.
UID_BASE = int(os.environ.get("CODESTAGE_SANDBOX_UID_BASE", "62000"))
UID_SPAN = 2048
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")


@dataclass(frozen=True)
class Limits:
    """Per-item limits: wall time (s), address space (MiB), bytes of stdout/stderr/each file, and
    processes + threads at once (enforced when the run has its own uid or user namespace)."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    output_bytes: int = 1 << 20
    processes: int = 8


@dataclass(frozen=True)
class Job:
    program: str
    tests: tuple[str, ...]
    setup: str = ""


@dataclass
class ExecResult:
    """`status`: passed (every test passed), failed, timeout, error (program did not run or died).
    `tests`: per test "passed" | "failed" | "error: <type>: <msg>" | "timeout" | "not run".
    `isolation`: what the child reported it achieved (namespaces, tmp, uid, nproc, no_new_privs)."""

    status: str
    tests: list[str]
    detail: str = ""
    duration_s: float = 0.0
    output: str = field(default="", repr=False)
    run_id: str = field(default="", repr=False)
    isolation: dict = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_json(self) -> dict:
        return {"status": self.status, "tests": self.tests, "detail": self.detail, "duration_s": round(self.duration_s, 3)}


@dataclass(frozen=True)
class Isolation:
    """How children are started: kernel namespaces (a subset of user, net, pid, mount) and whether
    each run switches to its own unprivileged uid (only possible when the parent is root). The
    child needs only the standard library, so any Python >= 3.10 readable by others will do."""

    namespaces: tuple[str, ...] = ()
    drop_uid: bool = False
    python: str = ""  # the children's interpreter; "" = this one (sys.executable)

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable

    @property
    def prefix(self) -> list[str]:
        if not self.namespaces:
            return []
        cmd = [shutil.which("unshare") or "unshare"]
        if "user" in self.namespaces:
            cmd += ["--user", "--map-root-user"]
        if "net" in self.namespaces:
            cmd += ["--net"]
        if "pid" in self.namespaces:
            cmd += ["--pid", "--fork", "--kill-child"]
        if "mount" in self.namespaces:
            cmd += ["--mount-proc"]  # a new mount namespace with this PID namespace's /proc
        return cmd


def _candidates(root: bool) -> list[tuple[str, ...]]:
    user = () if root else ("user",)
    return [(*user, "net", "pid", "mount"), (*user, "net", "pid"), (*user, "net"), ()]


@lru_cache(maxsize=1)
def isolation() -> Isolation:
    """The strongest containment this machine allows (probed once). `CODESTAGE_SANDBOX_NAMESPACES`
    ("none", or a comma list such as "net,pid") overrides the namespace probe."""
    root = os.geteuid() == 0
    python = os.environ.get("CODESTAGE_SANDBOX_PYTHON", "")
    forced = os.environ.get("CODESTAGE_SANDBOX_NAMESPACES")
    if forced is not None:
        names = tuple(n for n in forced.replace(" ", "").split(",") if n and n != "none")
        return Isolation(names, root, python)
    if shutil.which("unshare") is None:
        return Isolation((), root, python)
    for names in _candidates(root):
        iso = Isolation(names, root, python)
        if not names:
            return iso
        try:
            cmd = [*iso.prefix, iso.interpreter, "-I", "-c", "pass"]
            if subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0:
                return iso
        except (OSError, subprocess.SubprocessError):
            continue
    return Isolation((), root, python)


@lru_cache(maxsize=1)
def _pdeathsig() -> list[str]:
    """`setpriv --pdeathsig KILL` where it works: the child is killed if this process dies first
    (the runner renews it after its uid switch, which clears it)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return []
    try:
        ok = subprocess.run([setpriv, "--pdeathsig", "KILL", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return [setpriv, "--pdeathsig", "KILL"] if ok else []


# ---------------------------------------------------------------------------------------------
# Process and uid bookkeeping (Linux /proc)


def _proc_status(pid: str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _pids() -> list[str]:
    try:
        return [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def _live(status: dict[str, str]) -> bool:
    return bool(status) and status.get("State", "Z")[:1] not in ("Z", "X")


def _pids_of_uid(uid: int) -> list[int]:
    out = []
    for pid in _pids():
        st = _proc_status(pid)
        if _live(st) and st.get("Uid", "").split()[:1] == [str(uid)]:
            out.append(int(pid))
    return out


def _pids_with_marker(run_id: str) -> list[int]:
    needle = f"{MARKER}={run_id}".encode()
    out = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0") and _live(_proc_status(pid)):
            out.append(int(pid))
    return out


def leftover_processes(result: ExecResult) -> list[int]:
    """Live processes that belong to a finished run (always [] unless containment failed)."""
    uid = result.isolation.get("uid")
    found = set(_pids_with_marker(result.run_id)) if result.run_id else set()
    if isinstance(uid, int) and uid >= UID_BASE:
        found.update(_pids_of_uid(uid))
    return sorted(found)


_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _claim_uid() -> int:
    """An unprivileged uid for one run: no passwd entry, no live process, not used by this process."""
    offsets = list(range(UID_SPAN))
    random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(offsets)
    with _uid_lock:
        for off in offsets[:64]:
            uid = UID_BASE + off
            if uid in _uids_in_use:
                continue
            try:
                pwd.getpwuid(uid)
                continue
            except KeyError:
                pass
            if _pids_of_uid(uid):
                continue
            _uids_in_use.add(uid)
            return uid
    raise RuntimeError(f"sandbox: no free uid in {UID_BASE}..{UID_BASE + UID_SPAN - 1}")


def _release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _sweep(find, seconds: float = 5.0) -> None:
    """SIGKILL what `find()` returns until it returns nothing (or `seconds` pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        victims = find()
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def _sweep_files(uid: int) -> None:
    """Remove what a run's uid created directly in the shared temp directories."""
    for d in SHARED_TMP:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# Running one job


def _parse(lines: list[str], n_tests: int) -> tuple[list[str], str, bool, dict]:
    """(per-test outcomes, program-level detail, finished, isolation facts) from report lines."""
    tests = ["not run"] * n_tests
    detail, finished, facts = "", False, {}
    for line in lines:
        parts = line.split(" ", 3)
        if parts[0] in ("program", "setup") and len(parts) > 1 and parts[1] == "error":
            detail = line
        elif parts[0] == "test" and len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) < n_tests:
            i, what = int(parts[1]), parts[2]
            tests[i] = {"running": "running", "passed": "passed", "failed": "failed"}.get(what, f"error: {line.split(' ', 3)[-1]}")
        elif parts[0] == "isolation" and len(parts) > 1:
            try:
                facts = json.loads(line.split(" ", 1)[1])
            except ValueError:
                facts = {}
        elif line == "done":
            finished = True
    return tests, detail, finished, facts


class Stopped(Exception):
    """The batch this run belongs to was interrupted (Ctrl-C): the run was killed, not judged."""


def _collect(proc: subprocess.Popen, fd: int, nonce: str, deadline: float, cap: int,
             stop: threading.Event | None = None) -> tuple[list[str], bool, bool]:
    """Read the report pipe until the runner exits, the deadline passes or `stop` is set (Stopped).
    Returns (authentic report lines, timed out, flooded)."""
    raw = bytearray()
    flooded = eof = False
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            if stop is not None and stop.is_set():
                raise Stopped("interrupted")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = proc.poll() is None
                break
            exited = proc.poll() is not None
            ready = sel.select(0 if exited else min(remaining, 0.05)) if not eof else []
            if ready:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    chunk = None
                if chunk == b"":
                    eof = True
                elif chunk:
                    if len(raw) + len(chunk) > cap:
                        flooded = True  # keep draining so the writer never blocks, but stop storing
                    else:
                        raw += chunk
                continue
            if exited:  # nothing more to read now; a stray holding the pipe cannot keep us here
                timed_out = False
                break
            if eof:
                try:
                    proc.wait(timeout=min(remaining, 0.05))
                except subprocess.TimeoutExpired:
                    pass
    prefix = nonce + " "
    lines = [ln[len(prefix):] for ln in raw.decode("utf-8", errors="replace").split("\n") if ln.startswith(prefix)]
    return lines, timed_out, flooded


def run_program(job: Job, limits: Limits = Limits(), *, contain: Isolation | None = None,
                stop: threading.Event | None = None) -> ExecResult:
    """Execute `job.program`, then `job.setup`, then each test, in an isolated child process.
    `contain` overrides the probed `isolation()` (tests use it to exercise the fallbacks); setting
    `stop` kills the child within 50 ms and raises Stopped (how an interrupted batch ends at once)."""
    iso = contain if contain is not None else isolation()
    run_id, nonce = secrets.token_hex(8), secrets.token_hex(16)
    uid = _claim_uid() if iso.drop_uid else None
    workdir = Path(tempfile.mkdtemp(prefix="codestage-sandbox-"))
    start = time.perf_counter()
    read_fd = write_fd = -1
    facts: dict = {}
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        read_fd, write_fd = os.pipe()
        spec = json.dumps(
            {
                "program": job.program,
                "setup": job.setup,
                "tests": list(job.tests),
                "report_fd": write_fd,
                "nonce": nonce,
                "namespaces": list(iso.namespaces),
                "uid": uid,
                "memory_mb": limits.memory_mb,
                "cpu_s": max(1, int(limits.timeout_s) + 1),
                "output_bytes": limits.output_bytes,
                "processes": limits.processes,
                # Without a PID namespace, a watchdog under the run's uid kills what is left if
                # this process dies before it can sweep.
                "watchdog_s": limits.timeout_s + 2 if uid is not None and "pid" not in iso.namespaces else None,
            }
        ).encode("utf-8")
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",  # thread pools of numeric libraries count against `processes`
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            MARKER: run_id,
        }
        cmd = [*_pdeathsig(), *iso.prefix, iso.interpreter, "-I", str(RUNNER)]
        # The parent keeps its own handle on the output file: the program may rename or replace
        # the name in its directory, never what the parent reads back.
        with tempfile.TemporaryFile(dir=workdir) as out:
            proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=(write_fd,),
            )
            os.close(write_fd)
            write_fd = -1
            try:
                try:
                    proc.stdin.write(spec)
                    proc.stdin.close()
                except OSError:
                    pass  # the child died before reading its spec: reported below
                cap = 8192 + 512 * (len(job.tests) + 8)
                lines, timed_out, flooded = _collect(proc, read_fd, nonce, time.monotonic() + limits.timeout_s, cap, stop)
            finally:
                _kill_group(proc)
                # Also after a PID namespace: its init is dead, but its members die asynchronously.
                if uid is not None:
                    _sweep(lambda: _pids_of_uid(uid))
                _sweep(lambda: _pids_with_marker(run_id))
            out.seek(0)
            output = out.read(4096).decode("utf-8", errors="replace")
        tests, detail, finished, facts = _parse(lines, len(job.tests))
        duration = time.perf_counter() - start
        res = dict(duration_s=duration, output=output, run_id=run_id, isolation=facts)
        if timed_out:
            tests = ["timeout" if t == "running" else t for t in tests]
            return ExecResult("timeout", tests, f"wall time over {limits.timeout_s:g} s", **res)
        if flooded:
            tests = ["error: report flooded" if t == "running" else t for t in tests]
            return ExecResult("error", tests, "the report channel was flooded", **res)
        if not finished:
            tests = ["error: process died" if t == "running" else t for t in tests]
            why = detail or _death(proc.returncode, output)
            return ExecResult("error", tests, why, **res)
        status = "passed" if tests and all(t == "passed" for t in tests) else "failed"
        return ExecResult(status, tests, detail, **res)
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        if uid is not None:
            if facts.get("tmp") != "private":
                _sweep_files(uid)
            _release_uid(uid)
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
    if returncode == 3:
        return "exited with code 3: the program closed the sandbox's report channel"
    tail = output.strip().splitlines()[-1:] if output.strip() else []
    return f"exited with code {returncode} before finishing" + (f": {tail[0][:200]}" if tail else "")


def run_many(
    jobs: Sequence[Job], limits: Limits = Limits(), workers: int | None = None, *, contain: Isolation | None = None
) -> list[ExecResult]:
    """`run_program` over many jobs in parallel (one process each), results in job order. When the
    caller is interrupted (Ctrl-C), queued jobs never start and running ones are killed at once."""
    if not jobs:
        return []
    workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        return list(pool.map(lambda j: run_program(j, limits, contain=contain, stop=stop), jobs))
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
