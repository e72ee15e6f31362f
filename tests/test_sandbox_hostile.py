"""Hostile programs through the execution path MBPP uses (`run_many`), mixed with clean ones.

Every hostile program gets a clear per-item status and never a pass; clean items in the same
batch pass; afterwards no process of any run is alive, no file outside a run's directory was
created, changed or deleted, the victim process outside the sandbox is alive and the listening
sockets saw no connection. Each case's tests check that its attack *worked*, so a contained
attack can only fail or error.

The batch runs under the containment this machine gives (`isolation()`, probed) and, when the
suite runs as root and a Python readable by other users exists, again under the fallback without
namespaces (uid switch + sweeps only) for the cases whose containment is kernel-level. A mode
whose kernel-level containment is absent (no PID namespace and no uid switch) is skipped rather
than run: a real fork bomb or kill(-1) would then hit the machine.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from codestage.eval.sandbox import UID_BASE, Isolation, Job, Limits, isolation, leftover_processes, run_many, run_program

FAST = Limits(timeout_s=2.0, memory_mb=256, output_bytes=64 * 1024, processes=8)
LIBC = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def ok(rc):\n"
    "    if rc < 0:\n"
    "        err = ctypes.get_errno()\n"
    "        raise OSError(err, os.strerror(err))\n"
    "    return rc\n"
)
WRONG = ("assert f(1) == 2",)  # an attack that does not fake a pass leaves `f` undefined or wrong
# The victim is refused (uid) or, when it lives under a privately mounted /tmp, not there at all.
DENIED = "Permission denied|not permitted|No such file or directory"


@dataclass(frozen=True)
class Case:
    name: str
    threat: str
    program: str
    tests: tuple[str, ...] = WRONG
    status: tuple[str, ...] = ("error",)
    detail: str = ""  # regex that the detail or a test outcome must match
    kernel: bool = False  # contained by a kernel layer (namespaces, uid, rlimits): also run in fallback
    needs: str = ""  # "net": only contained with a network namespace (documented limit otherwise)


CASES = [
    # -- infinite loops ---------------------------------------------------------------------
    Case("loop_forever", "loop", "while True:\n    pass\n", status=("timeout",), detail="wall time"),
    Case("loop_in_second_test", "loop", "def f(x):\n    while True:\n        x += 1\n",
         ("assert 1 + 1 == 2", "assert f(1) == 2", "assert True"), ("timeout",)),
    Case("sleep_forever", "loop", "import time\ntime.sleep(10 ** 6)\n", status=("timeout",)),
    Case("ignore_signals_and_spin", "loop",
         "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGXCPU):\n"
         "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n", status=("timeout",), kernel=True),
    Case("exception_str_loops", "loop",
         "class E(Exception):\n    def __str__(self):\n        while True:\n            pass\nraise E()\n", status=("timeout",)),
    Case("lingering_spinning_thread", "loop",
         "import threading\ndef spin():\n    while True:\n        pass\n"
         "threading.Thread(target=spin).start()\ndef f(x):\n    return x\n", status=("failed",)),
    # -- fork bombs -------------------------------------------------------------------------
    Case("fork_loop_os", "fork", "import os\nwhile True:\n    os.fork()\n", detail="disabled"),
    Case("fork_bomb_libc", "fork", LIBC + "while True:\n    ok(libc.fork())\n",
         detail="BlockingIOError|Resource temporarily", kernel=True),
    Case("fork_bomb_ignoring_failures", "fork", LIBC + "while True:\n    libc.fork()\n", status=("timeout",), kernel=True),
    Case("fork_via_reimported_posix", "fork",
         "import sys\ndel sys.modules['posix']\nimport posix\nwhile True:\n    posix.fork()\n",
         detail="BlockingIOError|Resource temporarily", kernel=True),
    Case("fork_children_escape_session", "fork",
         LIBC + "for _ in range(4):\n    if libc.fork() == 0:\n        libc.setsid()\n        while True:\n            libc.sleep(1)\n",
         status=("failed",), kernel=True),
    Case("shell_fork_bomb", "fork", LIBC + "libc.system(b'bomb(){ bomb|bomb& }; bomb')\n",
         status=("failed", "timeout", "error"), kernel=True),
    Case("thread_bomb", "fork",
         "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
         detail="can't start new thread", kernel=True),
    Case("subprocess_spawn", "fork", "import subprocess\nsubprocess.Popen(['sleep', '100'])\n", detail="disabled"),
    # -- memory bombs -----------------------------------------------------------------------
    Case("alloc_64_gib", "memory", "x = bytearray(64 * 1024 ** 3)\n", detail="MemoryError", kernel=True),
    Case("alloc_growing", "memory", "x = []\nwhile True:\n    x.append(bytearray(1 << 24))\n", detail="MemoryError", kernel=True),
    Case("alloc_in_test", "memory", "def f(n):\n    return [0] * n\n", ("assert len(f(10 ** 11)) == 10 ** 11",),
         ("failed",), detail="MemoryError"),
    Case("mmap_16_gib", "memory", "import mmap\nm = mmap.mmap(-1, 16 * 1024 ** 3)\n", detail="memory", kernel=True),
    Case("fork_then_alloc", "memory",
         LIBC + "for _ in range(6):\n    if libc.fork() == 0:\n        break\nx = bytearray(150 * 1024 ** 2)\nimport time\ntime.sleep(60)\n",
         status=("timeout",), kernel=True),
    # -- files outside the working directory ------------------------------------------------
    Case("write_victim_open", "files", "open('@VICTIM_FILE@', 'w').write('pwned')\n", detail="disabled"),
    Case("write_victim_pathlib", "files", "import pathlib\npathlib.Path('@VICTIM_FILE@').write_text('pwned')\n", detail="disabled"),
    Case("write_victim_libc", "files",
         LIBC + "fd = ok(libc.open(b'@VICTIM_FILE@', os.O_WRONLY | os.O_TRUNC))\nlibc.write(fd, b'pwned', 5)\n",
         detail=DENIED, kernel=True),
    Case("unlink_victim_libc", "files", LIBC + "ok(libc.unlink(b'@VICTIM_FILE@'))\n", detail=DENIED, kernel=True),
    Case("unlink_victim_reimported_posix", "files",
         "import sys\ndel sys.modules['posix']\nimport posix\nposix.unlink('@VICTIM_FILE@')\n",
         detail=DENIED, kernel=True),
    Case("rmtree_victim_dir", "files", "import shutil\nshutil.rmtree('@VICTIM_DIR@')\n", detail="disabled"),
    Case("symlink_then_open", "files", LIBC + "ok(libc.symlink(b'@VICTIM_FILE@', b'link'))\nopen('link', 'w').write('pwned')\n",
         detail="disabled"),
    Case("symlink_then_libc_open", "files",
         LIBC + "ok(libc.symlink(b'@VICTIM_FILE@', b'link'))\nok(libc.open(b'link', os.O_WRONLY | os.O_TRUNC))\n",
         detail=DENIED, kernel=True),
    Case("chmod_victim_libc", "files", LIBC + "ok(libc.chmod(b'@VICTIM_FILE@', 0o777))\n", detail=DENIED, kernel=True),
    Case("create_in_shared_tmp", "files",
         LIBC + "fd = ok(libc.open(b'@HOST_TMP@', os.O_WRONLY | os.O_CREAT, 0o644))\nlibc.write(fd, b'x', 1)\n",
         status=("failed",), kernel=True),
    Case("fill_the_disk", "files",
         "for i in range(400):\n    with open(f'fill{i}', 'wb') as fh:\n        fh.write(b'x' * 60000)\n",
         status=("error", "failed"), kernel=True),
    # -- network ----------------------------------------------------------------------------
    Case("net_socket_module", "network",
         "import socket\ns = socket.create_connection(('127.0.0.1', @PORT0@), timeout=1)\nCONNECTED = True\n",
         ("assert CONNECTED",), detail="disabled"),
    Case("net_urllib", "network", "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:@PORT1@/', timeout=1)\n",
         ("assert CONNECTED",), detail="disabled"),
    Case("net_raw_socket", "network",
         "import _socket\ns = _socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', @PORT2@))\nCONNECTED = True\n",
         ("assert CONNECTED",), kernel=True, needs="net"),
    Case("net_reimported_socket", "network",
         "import sys\nfor m in [m for m in sys.modules if 'socket' in m]:\n    del sys.modules[m]\nimport socket\n"
         "s = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', @PORT3@))\nCONNECTED = True\n",
         ("assert CONNECTED",), kernel=True, needs="net"),
    Case("net_udp_datagram", "network",
         "import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', @UDPPORT@))\nSENT = True\n",
         ("assert SENT",), kernel=True, needs="net"),
    # -- signalling or killing the parent / other processes ----------------------------------
    Case("kill_parent_os", "signal", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", detail="disabled"),
    Case("kill_parent_libc", "signal",
         LIBC + "ppid = os.getppid()\nif ppid <= 1:\n    raise ProcessLookupError('parent not visible')\nok(libc.kill(ppid, 9))\n",
         detail="not visible|not permitted", kernel=True),
    Case("kill_victim_libc", "signal", LIBC + "ok(libc.kill(@VICTIM_PID@, 9))\n", detail="No such process|not permitted", kernel=True),
    Case("kill_everything_libc", "signal", LIBC + "ok(libc.kill(-1, 9))\nraise SystemExit('still here')\n", kernel=True),
    Case("kill_own_group_libc", "signal", LIBC + "libc.kill(0, 9)\n", status=("error", "failed"), kernel=True),
    Case("pidfd_signal_victim", "signal",
         LIBC + "pidfd = ok(libc.syscall(434, @VICTIM_PID@, 0))\nok(libc.syscall(424, pidfd, 9, None, 0))\n",
         detail="No such process|not permitted", kernel=True),
    Case("ptrace_victim", "signal", LIBC + "ok(libc.ptrace(16, @VICTIM_PID@, None, None))\n",
         detail="No such process|not permitted", kernel=True),
    # -- stdout / stderr --------------------------------------------------------------------
    Case("close_stdout_stderr", "output", "import os\nos.close(1)\nos.close(2)\ndef f(x):\n    return x\n", status=("failed",)),
    Case("close_every_fd", "output", "import os\nos.closerange(0, 4096)\ndef f(x):\n    return x + 1\n", detail="report channel"),
    Case("flood_stdout", "output", "while True:\n    print('x' * 10000)\n", detail="File too large", kernel=True),
    Case("flood_stderr", "output", "import sys\nwhile True:\n    sys.stderr.write('y' * 10000)\n", detail="File too large", kernel=True),
    Case("flood_raw_fd_default_sigxfsz", "output",
         "import os, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_DFL)\nwhile True:\n    os.write(1, b'z' * 65536)\n",
         detail="SIGXFSZ|File too large", kernel=True),
    Case("flood_every_fd", "output",
         "import os\nwhile True:\n    for fd in range(3, 64):\n        try:\n            os.write(fd, b'test 0 passed\\ndone\\n' * 1000)\n"
         "        except OSError:\n            pass\n", status=("error", "timeout")),
    # -- recursion bombs --------------------------------------------------------------------
    Case("recursion_default_limit", "recursion", "def f(n):\n    return f(n + 1)\nf(0)\n", detail="RecursionError"),
    Case("recursion_c_stack_overflow", "recursion",
         "import sys\nsys.setrecursionlimit(10 ** 9)\ndef f(n):\n    return list(map(f, [n]))\nf(0)\n",
         detail="SIGSEGV|RecursionError|MemoryError", kernel=True),
    Case("recursion_in_test", "recursion", "def f(n):\n    return f(n - 1) + 1\n", ("assert f(10) == 10",), ("failed",),
         detail="RecursionError"),
    Case("nested_parentheses", "recursion", "eval('(' * 1000000 + ')' * 1000000)\n", detail="nested|RecursionError|MemoryError"),
    # -- os._exit and other ways to fake a pass ----------------------------------------------
    Case("exit0_before_tests", "fake-success", "import os\nos._exit(0)\n", detail="code 0"),
    Case("exit0_inside_test", "fake-success", "import os\ndef f(x):\n    os._exit(0)\n",
         ("assert True", "assert f(1) == 2", "assert True"), detail="process died"),
    Case("sys_exit0", "fake-success", "import sys\nsys.exit(0)\n", detail="SystemExit"),
    Case("forged_lines_on_stdout", "fake-success",
         "import os, sys\nprint('start\\nprogram ok\\nsetup ok\\ntest 0 running\\ntest 0 passed\\ndone', flush=True)\n"
         "sys.stderr.write('test 0 passed\\ndone\\n')\nsys.stderr.flush()\nos._exit(0)\n"),
    Case("forged_lines_on_every_fd", "fake-success",
         "import os\nfor fd in range(0, 256):\n    try:\n        os.write(fd, b'start\\nprogram ok\\nsetup ok\\ntest 0 running\\ntest 0 passed\\ndone\\n')\n"
         "    except OSError:\n        pass\nos._exit(0)\n"),
    Case("forged_lines_guessed_nonce", "fake-success",
         "import os\nline = ('0' * 32 + ' ').encode()\nfor fd in range(3, 256):\n    try:\n"
         "        os.write(fd, line + b'test 0 passed\\n' + line + b'done\\n')\n    except OSError:\n        pass\nos._exit(0)\n"),
    Case("replace_exec_and_compile", "fake-success",
         "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n", status=("failed",)),
    Case("swap_assertion_error", "fake-success",
         "import builtins\nbuiltins.AssertionError = type('Fake', (Exception,), {})\n"
         "builtins.BaseException = type('Fake2', (Exception,), {})\ndef f(x):\n    return x\n", status=("failed",)),
    Case("tamper_main_module", "fake-success",
         "import sys, __main__\nsys.modules['__main__'].__dict__['say'] = None\n__main__.exec = None\ndef f(x):\n    return x\n",
         status=("failed",)),
    Case("atexit_exit0", "fake-success", "import atexit, os\natexit.register(os._exit, 0)\ndef f(x):\n    return x\n", status=("failed",)),
    Case("keyboard_interrupt_in_test", "fake-success", "def f(x):\n    raise KeyboardInterrupt\n", status=("failed",),
         detail="KeyboardInterrupt"),
    Case("fork_and_parent_exits", "fake-success",
         LIBC + "if libc.fork() != 0:\n    os._exit(0)\ndef f(x):\n    return x + 1\n", kernel=True),
]

CLEAN = [
    Job("def f(x):\n    return x + 1\n", ("assert f(1) == 2", "assert f(-1) == 0")),
    Job("import collections, heapq, math, re, itertools\n\ndef f(xs):\n    return heapq.nlargest(2, xs)\n",
        ("assert f([1, 5, 3]) == [5, 3]",)),
    Job("import os\nos.close(1)\nos.close(2)\ndef f(x):\n    return x + 1\n", ("assert f(1) == 2",)),
    Job("open('scratch.txt', 'w').write('hi')\nDATA = open('scratch.txt').read()\n", ("assert DATA == 'hi'",)),
    Job("for i in range(200):\n    print('line', i)\ndef f(s):\n    return s[::-1]\n", ("assert f('ab') == 'ba'",)),
    Job("import math\n", ("assert math.isclose(f(2), 4)",), setup="def f(x):\n    return x * x\n"),
]


@functools.lru_cache(maxsize=1)
def _public_python() -> str | None:
    """An interpreter other users can run with its standard library (for the fallback mode, which
    needs root to switch uid); probed once per session."""
    if os.geteuid() != 0:
        return None
    for cand in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if cand and os.path.exists(cand):
            res = run_program(Job("", ("assert True",)), FAST, contain=Isolation((), True, cand))
            if res.passed and isinstance(res.isolation.get("uid"), int):
                return cand
    return None


def _kernel_contained(res) -> bool:
    facts = res.isolation
    return "pid" in facts.get("namespaces", []) or (isinstance(facts.get("uid"), int) and facts["uid"] >= UID_BASE)


MODES = ["probed", "fallback"]


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    """Things outside the sandbox that hostile programs aim at."""
    try:
        base = Path(request.config.cache.mkdir("codestage-sandbox-victims"))
    except Exception:  # noqa: BLE001 - no cache plugin: fall back to a temp dir
        base = tmp_path_factory.mktemp("victims")
    vdir = Path(tempfile.mkdtemp(dir=base))
    vdir.chmod(0o755)  # visible to other users, writable only by its owner: the common case
    vfile = vdir / "victim.txt"
    vfile.write_text("original")
    vfile.chmod(0o644)
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    tcp = []
    for _ in range(4):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        tcp.append(s)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    host_tmp = Path(tempfile.gettempdir()) / f"codestage-hostile-{os.getpid()}-{os.urandom(4).hex()}"
    subs = {
        "@VICTIM_FILE@": str(vfile), "@VICTIM_DIR@": str(vdir), "@VICTIM_PID@": str(victim.pid),
        "@HOST_TMP@": str(host_tmp), "@UDPPORT@": str(udp.getsockname()[1]),
        **{f"@PORT{i}@": str(s.getsockname()[1]) for i, s in enumerate(tcp)},
    }
    yield {"vfile": vfile, "vdir": vdir, "victim": victim, "tcp": tcp, "udp": udp, "host_tmp": host_tmp, "subs": subs}
    victim.kill()
    victim.wait()
    for s in (*tcp, udp):
        s.close()
    shutil.rmtree(vdir, ignore_errors=True)
    host_tmp.unlink(missing_ok=True)
    try:
        base.rmdir()  # only if no other session's victims are in it
    except OSError:
        pass


def _render(program: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        program = program.replace(key, value)
    return program


def _run_batch(mode: str, world, tmp_path_factory) -> dict:
    """One mixed batch (hostile cases interleaved with clean jobs) through `run_many`."""
    if mode == "probed":
        contain, cases = None, CASES
    else:
        if os.geteuid() != 0:
            return {"skip": "the uid-switch fallback needs root"}
        python = _public_python()
        if python is None:
            return {"skip": "no Python readable by other users for the uid-switch fallback"}
        contain, cases = Isolation((), True, python), [c for c in CASES if c.kernel]
    probe = run_program(Job("", ("assert True",)), FAST, contain=contain)
    if not _kernel_contained(probe):
        return {"skip": f"{mode}: no PID namespace and no uid switch here ({probe.isolation}); kernel-level attacks not run"}
    jobs: list[Job] = []
    kinds: list[tuple[str, int]] = []
    clean = iter(range(len(CLEAN)))
    for i, case in enumerate(cases):
        jobs.append(Job(_render(case.program, world["subs"]), case.tests))
        kinds.append(("hostile", i))
        if i % 8 == 3:
            j = next(clean, None)
            if j is not None:
                jobs.append(CLEAN[j])
                kinds.append(("clean", j))
    for j in clean:
        jobs.append(CLEAN[j])
        kinds.append(("clean", j))
    sandboxes = tmp_path_factory.mktemp(f"sandboxes-{mode}")
    saved, tempfile.tempdir = tempfile.tempdir, str(sandboxes)
    try:
        results = run_many(jobs, FAST, workers=2, contain=contain)
    finally:
        tempfile.tempdir = saved
    reached = _drain(world)  # what got through to the listeners during this batch
    hostile = {cases[i].name: r for (kind, i), r in zip(kinds, results) if kind == "hostile"}
    clean_results = [r for (kind, _), r in zip(kinds, results) if kind == "clean"]
    return {"mode": mode, "hostile": hostile, "clean": clean_results, "facts": probe.isolation, "sandboxes": sandboxes,
            "reached": reached}


def _drain(world) -> int:
    """Connections accepted and datagrams received since the last call."""
    n = 0
    for s in world["tcp"]:
        while True:
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                break
            conn.close()
            n += 1
    while True:
        try:
            world["udp"].recv(16)
        except BlockingIOError:
            break
        n += 1
    return n


@pytest.fixture(scope="module")
def batches(world, tmp_path_factory):
    """Each mode's batch, run once per module (parametrized tests look theirs up)."""
    cache: dict[str, dict] = {}

    def get(mode: str) -> dict:
        if mode not in cache:
            cache[mode] = _run_batch(mode, world, tmp_path_factory)
        return cache[mode]

    return get


@pytest.fixture
def batch(request, batches) -> dict:
    got = batches(request.param)
    if "skip" in got:
        pytest.skip(got["skip"])
    return got


# Python-level containment is the same in every mode: the fallback batch runs the kernel-level cases.
COMBOS = [("probed", c) for c in CASES] + [("fallback", c) for c in CASES if c.kernel]


@pytest.mark.slow  # each mode's hostile batch takes 7-13 s
@pytest.mark.parametrize(("batch", "case"), COMBOS, ids=[f"{m}-{c.name}" for m, c in COMBOS], indirect=["batch"])
def test_hostile_program_is_contained_with_a_clear_status(batch, case: Case) -> None:
    res = batch["hostile"][case.name]
    if case.needs == "net" and "net" not in batch["facts"].get("namespaces", []):
        pytest.skip("no network namespace: raw sockets are not contained (documented limit, docs/reliability.md)")
    assert res.status in case.status, (case.name, res)
    assert not res.passed
    assert len(res.tests) == len(case.tests) and all(isinstance(t, str) and t for t in res.tests)
    if case.detail:
        text = " | ".join([res.detail, *res.tests])
        assert re.search(case.detail, text), (case.name, res)
    assert leftover_processes(res) == [], case.name


@pytest.mark.slow  # each mode's hostile batch takes 7-13 s
@pytest.mark.parametrize("batch", MODES, indirect=True)
def test_clean_items_in_the_same_batch_pass(batch) -> None:
    assert len(batch["clean"]) == len(CLEAN)
    assert [r.status for r in batch["clean"]] == ["passed"] * len(CLEAN), batch["clean"]


@pytest.mark.slow  # each mode's hostile batch takes 7-13 s
@pytest.mark.parametrize("batch", MODES, indirect=True)
def test_nothing_outside_the_sandbox_was_touched(batch, world) -> None:
    assert world["vfile"].read_text() == "original"
    assert stat.S_IMODE(world["vfile"].stat().st_mode) == 0o644
    assert sorted(p.name for p in world["vdir"].iterdir()) == ["victim.txt"]
    assert world["victim"].poll() is None, "the victim process was killed"
    assert not world["host_tmp"].exists(), "a file was left in the shared temp directory"
    assert list(batch["sandboxes"].iterdir()) == [], "a run's working directory was left behind"
    if "net" in batch["facts"].get("namespaces", []):
        assert batch["reached"] == 0, "a connection or datagram got out"


@pytest.mark.slow  # each mode's hostile batch takes 7-13 s
@pytest.mark.parametrize("batch", MODES, indirect=True)
def test_every_run_left_no_process(batch) -> None:
    everything = [*batch["hostile"].values(), *batch["clean"]]
    assert all(r.run_id for r in everything)
    assert [r.run_id for r in everything if leftover_processes(r)] == []


# -- the parent's environment ------------------------------------------------------------------

SECRET_NAME = "CODESTAGE_TEST_SECRET"
ENV_PROBES = [
    "import os\nFOUND = [v for k, v in os.environ.items() if 'SECRET' in k]\nprint(FOUND)\n",
    "import os\ntry:\n    FOUND = b'@NAME@' in open(f'/proc/{os.getppid()}/environ', 'rb').read()\nexcept OSError as e:\n    FOUND = False\n",
    "FOUND = b'@NAME@' in open('/proc/@HELPER@/environ', 'rb').read()\n",
    "import os\nFOUND = []\nfor p in os.listdir('/proc'):\n    try:\n        data = open(f'/proc/{p}/environ', 'rb').read()\n"
    "    except OSError:\n        continue\n    FOUND += [e for e in data.split(b'\\0') if e.startswith(b'@NAME@')]\nprint(FOUND)\n",
    "pid, FOUND = 'self', []\nwhile pid not in ('0', '1'):\n    status = open(f'/proc/{pid}/status').read()\n"
    "    pid = status.split('PPid:')[1].split()[0]\n    try:\n        FOUND += [open(f'/proc/{pid}/environ', 'rb').read()]\n"
    "    except OSError:\n        pass\nFOUND = [x for x in FOUND if b'@NAME@' in x]\nprint(FOUND)\n",
]
HELPER = """
import json, os, sys
from codestage.eval.sandbox import Isolation, Job, Limits, run_many
progs = [p.replace('@HELPER@', str(os.getpid())) for p in json.loads(sys.argv[1])]
spec = json.loads(sys.argv[2])
contain = Isolation(tuple(spec[0]), spec[1], spec[2]) if spec else None
res = run_many([Job(p, ('assert FOUND',)) for p in progs], Limits(timeout_s=5, memory_mb=256), contain=contain)
print(json.dumps([[r.status, r.tests, r.detail, r.output] for r in res]))
"""


@pytest.mark.parametrize("mode", MODES)
def test_parent_environment_secrets_do_not_reach_the_program(mode: str) -> None:
    contain = None
    if mode == "fallback":
        python = _public_python()
        if python is None:
            pytest.skip("the uid-switch fallback needs root and a Python readable by other users")
        contain = [[], True, python]
    probe = run_program(Job("", ("assert True",)), FAST, contain=Isolation(*contain) if contain else None)
    if not _kernel_contained(probe):
        pytest.skip("no PID namespace and no uid switch: other processes' environments are readable (documented limit)")
    secret = os.urandom(12).hex()
    progs = [p.replace("@NAME@", SECRET_NAME) for p in ENV_PROBES]
    env = {**os.environ, SECRET_NAME: secret}
    out = subprocess.run(
        [sys.executable, "-c", HELPER, json.dumps(progs), json.dumps(contain)],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) == len(ENV_PROBES)
    for prog, (status, tests, detail, output) in zip(ENV_PROBES, results):
        assert status in ("failed", "error") and tests != ["passed"], (prog, status, tests, detail)
        assert secret not in output and secret not in detail


def test_the_child_environment_is_minimal() -> None:
    allowed = {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
               "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CODESTAGE_SANDBOX_RUN", "LC_CTYPE"}
    res = run_program(Job("import os\nKEYS = set(os.environ)\n", (f"assert KEYS <= {allowed!r}, KEYS",)), FAST)
    assert res.passed, res


def test_probed_isolation_is_reported() -> None:
    iso = isolation()
    res = run_program(Job("", ("assert True",)), FAST)
    assert res.passed
    facts = res.isolation
    assert facts["namespaces"] == list(iso.namespaces)
    assert facts["no_new_privs"] is True
    if os.geteuid() == 0:
        assert isinstance(facts["uid"], int) and facts["uid"] >= UID_BASE or str(facts["uid"]).startswith("kept")
    if "mount" in iso.namespaces:
        assert facts["tmp"] == "private"


def test_a_timeout_kills_the_whole_tree_quickly() -> None:
    # The tree of a resilient fork bomb is gone right after the wall-clock limit.
    if not _kernel_contained(run_program(Job("", ("assert True",)), FAST)):
        pytest.skip("no PID namespace and no uid switch here")
    res = run_program(Job(LIBC + "while True:\n    libc.fork()\n", WRONG), Limits(timeout_s=1.0, memory_mb=256))
    assert res.status == "timeout" and res.duration_s < 4
    assert leftover_processes(res) == []


ORPHANS = """
import json, sys
from codestage.eval.sandbox import Isolation, Job, Limits, run_program
spec = json.loads(sys.argv[1])
program = '''
import ctypes, time
libc = ctypes.CDLL(None)
for _ in range(2):
    if libc.fork() == 0:
        libc.setsid()
        libc.prctl(15, b"cstg-orphan", 0, 0, 0)
        while True:
            time.sleep(1)
libc.prctl(15, b"cstg-orphan", 0, 0, 0)
time.sleep(1000)
'''
print("starting", flush=True)
run_program(Job(program, ("assert True",)), Limits(timeout_s=float(spec[3])),
            contain=Isolation(tuple(spec[0]), spec[1], spec[2]) if spec[0] is not None else None)
"""


def _named(comm: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                if "Z" not in Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]:
                    out.append(int(pid))
        except OSError:
            pass
    return out


@pytest.mark.slow  # each mode's hostile batch takes 7-13 s
@pytest.mark.parametrize("mode", MODES)
def test_when_the_evaluating_process_dies_its_sandboxes_die_too(mode: str, tmp_path: Path) -> None:
    # SIGKILL the process running the sandbox (no sweep can run); sleeping orphans that left the
    # process group must still go: with the PID namespace at once, with the uid watchdog after
    # the wall-clock limit + 2 s.
    if _named("cstg-orphan"):
        pytest.skip("processes named cstg-orphan exist already")
    spec: list = [None, None, None, 3.0]
    if mode == "fallback":
        python = _public_python()
        if python is None:
            pytest.skip("the uid-switch fallback needs root and a Python readable by other users")
        spec = [[], True, python, 3.0]
    probe = run_program(Job("", ("assert True",)), FAST, contain=Isolation(*spec[:3]) if spec[0] is not None else None)
    if not _kernel_contained(probe):
        pytest.skip("no PID namespace and no uid switch here")
    # The killed helper cannot remove its run's (empty) working directory: keep it in tmp_path.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    helper = subprocess.Popen([sys.executable, "-c", ORPHANS, json.dumps(spec)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert helper.stdout.readline().strip() == "starting"
        deadline = time.monotonic() + 10
        while len(_named("cstg-orphan")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_named("cstg-orphan")) == 3
    finally:
        helper.kill()
        helper.wait()
        helper.stdout.close()
    deadline = time.monotonic() + 3.0 + 2 + 5
    while _named("cstg-orphan") and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _named("cstg-orphan")
    for pid in left:  # never leave them behind, even when the assertion below fails
        os.kill(pid, signal.SIGKILL)
    assert left == []
