"""Child side of the sandbox: limit itself, disarm dangerous calls, run program + tests, report.

Run as `python -I _sandbox_runner.py SPEC.json`, in a throw-away working directory, by
`codestage.eval.sandbox`. It imports nothing from codestage. It applies the resource limits to
itself before any untrusted code runs (so they cannot be lifted), replaces network, process and
destructive file-system calls with ones that raise, then executes the program, the setup code and
each test in one namespace, appending one status line per step to the report file as it goes
(so a timeout still tells which tests ran).
"""

import builtins
import io
import json
import os
import resource
import sys


def _limit(spec):
    mem = int(spec["memory_mb"]) * 1024 * 1024
    cpu = int(spec["cpu_s"])
    out = int(spec["output_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (out, out))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _disarm(workdir):
    def refuse(name):
        def _refused(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in the codestage sandbox")

        return _refused

    import shutil
    import socket
    import subprocess

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd"):
        if hasattr(socket, name):
            setattr(socket, name, refuse(f"socket.{name}"))
    for name in (
        "system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execvp", "execvpe",
        "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnl", "spawnle", "posix_spawn",
        "posix_spawnp", "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
        "truncate", "chmod", "chown", "lchown", "fchmod", "fchown", "link", "symlink", "setuid",
        "setgid", "putenv", "chroot", "chdir", "fchdir",
    ):
        if hasattr(os, name):
            setattr(os, name, refuse(f"os.{name}"))
    for name in ("rmtree", "move", "chown", "copytree", "copyfile", "copy", "copy2"):
        setattr(shutil, name, refuse(f"shutil.{name}"))
    subprocess.Popen = refuse("subprocess.Popen")
    for name in ("run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
        setattr(subprocess, name, refuse(f"subprocess.{name}"))

    real_open = builtins.open
    root = os.path.realpath(workdir)

    def guarded_open(file, mode="r", *args, **kwargs):
        writing = any(c in mode for c in "wax+")
        if writing and not isinstance(file, int):
            target = os.path.realpath(os.fspath(file))
            if not (target == root or target.startswith(root + os.sep)):
                raise PermissionError(f"writing {file!r} outside the sandbox directory is disabled")
        return real_open(file, mode, *args, **kwargs)

    builtins.open = guarded_open
    io.open = guarded_open


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    report = open(spec["report"], "a", encoding="utf-8", buffering=1)

    def say(line):
        report.write(line.replace("\n", " ")[:300] + "\n")
        report.flush()

    _limit(spec)
    _disarm(os.getcwd())
    sys.setrecursionlimit(10000)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    say("start")
    for step, source in (("program", spec["program"]), ("setup", spec["setup"])):
        try:
            exec(compile(source, f"<{step}>", "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001 - the program's failure is the result
            say(f"{step} error {type(exc).__name__}: {exc}")
            return
        say(f"{step} ok")
    for i, test in enumerate(spec["tests"]):
        say(f"test {i} running")
        try:
            exec(compile(test, f"<test {i}>", "exec"), namespace)
        except AssertionError:
            say(f"test {i} failed")
        except BaseException as exc:  # noqa: BLE001
            say(f"test {i} error {type(exc).__name__}: {exc}")
        else:
            say(f"test {i} passed")
    say("done")


if __name__ == "__main__":
    main()
