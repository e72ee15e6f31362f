"""Executors: the job graph on real processes (local engine) and on a real Slurm cluster.

Jobs are small Python commands that write files, wait for each other, fail on purpose or join a
2-process gloo group under torchrun. Coordinators that must be killed or must compete for the lock
run as child processes (COORDINATOR below). The Slurm tests start a single-node cluster on this
machine with scripts/slurm_local.sh and skip, with its reason, where it cannot start (not root, no
apt). Nothing is mocked.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from rich.console import Console

from codestage.errors import ConfigError
from codestage.study.executors import (ExecutorConfig, Job, LocalEngine, OutputLocked, Resources, SlurmEngine,
                                       coordinator_lock, launch_command, parse_slurm_time, resources_for, run_jobs)
from codestage.study.executors.slurm import sbatch_parameters

PY = sys.executable
WAIT_FOR = "import os, sys, time\ndef wait_for(p, s=60):\n    t = time.time() + s\n    while not os.path.exists(p):\n        if time.time() > t: sys.exit(9)\n        time.sleep(0.05)\n"


def pyjob(name: str, code: str, **kw) -> Job:
    return Job(name, (PY, "-c", WAIT_FOR + code), **kw)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def said(console: Console) -> str:
    return console.file.getvalue()


# A coordinator in a process of its own: runs the graph described in a JSON file.
COORDINATOR = r'''
import json, sys
from pathlib import Path
from codestage.study.executors import Job, LocalEngine, SlurmEngine, coordinator_lock, run_jobs
desc = json.loads(Path(sys.argv[1]).read_text())
jobs = [Job(j["name"], tuple(j["argv"]), deps=tuple(j.get("deps", ())), retries=j.get("retries", 0)) for j in desc["jobs"]]
engine = LocalEngine(devices=[], max_parallel=4) if desc["engine"] == "local" else SlurmEngine(poll_s=0.5)
with coordinator_lock(Path(desc["out"])):
    print("LOCKED", flush=True)
    summary = run_jobs(jobs, engine, Path(desc["out"]), detach=desc.get("detach", False))
print(summary.render(), flush=True)
sys.exit(0 if summary.ok else 1)
'''


def start_coordinator(tmp: Path, out: Path, jobs: list[Job], engine: str = "local", detach: bool = False) -> subprocess.Popen:
    script = tmp / "coordinator.py"
    script.write_text(COORDINATOR)
    desc = tmp / f"graph-{time.monotonic_ns()}.json"
    desc.write_text(json.dumps({"out": str(out), "engine": engine, "detach": detach, "jobs": [
        {"name": j.name, "argv": list(j.argv), "deps": list(j.deps), "retries": j.retries} for j in jobs]}))
    return subprocess.Popen([PY, str(script), str(desc)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until(cond, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


# ---------------------------------------------------------------------------------------- graph, local


def test_inputs_first_and_independent_jobs_side_by_side(tmp_path: Path) -> None:
    d = tmp_path / "f"
    d.mkdir()
    # a and b each wait for the other to have started: they only finish if they run at the same time
    jobs = [
        pyjob("a", f"open('{d}/a.start','w').close(); wait_for('{d}/b.start'); open('{d}/a.out','w').write('A')"),
        pyjob("b", f"open('{d}/b.start','w').close(); wait_for('{d}/a.start'); open('{d}/b.out','w').write('B')"),
        pyjob("sum/c", f"open('{d}/c.out','w').write(open('{d}/a.out').read() + open('{d}/b.out').read())",
              deps=("a", "b")),
    ]
    console = quiet()
    summary = run_jobs(jobs, LocalEngine(devices=[], max_parallel=2), tmp_path / "out", console=console)
    assert summary.ok, summary.render()
    assert (d / "c.out").read_text() == "AB"  # c ran after both of its inputs
    assert summary.outcomes["sum/c"].log == tmp_path / "out" / "logs" / "sum" / "c.log"
    # a second run finds every job done and starts nothing
    again = run_jobs(jobs, LocalEngine(devices=[], max_parallel=2), tmp_path / "out", console=(c2 := quiet()))
    assert [o.state for o in again.outcomes.values()] == ["done"] * 3
    assert "▶" not in said(c2)


def test_failure_stops_only_dependants_retries_and_summary(tmp_path: Path) -> None:
    d = tmp_path / "f"
    d.mkdir()
    count = "n = int(open(p).read()) + 1 if os.path.exists(p) else 1; open(p, 'w').write(str(n))\n"
    jobs = [
        pyjob("flaky", f"p = '{d}/flaky'\n{count}sys.exit(1 if n == 1 else 0)", retries=1),
        pyjob("broken", f"p = '{d}/broken'\n{count}print('broken on purpose'); sys.exit(3)", retries=2),
        pyjob("after_broken", f"open('{d}/after_broken','w').close()", deps=("broken",)),
        pyjob("after_after", f"open('{d}/after_after','w').close()", deps=("after_broken",)),
        pyjob("after_flaky", f"open('{d}/after_flaky','w').close()", deps=("flaky",)),
        pyjob("alone", f"open('{d}/alone','w').close()"),
    ]
    summary = run_jobs(jobs, LocalEngine(devices=[], max_parallel=2), tmp_path / "out", console=quiet())
    states = {n: o.state for n, o in summary.outcomes.items()}
    assert states == {"flaky": "done", "broken": "failed", "after_broken": "not run", "after_after": "not run",
                      "after_flaky": "done", "alone": "done"}
    assert (d / "flaky").read_text() == "2" and (d / "broken").read_text() == "3"  # 1 + retries attempts
    assert not (d / "after_broken").exists() and not (d / "after_after").exists()
    broken = summary.outcomes["broken"]
    assert (broken.returncode, broken.attempts) == (3, 3)
    text = summary.render()
    assert f"FAILED  broken: exit 3 after 3 attempt(s)" in text and f"log:   {broken.log}" in text
    assert "NOT RUN after_after: needs after_broken, which did not run" in text
    assert broken.log.read_text().splitlines().count("broken on purpose") == 3
    rerun = subprocess.run(broken.rerun, shell=True)  # the printed command reruns the job
    assert rerun.returncode == 3 and (d / "broken").read_text() == "4"
    assert not summary.ok
    # the next run reruns what failed (and now it works), not what succeeded
    (d / "broken").write_text("-100")
    fixed = [pyjob("broken", f"p = '{d}/broken'\n{count}", retries=0) if j.name == "broken" else j for j in jobs]
    summary2 = run_jobs(fixed, LocalEngine(devices=[], max_parallel=2), tmp_path / "out", console=quiet())
    assert summary2.ok and (d / "after_after").exists() and (d / "flaky").read_text() == "2"


def test_is_done_and_key_decide_what_reruns(tmp_path: Path) -> None:
    marker = tmp_path / "made"
    job = pyjob("step", f"open('{marker}','a').write('x')", key="k1")
    run_jobs([job], LocalEngine(devices=[]), tmp_path / "out", console=quiet())
    run_jobs([job], LocalEngine(devices=[]), tmp_path / "out", console=quiet())
    assert marker.read_text() == "x"  # same command and key: done in the earlier run
    changed = pyjob("step", f"open('{marker}','a').write('x')", key="k2")
    run_jobs([changed], LocalEngine(devices=[]), tmp_path / "out", console=quiet())
    assert marker.read_text() == "xx"  # other inputs: runs again
    outputs_exist = pyjob("step", f"open('{marker}','a').write('x')", key="k3", is_done=lambda: True)
    s = run_jobs([outputs_exist], LocalEngine(devices=[]), tmp_path / "out", console=quiet())
    assert marker.read_text() == "xx" and s.outcomes["step"].state == "up to date"


def test_graph_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="depends on nope, which is not in the graph"):
        run_jobs([pyjob("a", "", deps=("nope",))], LocalEngine(devices=[]), tmp_path, console=quiet())
    with pytest.raises(ConfigError, match="comes after it"):
        run_jobs([pyjob("a", "", deps=("b",)), pyjob("b", "")], LocalEngine(devices=[]), tmp_path, console=quiet())
    with pytest.raises(ConfigError, match="job name"):
        pyjob("../escape", "")
    with pytest.raises(ConfigError, match="cannot hold jobs"):
        run_jobs([pyjob("a", "")], LocalEngine(devices=[]), tmp_path, detach=True, console=quiet())


# ---------------------------------------------------------------------------------------- GPUs, torchrun


def test_local_gpu_assignment_with_explicit_devices(tmp_path: Path) -> None:
    d = tmp_path / "f"
    d.mkdir()
    show = "open('{d}/{n}.gpus','w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))\n"
    # x, y, z hold one GPU each and wait until all three run; w (one GPU) can only start after one ends
    jobs = [pyjob(n, show.format(d=d, n=n) + f"open('{d}/{n}.start','w').close()\n"
                  + "".join(f"wait_for('{d}/{m}.start')\n" for m in "xyz"), resources=Resources(gpus=1))
            for n in "xyz"]
    jobs += [pyjob("w", show.format(d=d, n="w") + "import glob\n"
                   f"open('{d}/w.saw','w').write(str(len(glob.glob('{d}/*.start'))))", resources=Resources(gpus=1)),
             pyjob("cpu", show.format(d=d, n="cpu"))]
    engine = LocalEngine(devices=["0", "1", "2"], max_parallel=4)
    summary = run_jobs(jobs, engine, tmp_path / "out", console=quiet())
    assert summary.ok, summary.render()
    gpus = {n: (d / f"{n}.gpus").read_text() for n in "xyzw"}
    assert sorted(gpus[n] for n in "xyz") == ["0", "1", "2"]  # one GPU each, none shared
    assert gpus["w"] in {"0", "1", "2"} and (d / "w.saw").read_text() == "3"
    assert (d / "cpu.gpus").read_text() == ""  # a job that asks no GPU sees none
    assert engine.in_use() == {}  # all handed back
    with pytest.raises(ConfigError, match="asks for 4 GPUs; this machine has 3"):
        run_jobs([pyjob("big", "", resources=Resources(gpus=4))], engine, tmp_path / "out2", console=quiet())
    with pytest.raises(ConfigError, match="2 nodes"):
        run_jobs([pyjob("wide", "", resources=Resources(gpus=2, nodes=2))], engine, tmp_path / "out2", console=quiet())


def test_local_packs_small_steps_onto_shared_gpus(tmp_path: Path) -> None:
    d = tmp_path / "f"
    d.mkdir()
    names = ["s0", "s1", "s2", "s3"]
    # four one-GPU jobs that may share a GPU two by two: they only finish if all four run at once
    small = [pyjob(n, f"import glob\nopen('{d}/{n}.gpus','w').write(os.environ['CUDA_VISIBLE_DEVICES'])\n"
                   f"open('{d}/{n}.start','w').close()\n" + "".join(f"wait_for('{d}/{m}.start')\n" for m in names)
                   + f"open('{d}/{n}.end','w').close()", resources=Resources(gpus=1, gpu_share=2)) for n in names]
    # a two-GPU job has its GPUs to itself: no small job runs while it does
    busy = "len(glob.glob('{d}/*.start')) - len(glob.glob('{d}/*.end'))"
    big = pyjob("big", f"import glob\nb = {busy.format(d=d)}\ntime.sleep(0.5)\ne = {busy.format(d=d)}\n"
                f"open('{d}/big.busy','w').write(str(b) + ',' + str(e))", resources=Resources(gpus=2))
    engine = LocalEngine(devices=["0", "1"], max_parallel=5)
    summary = run_jobs([*small, big], engine, tmp_path / "out", console=quiet())
    assert summary.ok, summary.render()
    placed = sorted((d / f"{n}.gpus").read_text() for n in names)
    assert placed == ["0", "0", "1", "1"]  # spread over both GPUs, two on each
    assert (d / "big.busy").read_text() == "0,0"
    assert engine.in_use() == {}
    with pytest.raises(ConfigError, match="gpu_share"):
        Resources(gpus=2, gpu_share=2)


@pytest.mark.parametrize("over", [True, False])
def test_critical_job_is_not_stuck_behind_jobs_off_the_critical_path(tmp_path: Path, over: bool) -> None:
    # One GPU shared two by two. pre0 ends first and its long evaluation `off` takes the free place;
    # when pre ends, both of its instruction runs are on the critical path (chain 2 + 4 against off's
    # 4), but only one place is free: crit/b goes one over the GPU's limit instead of waiting for off
    # (over=True, as `make_engine("local")` sets it); without that rule it waits for a place to free.
    def job(name: str, sleep: float, cost: float, deps: tuple[str, ...] = ()) -> Job:
        return pyjob(name, f"time.sleep({sleep})", deps=deps, cost=cost, resources=Resources(gpus=1, gpu_share=2))

    jobs = [job("pre0", 0.2, 6), job("pre", 1.2, 6), job("off", 2.5, 4, ("pre0",)),
            job("crit/a", 0.2, 2, ("pre",)), job("crit/b", 0.2, 2, ("pre",)),
            job("eval/a", 0.1, 4, ("crit/a",)), job("eval/b", 0.1, 4, ("crit/b",))]
    console = quiet()
    engine = LocalEngine(devices=["0"], steps_per_gpu=2, over_for_critical=over)
    summary = run_jobs(jobs, engine, tmp_path / "out", console=console)
    assert summary.ok, summary.render()
    lines = [line for line in said(console).splitlines() if line.startswith("▶")]
    started = [line.split()[1].rstrip(":") for line in lines]
    assert started[:4] == ["pre", "pre0", "off", "crit/a"]  # longest chain first
    over_names = {line.split()[1].rstrip(":") for line in lines if "critical path" in line}
    result = {n: json.loads((tmp_path / "out" / ".executor" / f"{n}.result.json").read_text())
              for n in ("off", "crit/a", "crit/b")}
    freed = min(result[n]["finished"] for n in ("off", "crit/a"))  # the first place to free up after crit/b was ready
    if over:
        assert started[4] == "crit/b" and sorted(started[5:]) == ["eval/a", "eval/b"]
        assert "crit/b" in over_names and not over_names & {"pre", "pre0", "off", "crit/a"}  # off the path: never over
        assert result["crit/b"]["started"] < freed  # it waited for no place
    else:
        assert not over_names
        assert result["crit/b"]["started"] > freed  # it waited until a job ended
    assert engine.in_use() == {}


def test_launch_command_wraps_in_torchrun() -> None:
    argv = ["python", "-m", "codestage.cli", "step", "s.yaml", "--out", "o", "--step", "pretrain/NL"]
    assert launch_command(argv, gpus_per_node=1) == argv
    cmd = launch_command(argv, gpus_per_node=8, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nproc-per-node=8", "--standalone", "--no-python", *argv]
    multi = launch_command(argv, gpus_per_node=8, nodes=4, rdzv_host="node01", rdzv_port=23456, rdzv_id="77",
                           max_restarts=2, python="py")
    assert multi[4:9] == ["--nnodes=4", "--rdzv-backend=c10d", "--rdzv-endpoint=node01:23456", "--rdzv-id=77",
                          "--max-restarts=2"]
    assert multi[-len(argv) - 1:] == ["--no-python", *argv]


@pytest.mark.slow
def test_two_gpu_job_runs_under_torchrun_with_gloo(tmp_path: Path) -> None:
    out_file = tmp_path / "allreduce.json"
    code = (
        "import json, os, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.tensor([dist.get_rank() + 1.0]); dist.all_reduce(t)\n"
        f"if dist.get_rank() == 0: open('{out_file}', 'w').write(json.dumps({{'world': dist.get_world_size(), "
        "'sum': t.item(), 'gpus': os.environ['CUDA_VISIBLE_DEVICES']}))\n"
        "dist.destroy_process_group()\n")
    job = Job("pretrain/NL", (PY, "-c", code), resources=Resources(gpus=2))
    summary = run_jobs([job], LocalEngine(devices=["0", "1"]), tmp_path / "out", console=quiet())
    assert summary.ok, summary.outcomes["pretrain/NL"].log.read_text()
    assert json.loads(out_file.read_text()) == {"world": 2, "sum": 3.0, "gpus": "0,1"}
    assert "torch.distributed.run --nproc-per-node=2 --standalone --no-python" in summary.outcomes["pretrain/NL"].log.read_text()


# ---------------------------------------------------------------------------------------- lock, kill, Ctrl-C


def test_second_coordinator_on_the_same_folder_refuses(tmp_path: Path) -> None:
    out, go = tmp_path / "out", tmp_path / "go"
    first = start_coordinator(tmp_path, out, [pyjob("slow", f"wait_for('{go}')")])
    try:
        assert first.stdout.readline().strip() == "LOCKED"
        second = start_coordinator(tmp_path, out, [pyjob("other", "")])
        text, _ = second.communicate(timeout=60)
        assert second.returncode != 0
        assert f"{out} is in use by another codestage run (pid {first.pid} on" in text
        with pytest.raises(OutputLocked):
            with coordinator_lock(out):
                pass
    finally:
        go.touch()
        first.communicate(timeout=60)
    assert first.returncode == 0
    with coordinator_lock(out) as previous:  # released at exit, in order: no dead holder to report
        assert previous == {}


def test_killed_coordinator_loses_nothing(tmp_path: Path) -> None:
    out, go, runs = tmp_path / "out", tmp_path / "go", tmp_path / "runs"
    jobs = [pyjob("train", f"open('{runs}','a').write('train\\n'); wait_for('{go}')"),
            pyjob("eval", f"open('{runs}','a').write('eval\\n')", deps=("train",))]
    first = start_coordinator(tmp_path, out, jobs)
    record = out / ".executor" / "train.json"
    wait_until(lambda: record.exists() and json.loads(record.read_text()).get("id") and runs.exists(), what="train")
    pid = int(json.loads(record.read_text())["id"])
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert pid_alive(pid)  # the job outlives its coordinator
    with coordinator_lock(out) as previous:  # the dead coordinator's lock is taken over
        assert previous["pid"] == first.pid
        go.touch()
        console = quiet()
        summary = run_jobs(jobs, LocalEngine(devices=[], max_parallel=4), out, console=console)
    assert summary.ok, summary.render()
    assert "train: running from an earlier run" in said(console)
    assert runs.read_text() == "train\neval\n"  # train waited for, not started twice; eval ran after it


def test_ctrl_c_stops_local_jobs_and_a_rerun_resumes(tmp_path: Path) -> None:
    out, pidfile = tmp_path / "out", tmp_path / "pid"
    jobs = [pyjob("long", f"p = '{tmp_path}/tries'\nn = int(open(p).read()) + 1 if os.path.exists(p) else 1\n"
                          f"open(p, 'w').write(str(n)); open('{pidfile}', 'w').write(str(os.getpid()))\n"
                          "time.sleep(600) if n == 1 else None")]
    first = start_coordinator(tmp_path, out, jobs)
    wait_until(pidfile.exists, what="the job to start")
    wait_until(lambda: pidfile.read_text().strip() != "", what="the job's pid")
    cmd_pid = int(pidfile.read_text())
    first.send_signal(signal.SIGINT)
    text, _ = first.communicate(timeout=60)
    assert first.returncode != 0 and "interrupted: stopped 1 running job(s)" in text
    assert not pid_alive(cmd_pid)  # the command itself, not only its runner, was stopped
    summary = run_jobs(jobs, LocalEngine(devices=[]), out, console=quiet())
    assert summary.ok and (tmp_path / "tries").read_text() == "2"


# ---------------------------------------------------------------------------------------- config


def test_executor_config_resources_per_stage() -> None:
    cfg = ExecutorConfig.model_validate({
        "gpus_per_step": {"pretrain": 16, "instruct": 1, "eval": 1},
        "slurm": {"partition": "gpu", "account": "proj", "time": "2-00:00:00", "gpus_per_node": 8, "cpus_per_gpu": 6,
                  "mem_per_gpu_gb": 80, "sbatch": {"constraint": "h100"},
                  "stages": {"eval": {"partition": "shared", "time": "02:00:00"}}}})
    pre = resources_for(cfg, "pretrain/CODE")
    assert (pre.gpus, pre.nodes, pre.gpus_per_node, pre.cpus, pre.mem_gb, pre.time_min) == (16, 2, 8, 48, 640, 2880)
    assert (pre.partition, pre.account, dict(pre.sbatch)) == ("gpu", "proj", {"constraint": "h100"})
    ev = resources_for(cfg, "eval/CC")
    assert (ev.gpus, ev.nodes, ev.partition, ev.account, ev.time_min) == (1, 1, "shared", "proj", 120)
    tok = resources_for(cfg, "tokenizer")
    assert (tok.gpus, tok.cpus, tok.mem_gb) == (0, 4, None)
    p = sbatch_parameters(Job("pretrain/CODE", ("true",), resources=pre), after=["11", "12"], run_id="r",
                          signal_delay_s=90)
    assert (p["nodes"], p["gpus_per_node"], p["ntasks_per_node"], p["cpus_per_task"], p["mem"], p["time"]) == (
        2, 8, 1, 48, "655360M", 2880)
    assert p["dependency"] == "afterok:11:12" and p["comment"] == "codestage:r"
    assert p["additional_parameters"]["kill-on-invalid-dep"] == "yes" and p["additional_parameters"]["constraint"] == "h100"
    assert [parse_slurm_time(t) for t in ("30", "90:30", "1:00:00", "1-0", "1-2:30")] == [30, 91, 60, 1440, 1590]
    with pytest.raises(ValidationError, match="'1h' is not a Slurm time"):
        ExecutorConfig.model_validate({"slurm": {"time": "1h"}})
    with pytest.raises(ValidationError, match="gpus_per_step.pretrain = 12 spans several nodes"):
        ExecutorConfig.model_validate({"gpus_per_step": {"pretrain": 12}})
    with pytest.raises(ValidationError, match="steps_per_gpu.pretrain = 4: steps that share a GPU ask for one GPU"):
        ExecutorConfig.model_validate({"gpus_per_step": {"pretrain": 2}, "steps_per_gpu": {"pretrain": 4}})
    with pytest.raises(Exception, match="partitoin"):
        ExecutorConfig.model_validate({"slurm": {"partitoin": "gpu"}})


# ---------------------------------------------------------------------------------------- a real Slurm


def slurm_job(name: str, code: str, **kw) -> Job:
    return pyjob(name, code, resources=Resources(cpus=1, mem_gb=0.25, time_min=10), **kw)


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%T", "-j", job_id], capture_output=True, text=True)
    return out.stdout.strip()


def test_slurm_dependencies_failure_and_retries(slurm_cluster: None, tmp_path: Path) -> None:
    d = tmp_path / "f"
    d.mkdir()
    jobs = [slurm_job("a", f"time.sleep(1); open('{d}/a','w').write(os.environ['SLURM_JOB_ID'])"),
            slurm_job("b/x", f"open('{d}/b','w').write(open('{d}/a').read())", deps=("a",)),
            slurm_job("bad", "print('failing on purpose'); sys.exit(4)", retries=1),
            slurm_job("after_bad", f"open('{d}/after_bad','w').close()", deps=("bad",))]
    summary = run_jobs(jobs, SlurmEngine(poll_s=0.5), tmp_path / "out", console=quiet())
    o = summary.outcomes
    assert {n: x.state for n, x in o.items()} == {"a": "done", "b/x": "done", "bad": "failed", "after_bad": "not run"}
    assert (d / "b").read_text() == o["a"].job_id  # b read what a (Slurm job a.job_id) wrote
    assert (o["bad"].returncode, o["bad"].attempts) == (4, 2)
    assert o["bad"].log.read_text().splitlines().count("failing on purpose") == 2
    assert squeue_state(o["after_bad"].job_id) == "CANCELLED" and not (d / "after_bad").exists()
    assert "FAILED  bad: exit 4 after 2 attempt(s)" in summary.render()


def test_slurm_detach_then_a_second_coordinator_collects(slurm_cluster: None, tmp_path: Path) -> None:
    d, out = tmp_path / "f", tmp_path / "out"
    d.mkdir()
    jobs = [slurm_job("first", f"time.sleep(1); open('{d}/first','w').write('1')"),
            slurm_job("second", f"open('{d}/second','w').write(open('{d}/first').read() + '2')", deps=("first",))]
    detached = start_coordinator(tmp_path, out, jobs, engine="slurm", detach=True)
    text, _ = detached.communicate(timeout=60)
    assert detached.returncode == 0, text
    assert "2 queued" in text and "detached:" in text
    ids = {n: json.loads((out / ".executor" / f"{n}.json").read_text())["id"] for n in ("first", "second")}
    console = quiet()
    with coordinator_lock(out):
        summary = run_jobs(jobs, SlurmEngine(poll_s=0.5), out, console=console)
    assert summary.ok and (d / "second").read_text() == "12"
    assert {n: o.job_id for n, o in summary.outcomes.items()} == ids  # waited on, not submitted again
    assert "▶" not in said(console)


@pytest.mark.slow
def test_slurm_preemption_requeues_and_the_step_resumes(slurm_cluster: None, tmp_path: Path) -> None:
    d = tmp_path / "f"
    d.mkdir()
    # First start: runs "forever"; on SIGTERM it takes 7 s to write its checkpoint ("c"), longer than
    # the cluster's KillWait (5 s), so the checkpoint exists only if the job waited for it before its
    # requeue. Second start: finds the checkpoint and ends.
    job = slurm_job("pretrain/NL", f"import signal\np = '{d}/progress'\nresume = os.path.exists(p) and 'c' in open(p).read()\n"
                    "def ckpt(*_):\n    time.sleep(7); open(p, 'a').write('c'); sys.exit(143)\n"
                    f"signal.signal(signal.SIGTERM, ckpt)\nopen(p, 'a').write('x'); open('{d}/running', 'w').close()\n"
                    "time.sleep(600) if not resume else None")
    out = tmp_path / "out"
    coordinator = start_coordinator(tmp_path, out, [job], engine="slurm")
    job_id = ""
    try:
        wait_until(lambda: (d / "running").exists(), what="the job to run")
        job_id = json.loads((out / ".executor" / "pretrain" / "NL.json").read_text())["id"]
        time.sleep(1)  # let submitit's signal handler be in place
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # what Slurm sends before preempting
        text, _ = coordinator.communicate(timeout=120)  # the requeued job starts once its credential expired
    finally:
        coordinator.kill()
        if job_id:
            subprocess.run(["scancel", job_id])  # leave no sleeping job behind when the test fails
    assert coordinator.returncode == 0, text
    assert (d / "progress").read_text() == "xcx"  # stopped with a checkpoint, requeued, resumed from it
    assert json.loads((out / ".executor" / "pretrain" / "NL.json").read_text())["id"] == job_id  # same job id
