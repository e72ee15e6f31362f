"""Atomic writes under injected faults: a reader sees the previous complete version or the new one.

Faults: an exception inside an `atomic_dir` body or while encoding a `write_text`; the exchange
unavailable (the move-aside fallback); a full disk (a file-size limit in a child process); and
SIGKILL of a writer at random moments, both with the atomic exchange and with the fallback (whose
crash window the next write repairs). After every fault the target holds one complete version and
no temporary file or folder is left behind (except a killed writer's own temp folder).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codestage.atomic as atomic
from codestage.atomic import atomic_dir, recover, write_json, write_text

FUZZ = settings(derandomize=True, max_examples=60, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

OP = st.tuples(
    st.sampled_from(["text", "json", "dir"]),
    st.integers(0, 10**6),  # version
    st.integers(1, 4),  # files in a folder version
    st.booleans(),  # fault
    st.booleans(),  # exchange available
)


def _read_dir(path: Path) -> tuple[int, int] | None:
    """(version, files) of a folder version, asserting it is complete and consistent."""
    if not path.exists():
        return None
    names = sorted(os.listdir(path))
    versions = {(path / n).read_text() for n in names}
    assert len(versions) == 1 and names == [f"f{i}" for i in range(len(names))], (names, versions)
    return int(versions.pop()), len(names)


@FUZZ
@given(ops=st.lists(OP, min_size=1, max_size=6))
def test_faults_leave_the_last_complete_version(ops) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        text_state = json_state = dir_state = None
        real_exchange = atomic._exchange
        try:
            for kind, version, n_files, fault, exchange in ops:
                atomic._exchange = real_exchange if exchange else (lambda a, b: False)
                if kind == "text":
                    body = f"version {version}\n" + ("\ud800" if fault else "")  # a lone surrogate cannot be encoded
                    try:
                        write_text(root / "r.txt", body)
                        text_state = body
                    except UnicodeEncodeError:
                        assert fault
                elif kind == "json":
                    obj: dict = {"version": version}
                    if fault:
                        obj["self"] = obj  # a circular reference cannot be serialized
                    try:
                        write_json(root / "r.json", obj)
                        json_state = obj
                    except ValueError:
                        assert fault
                else:
                    try:
                        with atomic_dir(root / "d") as d:
                            for i in range(n_files):
                                (d / f"f{i}").write_text(str(version))
                                if fault and i == n_files - 1:
                                    raise RuntimeError("fault inside the body")
                        dir_state = (version, n_files)
                    except RuntimeError:
                        assert fault
                if text_state is not None:
                    assert (root / "r.txt").read_text() == text_state
                if json_state is not None:
                    assert json.loads((root / "r.json").read_text()) == json_state
                assert _read_dir(root / "d") == dir_state
                assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []
        finally:
            atomic._exchange = real_exchange


def test_new_files_get_umask_permissions_and_keep_existing_ones(tmp_path: Path) -> None:
    write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK
    (tmp_path / "a.txt").chmod(0o600)
    write_text(tmp_path / "a.txt", "y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o600
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("z")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~atomic._UMASK


def test_a_full_disk_leaves_the_old_version(tmp_path: Path) -> None:
    # RLIMIT_FSIZE in a child stands in for ENOSPC: the write fails half-way (EFBIG).
    write_text(tmp_path / "r.txt", "old")
    with atomic_dir(tmp_path / "d") as d:
        (d / "f0").write_text("old")
    code = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from codestage.atomic import atomic_dir, write_text
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        failures = 0
        try:
            write_text(Path({str(tmp_path / 'r.txt')!r}), "x" * 100_000)
        except OSError:
            failures += 1
        try:
            with atomic_dir(Path({str(tmp_path / 'd')!r})) as d:
                (d / "f0").write_text("y" * 100_000)
        except OSError:
            failures += 1
        sys.exit(0 if failures == 2 else 1)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert (tmp_path / "r.txt").read_text() == "old"
    assert (tmp_path / "d" / "f0").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "r.txt"]


WRITER = """
import sys, itertools
from pathlib import Path
import codestage.atomic as atomic
root, exchange = Path(sys.argv[1]), sys.argv[2] == "1"
if not exchange:
    atomic._exchange = lambda a, b: False
for v in itertools.count(1):
    with atomic.atomic_dir(root / "d") as d:
        for i in range(1 + v % 5):
            (d / f"f{i}").write_text(str(v))
    atomic.write_text(root / "r.txt", str(v) * (1 + v % 3000))
    if v == 1:
        print("ready", flush=True)  # a first complete version of each: from here on one must always exist
"""


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "move-aside"])
def test_sigkill_at_random_moments_leaves_a_complete_version(tmp_path: Path, exchange: bool) -> None:
    rng = random.Random(7)
    for round_ in range(8):
        root = tmp_path / f"r{round_}"
        root.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), "1" if exchange else "0"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"  # however slowly the machine got there
        time.sleep(rng.uniform(0.02, 0.25))  # a random moment among the writes that follow
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if not exchange:
            recover(root / "d")  # what the next atomic_dir does first
        got = _read_dir(root / "d")
        assert got is not None, "the folder vanished"
        assert (root / "r.txt").exists(), "the file vanished"
        text = (root / "r.txt").read_text()
        assert any(text[:n].isdigit() and text == text[:n] * (1 + int(text[:n]) % 3000) for n in range(1, 8)), \
            f"a torn write_text: {text[:40]!r}... ({len(text)} chars)"
        # The next write repairs and replaces; only a killed writer's own temp folder may remain.
        with atomic_dir(root / "d") as d:
            (d / "f0").write_text("0")
        assert _read_dir(root / "d") == (0, 1)
        assert not (root / ".d.old").exists()


def test_a_crash_between_the_two_renames_of_the_fallback_is_repaired(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "d") as d:
        (d / "f0").write_text("1")
    os.replace(tmp_path / "d", tmp_path / ".d.old")  # the fallback's first rename, then a crash
    recover(tmp_path / "d")
    assert _read_dir(tmp_path / "d") == (1, 1)
    os.replace(tmp_path / "d", tmp_path / ".d.old")
    with atomic_dir(tmp_path / "d") as d:  # the next write repairs first, then replaces
        (d / "f0").write_text("2")
    assert _read_dir(tmp_path / "d") == (2, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
