"""Ctrl-C: real commands in real subprocesses get real SIGINTs.

The first Ctrl-C stops a command within seconds, with exit status 130, and leaves its outputs as
they were (the previous results or store, byte for byte, and no temporary folder); sandboxed
programs and worker processes do not outlive it. A second Ctrl-C ends a command even while its
main thread is inside one long tokenizer call, where Python runs no signal handler.

On a loaded machine every step takes longer, so the tests wait on a condition (a sandboxed program
asleep, a store's first tokens, a marker written as the tokenizer call starts), never a fixed sleep,
and their time limits sit far from what the bug each guards against would take.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from codestage.resources import bundled

pytestmark = pytest.mark.slow  # each test starts codestage two or three times (imports: ~5 s each)

SRC = Path(__file__).resolve().parents[1] / "src"


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "TMPDIR": str(tmp)}


def _codestage(args: list[str], env: dict[str, str], *, main: tuple[str, ...] = ("-m", "codestage.cli"),
               **kw) -> subprocess.Popen:
    # a session of its own: the test signals exactly the processes a terminal's Ctrl-C would reach
    return subprocess.Popen([sys.executable, "-X", "faulthandler", *main, *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


# `codestage` whose tokenizer calls first touch the file named by CODESTAGE_TEST_TOKENIZING: the
# test then knows the main thread is entering the native call (a sleep only guesses)
MARKED_TOKENIZER = """
import os, sys
import codestage.data.encode as encode
real = encode._encoder
def _encoder(setup):
    tokenize = real(setup)
    def marked(texts):
        open(os.environ["CODESTAGE_TEST_TOKENIZING"], "w").close()
        return tokenize(texts)
    return marked
encode._encoder = _encoder
from codestage.cli import main
sys.argv[0] = "codestage"
main()
"""


def _wait_until(pred: Callable[[], bool], timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"the command ended before the test could interrupt it:\n{proc.stdout.read()[-2000:]}")
        if time.monotonic() > end:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the command never reached the point to interrupt")
        time.sleep(0.05)


def _ended_within(proc: subprocess.Popen, seconds: float) -> tuple[int, float, str]:
    start = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)  # faulthandler: where every thread is
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"still running {seconds} s after Ctrl-C:\n{out[-6000:]}") from None
    return proc.returncode, time.monotonic() - start, out


def _group_members(pgid: int, wait: float = 3.0) -> list[str]:
    """Command lines of the processes still in group `pgid` after up to `wait` seconds."""
    end = time.monotonic() + wait
    while True:
        members = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    members.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
            except (OSError, IndexError, ValueError):
                continue
        if not members or time.monotonic() > end:
            return members
        time.sleep(0.1)


def _processes_with_tmpdir(tmp: Path) -> list[int]:
    """Live processes whose TMPDIR lies under `tmp` (the sandboxed programs of this test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(v.startswith(f"TMPDIR={tmp}".encode()) for v in env.split(b"\0")):
            found.append(int(entry.name))
    return found


def _sandboxed_program_asleep(tmp: Path) -> bool:
    """Whether a sandboxed process (its TMPDIR a sandbox folder under `tmp`) sleeps in the kernel's
    timed sleep, as the programs' time.sleep does. A sleeping process's wchan names where it sleeps;
    "0" is a running one, or any one where the kernel hides it: then a sleeping state has to do."""
    for pid in _processes_with_tmpdir(tmp / "codestage-sandbox-"):
        try:
            wchan = Path(f"/proc/{pid}/wchan").read_text()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if "sleep" in wchan or (wchan in ("", "0") and state == "S"):
            return True
    return False


def _mbpp(folder: Path, body: str, n: int) -> Path:
    (folder / "mbpp").mkdir(parents=True, exist_ok=True)
    rows = [{"text": f"Return x ({i}).", "code": f"def f(x):\n{body}    return x\n", "task_id": 11 + i,
             "test_setup_code": "", "test_list": ["assert f(1) == 1"], "challenge_test_list": []} for i in range(n)]
    (folder / "mbpp" / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_ctrl_c_stops_sandboxed_programs_at_once_and_keeps_the_previous_results(tmp_path: Path) -> None:
    env, out = _env(tmp_path), tmp_path / "eval"
    quick = _mbpp(tmp_path / "quick", "", 2)
    done = _codestage(["eval", "--tasks", "mbpp", "--check-references", "--data-dir", str(quick), "--out", str(out), "--quiet"], env)
    code, _, log = _ended_within(done, 120)
    assert code == 0, log[-2000:]
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # eight programs that each sleep ten minutes: without the fix the command waited for all of them
    slow = _mbpp(tmp_path / "slow", "    import time\n    time.sleep(600)\n", 8)
    proc = _codestage(["eval", "--tasks", "mbpp", "--check-references", "--data-dir", str(slow), "--out", str(out),
                       "--timeout", "900", "--quiet"], env)
    _wait_until(lambda: _sandboxed_program_asleep(tmp_path), 300, proc)  # a program is running
    os.kill(proc.pid, signal.SIGINT)
    code, seconds, log = _ended_within(proc, 120)
    assert code == 130 and "interrupted" in log, log[-2000:]
    assert seconds < 60, seconds  # 3-4 s on a quiet machine (the interpreter's exit); a program alone sleeps 600
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous results, byte for byte
    assert not list(tmp_path.glob("codestage-sandbox-*")) and not _processes_with_tmpdir(tmp_path)


def _corpus(path: Path, megabytes: float, *, doc_chars: int | None = None) -> Path:
    """The bundled English corpus repeated to about `megabytes`, or cut into documents of `doc_chars`."""
    import gzip

    with gzip.open(bundled("corpora", "nl_en.jsonl.gz"), "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    if doc_chars is not None:
        text = " ".join(texts)
        texts = [(text * (doc_chars // len(text) + 1))[:doc_chars]]
    block = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    path.write_text(block * max(1, round(megabytes * 1e6 / len(block))), encoding="utf-8")
    return path


def test_ctrl_c_stops_a_parallel_build_and_keeps_the_previous_store(tmp_path: Path, tokenizer_dir: Path) -> None:
    env, store = _env(tmp_path), tmp_path / "store"
    small = _corpus(tmp_path / "small.jsonl", 0.2)
    done = _codestage(["data", "build", str(small), "--tokenizer", str(tokenizer_dir), "--out", str(store), "--workers", "1"], env)
    code, _, log = _ended_within(done, 120)
    assert code == 0, log[-2000:]
    before = {p.name: p.read_bytes() for p in store.iterdir()}

    big = _corpus(tmp_path / "big.jsonl", 60)  # about a minute of tokenizing on 2 workers
    proc = _codestage(["data", "build", str(big), "--tokenizer", str(tokenizer_dir), "--out", str(store), "--workers", "2"], env)
    _wait_until(lambda: any((p / "tokens.bin").is_file() and (p / "tokens.bin").stat().st_size > 0
                            for p in tmp_path.glob(".store.*.tmp")), 120, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    code, seconds, log = _ended_within(proc, 60)
    assert code == 130 and "interrupted" in log, log[-2000:]
    assert seconds < 20, seconds  # 1-1.5 s on a quiet machine; the rest of the build takes about a minute
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before
    assert not list(tmp_path.glob(".store.*"))  # no temporary store left
    assert _group_members(proc.pid, wait=15) == []  # no worker process outlives the command


def test_a_second_ctrl_c_ends_a_command_stuck_in_the_tokenizer(tmp_path: Path, tokenizer_dir: Path) -> None:
    """Inline (one worker), documents of 4 MB: one tokenizer call takes seconds and holds the main
    thread in native code, so the first Ctrl-C waits for it; the second must not."""
    marker = tmp_path / "tokenizing"
    env = {**_env(tmp_path), "CODESTAGE_TEST_TOKENIZING": str(marker)}
    huge = _corpus(tmp_path / "huge.jsonl", 12, doc_chars=4_000_000)
    proc = _codestage(["data", "build", str(huge), "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "store"),
                       "--workers", "1"], env, main=("-c", MARKED_TOKENIZER))
    _wait_until(marker.exists, 120, proc)  # the first batch's tokenizer call starts
    time.sleep(0.2)  # past the few Python instructions into the native call, which runs for seconds
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
    code, seconds, log = _ended_within(proc, 20)
    assert code in (130, -signal.SIGINT), log[-2000:]
    assert seconds < 2, seconds  # 0.07-0.12 s on a quiet machine; the call alone runs on for seconds more
    assert not (tmp_path / "store").exists()


CUT_MID_RESULT = """
import signal, sys
from codestage.data.parallel import ordered_map

def _stop(*_):
    raise KeyboardInterrupt

if __name__ == "__main__":
    signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_REAL, float(sys.argv[1]))
    try:
        for _ in ordered_map(bytes, [100_000_000] * 16, workers=2, initializer=int):
            pass
    except KeyboardInterrupt:
        print("stopped", flush=True)
"""


@pytest.mark.parametrize("after", [1.0, 2.5])
def test_ctrl_c_stops_a_pool_whose_worker_is_cut_off_mid_result(tmp_path: Path, after: float) -> None:
    """Workers sending 100 MB results: Ctrl-C lands while one is half-way through writing its result.
    Terminated there, it left the pool's manager thread waiting for the rest of the message, and the
    shutdown waiting for that thread, for ever (the parallel build above hung so, now and then)."""
    proc = subprocess.run([sys.executable, "-c", CUT_MID_RESULT, str(after)], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "stopped" in proc.stdout, proc.stderr[-2000:]
