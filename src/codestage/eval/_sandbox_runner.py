"""Child side of the sandbox: isolate itself, limit itself, disarm dangerous calls, run, report.

Run as `python -I _sandbox_runner.py` by `codestage.eval.sandbox`, with the job spec on stdin and
an inherited pipe for the report. It imports nothing from codestage. Before any untrusted code runs
it (when the parent asked and the kernel allows) mounts private tmpfs over the world-writable
directories, switches to the run's own unprivileged uid, sets no_new_privs, applies the resource
limits (so they cannot be lifted), and replaces network, process and destructive file-system calls
with ones that raise. It then executes the program, the setup code and each test in one module
namespace, writing one status line per step to the report pipe as it goes (so a timeout still tells
which tests ran). Every line starts with a per-run nonce that the parent generated and that never
touches the disk or the environment, so text the program prints or writes elsewhere cannot pass for
a result. Everything the reporting needs is bound to local names before untrusted code runs.
"""

import builtins
import json
import os
import resource
import sys
import types

# Mount flags (linux/mount.h).
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 32, 4096, 16384
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _private_tmp(size_bytes):
    """Mount a fresh tmpfs over each world-writable directory (needs a private mount namespace);
    returns the new working directory, or None when mounting is not possible."""
    libc = _libc()
    for d in _SHARED_DIRS:
        if os.path.islink(d) or not os.path.isdir(d):
            continue
        opts = f"size={size_bytes},mode=1777".encode()
        if libc.mount(b"tmpfs", d.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts) != 0 and d == "/tmp":
            return None
    work = "/tmp/codestage-work"
    os.mkdir(work, 0o700)
    return work


def _public(path):
    """Whether a uid that owns nothing can read `path` (every ancestor searchable by others)."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(1, len(parts) + 1):
        here = os.sep.join(parts[:i]) or os.sep
        try:
            mode = os.stat(here).st_mode
        except OSError:
            return False
        need = 0o005 if i == len(parts) else 0o001
        if mode & need != need:
            return False
    return True


def _expose_python(private_tmp):
    """Make the interpreter's import path readable after the uid switch. A Python installed
    under a private directory (pyenv in /root) is bound read-only into the private /tmp and
    `sys.path` is pointed there; returns False when that is needed but impossible."""
    blocked = [p for p in sys.path if p and os.path.exists(p) and not _public(p)]
    if not blocked:
        return True
    if not private_tmp:
        return False
    roots = []
    for prefix in sorted({sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix}):
        if any(p == prefix or p.startswith(prefix + os.sep) for p in blocked) and not any(
            prefix.startswith(r + os.sep) for r in roots
        ):
            roots.append(prefix)
    if not all(any(p == r or p.startswith(r + os.sep) for r in roots) for p in blocked):
        return False
    libc = _libc()
    mapping = {}
    for i, root in enumerate(roots):
        dst = f"/tmp/.codestage-python-{i}"
        os.mkdir(dst, 0o755)
        if libc.mount(root.encode(), dst.encode(), None, _MS_BIND | _MS_REC, None) != 0:
            return False
        libc.mount(None, dst.encode(), None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID, None)
        mapping[root] = dst
    def moved(p):
        for root, dst in mapping.items():
            if isinstance(p, str) and (p == root or p.startswith(root + os.sep)):
                return dst + p[len(root):]
        return p

    sys.path[:] = [moved(p) for p in sys.path]
    for module in list(sys.modules.values()):  # packages already imported find submodules here
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [moved(p) for p in search]
    sys.path_importer_cache.clear()
    return all(_public(p) for p in sys.path if p and os.path.exists(p))


def _no_new_privs():
    libc = _libc()
    return libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0


def _die_with_parent():
    """Renew the parent-death signal (a uid switch clears it): if whoever started this runner
    dies, so does the runner, and with it a PID namespace it is the init of."""
    libc = _libc()
    libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)


def _watchdog(seconds, close_fd):
    """A process under the run's uid that kills every process of that uid after `seconds`: the
    backstop for a parent that dies before its sweep, where no PID namespace ends the run."""
    import signal
    import time

    if os.fork():
        return
    try:
        os.close(close_fd)
        time.sleep(seconds)
        os.kill(-1, signal.SIGKILL)
    finally:
        os._exit(0)


def _tasks_of(uid):
    """Tasks (threads count, as RLIMIT_NPROC counts them) of `uid` visible in /proc."""
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            n += int(fields.get("Threads", "1").strip() or 1)
    return n


def _isolate(spec):
    """Apply what the parent asked for; returns the facts for the report's `isolation` line."""
    facts = {"namespaces": spec["namespaces"]}
    work = None
    if "mount" in spec["namespaces"]:
        try:
            work = _private_tmp(max(4 << 20, 8 * int(spec["output_bytes"])))
        except OSError:
            work = None
    facts["tmp"] = "private" if work else "shared"
    work = work or os.getcwd()
    uid = spec["uid"]
    if uid is not None and not _expose_python(facts["tmp"] == "private"):
        facts["uid"] = "kept: the Python installation is not readable by other users"
        uid = None
    elif uid is not None:
        try:
            os.chown(work, uid, uid)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            facts["uid"] = uid
        except OSError as exc:
            facts["uid"] = f"failed: {exc}"
    else:
        facts.setdefault("uid", os.getuid())
    if facts["tmp"] == "private":
        os.chdir(work)  # (the parent's directory is the cwd already; its ancestors may be closed to us)
    os.environ.update(HOME=work, TMPDIR=work)
    facts["no_new_privs"] = _no_new_privs()
    _die_with_parent()
    watchdog = spec.get("watchdog_s") is not None and facts["uid"] == uid and uid is not None
    if watchdog:
        _watchdog(float(spec["watchdog_s"]), int(spec["report_fd"]))

    mem = int(spec["memory_mb"]) * 1024 * 1024
    cpu = int(spec["cpu_s"])
    out = int(spec["output_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (out, out))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    procs = int(spec["processes"]) + (1 if watchdog else 0)
    if os.getuid() != 0 or "user" in spec["namespaces"]:
        # Counted per uid (per user namespace): a run's own uid or a fresh user namespace starts
        # from this process alone; a shared uid starts from what that user already runs. Root of a
        # user namespace is still held to it; real root is not.
        if not (facts["uid"] == uid or "user" in spec["namespaces"]):
            procs += _tasks_of(os.getuid())
        resource.setrlimit(resource.RLIMIT_NPROC, (procs, procs))
        facts["nproc"] = procs
    else:
        facts["nproc"] = "unenforced (root)"
    return work, facts


def _disarm(workdir):
    def refuse(name):
        def _refused(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in the codestage sandbox")

        return _refused

    import io
    import posix
    import shutil
    import signal
    import socket
    import subprocess

    root = os.path.realpath(workdir)

    def inside(path):
        if isinstance(path, int):
            return True
        target = os.path.realpath(os.fsdecode(os.fspath(path)))
        return target == root or target.startswith(root + os.sep)

    def refusing_class(base, name):
        # A subclass rather than a function, so `class SSLSocket(socket.socket)` and friends still
        # import and only making one raises.
        def __init__(self, *args, **kwargs):
            raise PermissionError(f"{name} is disabled in the codestage sandbox")

        return type(base.__name__, (base,), {"__init__": __init__, "__del__": lambda self: None})

    socket.socket = socket.SocketType = refusing_class(socket.socket, "socket.socket")
    for name in ("create_connection", "create_server", "socketpair", "fromfd"):
        if hasattr(socket, name):
            setattr(socket, name, refuse(f"socket.{name}"))
    refused = (
        "system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execvp", "execvpe",
        "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnl", "spawnle", "posix_spawn",
        "posix_spawnp", "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
        "truncate", "chmod", "chown", "lchown", "fchmod", "fchown", "link", "symlink", "setuid",
        "setgid", "chroot", "chdir", "fchdir", "setsid", "setpgid", "setpgrp",
        "pidfd_open", "mknod", "mkfifo",
    )
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError(f"writing {file!r} outside the sandbox directory is disabled")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & _WRITE_FLAGS and (dir_fd is not None or not inside(path)):
            raise PermissionError(f"writing {path!r} outside the sandbox directory is disabled")
        return real_os_open(path, flags, mode)

    def guarded_mkdir(path, mode=0o777, *, dir_fd=None):
        if dir_fd is not None or not inside(path):
            raise PermissionError(f"creating {path!r} outside the sandbox directory is disabled")
        return real_mkdir(path, mode)

    for module in (os, posix):  # `import posix` must not be a way around the os guards
        for name in refused:
            if hasattr(module, name):
                setattr(module, name, refuse(f"os.{name}"))
        module.open, module.mkdir = guarded_os_open, guarded_mkdir
    for name in ("rmtree", "move", "chown", "copytree", "copyfile", "copy", "copy2"):
        setattr(shutil, name, refuse(f"shutil.{name}"))
    if hasattr(signal, "pidfd_send_signal"):
        signal.pidfd_send_signal = refuse("signal.pidfd_send_signal")
    subprocess.Popen = refusing_class(subprocess.Popen, "subprocess.Popen")
    for name in ("run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
        setattr(subprocess, name, refuse(f"subprocess.{name}"))
    builtins.open = guarded_open
    io.open = guarded_open


def main():
    # Trusted references, bound before any untrusted code can replace the originals.
    _exec, _compile, _write, _exit, _getpid = builtins.exec, builtins.compile, os.write, os._exit, os.getpid
    _settrace, _setprofile = sys.settrace, sys.setprofile
    _AssertionError, _BaseException, _type, _str = AssertionError, BaseException, type, str
    _stdout, _stderr = sys.stdout, sys.stderr

    spec = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    fd, nonce, me = int(spec["report_fd"]), spec["nonce"], _getpid()

    def say(line):
        if _getpid() != me:  # a forked copy of this process does not speak for the run
            return
        data = f"{nonce} {line.replace(chr(10), ' ').replace(chr(13), ' ')[:300]}\n".encode("utf-8", "replace")
        try:
            while data:
                data = data[_write(fd, data):]
        except OSError:
            _exit(3)  # the report channel is gone (the program closed it): the run cannot finish

    def describe(exc):
        try:
            return f"{_type(exc).__name__}: {_str(exc)}"
        except _BaseException:  # noqa: BLE001 - a hostile __str__ must not take the runner down
            return "<unprintable exception>"

    work, facts = _isolate(spec)
    say("isolation " + json.dumps(facts, separators=(",", ":")))
    _disarm(work)
    sys.setrecursionlimit(10000)
    module = types.ModuleType("__main__")  # the program's `import __main__` gets its own namespace
    sys.modules["__main__"] = module
    namespace = module.__dict__
    say("start")
    for step, source in (("program", spec["program"]), ("setup", spec["setup"])):
        try:
            _exec(_compile(source, f"<{step}>", "exec"), namespace)
        except _BaseException as exc:  # noqa: BLE001 - the program's failure is the result
            say(f"{step} error {describe(exc)}")
            _exit(0)
        say(f"{step} ok")
    for i, test in enumerate(spec["tests"]):
        _settrace(None)
        _setprofile(None)
        say(f"test {i} running")
        try:
            _exec(_compile(test, f"<test {i}>", "exec"), namespace)
        except _AssertionError:
            say(f"test {i} failed")
        except _BaseException as exc:  # noqa: BLE001
            say(f"test {i} error {describe(exc)}")
        else:
            say(f"test {i} passed")
    for stream in (_stdout, _stderr):
        try:
            stream.flush()
        except _BaseException:  # noqa: BLE001
            pass
    say("done")
    _exit(0)  # no atexit hooks or lingering threads of the program run after the verdict


if __name__ == "__main__":
    main()
