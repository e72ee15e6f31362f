"""The graph: start each job when its inputs are done, as many at a time as the engine allows, stop
only the dependants of a failure, and end with a summary.

Order: every job has a chain, its own `cost` plus the longest chain among the jobs that read its
outputs: the work that must still follow it, one job after another. Among the jobs that may start,
the longest chain goes first. That alone does not stop a job off the critical path from taking the
last free place on a GPU a moment before a critical job becomes ready (measured: a critical
instruction run waited 33 s behind evaluations on two H200s, bench/RESULTS.md). So a job that is
ready and whose chain is the longest of all jobs not yet started (it is on the critical path of
what is left) may also start when the GPUs are full: the engine then puts it on the least-loaded
GPU past `steps_per_gpu`, at most one such job over the limit on each GPU (`can_start(job,
urgent=True)`). A job on the critical path thus never waits for a place behind jobs off it, as
long as there are no more critical jobs at once than GPUs with a place over; the price is a fifth
step sharing a GPU for a while, where four were asked for.

The coordinator keeps no state of its own: what it knows comes from the jobs' outputs (`is_done`),
their result files and the engine (DIR/.executor/NAME.json records the submission). A coordinator
that was killed is replaced by running it again: jobs still queued or running are waited for, not
submitted twice; finished ones are not rerun; failed ones are.
"""

from __future__ import annotations

import importlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rich.console import Console

from codestage.errors import ConfigError
from codestage.study.executors.engine import STATE_DIR, Engine, ExecutorError, Record, Status
from codestage.study.executors.jobs import Job, check_graph
from codestage.study.executors.runjob import JobSpec

WAITING, QUEUED, RUNNING, DONE, UP_TO_DATE, FAILED, BLOCKED = (
    "waiting", "queued", "running", "done", "up to date", "failed", "not run")
_ACTIVE = (QUEUED, RUNNING)
_FINISHED_OK = (DONE, UP_TO_DATE)


@dataclass
class JobOutcome:
    name: str
    state: str
    log: Path
    rerun: str
    job_id: str | None = None
    returncode: int | None = None
    attempts: int | None = None
    reason: str = ""
    seconds: float | None = None


@dataclass
class RunSummary:
    engine: str
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)
    detached: bool = False

    def names(self, state: str) -> list[str]:
        return [n for n, o in self.outcomes.items() if o.state == state]

    @property
    def ok(self) -> bool:
        """Nothing failed or was left out (queued jobs count as fine only for a detached run)."""
        allowed = _FINISHED_OK + (_ACTIVE if self.detached else ())
        return all(o.state in allowed for o in self.outcomes.values())

    def render(self) -> str:
        counts = {}
        for o in self.outcomes.values():
            counts[o.state] = counts.get(o.state, 0) + 1
        order = (DONE, UP_TO_DATE, QUEUED, RUNNING, FAILED, BLOCKED, WAITING)
        lines = [f"executor {self.engine}: " + ", ".join(f"{counts[s]} {s}" for s in order if s in counts)]
        for o in self.outcomes.values():
            if o.state == FAILED:
                lines += [f"FAILED  {o.name}: {o.reason}", f"        log:   {o.log}", f"        rerun: {o.rerun}"]
            elif o.state == BLOCKED:
                lines.append(f"NOT RUN {o.name}: {o.reason}")
            elif o.state in _ACTIVE:
                lines.append(f"{o.state.upper():7} {o.name}: {self.engine} job {o.job_id}, log {o.log}")
        if self.detached and any(o.state in _ACTIVE for o in self.outcomes.values()):
            lines.append("detached: the same run command again waits for these jobs and collects them")
        return "\n".join(lines)


@dataclass
class _Track:
    job: Job
    state: str = WAITING
    record: Record | None = None
    reason: str = ""
    result: dict | None = None


class _Graph:
    def __init__(self, jobs: Sequence[Job], engine: Engine, out: Path, console: Console) -> None:
        self.jobs = list(jobs)
        self.engine = engine
        self.out = Path(out)
        self.state_dir = self.out / STATE_DIR
        self.console = console
        self.tracks = {j.name: _Track(j) for j in self.jobs}
        self.dependants: dict[str, list[str]] = {j.name: [] for j in self.jobs}
        for j in self.jobs:
            for d in j.deps:
                self.dependants[d].append(j.name)
        self.chain = critical_chains(self.jobs, self.dependants)
        order = {j.name: i for i, j in enumerate(self.jobs)}
        # longest chain first; a job's chain is longer than its dependants', so inputs still come first
        self.by_chain = sorted(self.jobs, key=lambda j: (-self.chain[j.name], order[j.name]))

    def say(self, text: str, style: str = "") -> None:
        self.console.print(text, style=style or None, markup=False, highlight=False)

    def log_path(self, job: Job) -> Path:
        return Path(job.log) if job.log else self.out / "logs" / f"{job.name}.log"

    # ------------------------------------------------------------------ what is there already
    def reconcile(self) -> None:
        records = {j.name: Record.load(self.state_dir, j.name) for j in self.jobs}
        statuses = self._statuses([r for r in records.values() if r is not None])
        for job in self.jobs:
            t, rec = self.tracks[job.name], records[job.name]
            if rec is not None and statuses[job.name].state != "ended":
                status = statuses[job.name]
                if rec.fingerprint != job.fingerprint() or rec.engine != self.engine.name:
                    raise ExecutorError(
                        f"job {job.name}: a {rec.engine} job of an earlier run ({rec.id}) is still {status.state}"
                        f"{' with other inputs' if rec.fingerprint != job.fingerprint() else ''}; wait for it to "
                        f"end or stop it ({_cancel_hint(rec)}), then run again")
                self.engine.adopt(rec)
                rec.save(self.state_dir)  # with its id, where the engine had to look it up
                t.state, t.record = (RUNNING if status.state == "running" else QUEUED), rec
                self.say(f"… {job.name}: {status.state} from an earlier run ({rec.engine} {rec.id}), waiting for it",
                         "dim")
                continue
            if job.is_done is not None:
                if job.is_done():
                    t.state = UP_TO_DATE
            elif rec is not None and rec.fingerprint == job.fingerprint():
                res = rec.read_result()
                if res is not None and res.get("returncode") == 0:
                    t.state, t.record, t.result = DONE, rec, res
            if t.state in _FINISHED_OK:
                self.say(f"✓ {job.name}: {'up to date' if t.state == UP_TO_DATE else 'done in an earlier run'}", "dim")

    def _statuses(self, records: list[Record]) -> dict[str, Status]:
        """Status of earlier runs' jobs: one query per engine (records may come from another one)."""
        out: dict[str, Status] = {}
        for engine in sorted({r.engine for r in records}):
            group = [r for r in records if r.engine == engine]
            if engine == self.engine.name:
                out.update(self.engine.poll(group))
            elif engine in ("local", "slurm"):
                out.update(importlib.import_module(f"codestage.study.executors.{engine}").record_status(group))
            else:
                raise ExecutorError(f"{group[0].path()}: unknown engine {engine!r} in a job record")
        return out

    # ------------------------------------------------------------------ submitting
    def ready(self, job: Job) -> bool:
        """Its inputs are done (or, where the engine holds jobs itself, queued)."""
        ok = _FINISHED_OK + (_ACTIVE if self.engine.native_deps else ())
        return all(self.tracks[d].state in ok for d in job.deps)

    def critical(self, job: Job) -> bool:
        """No job that has not started has a longer chain: the job is on the critical path of what is left."""
        return self.chain[job.name] >= max(self.chain[t.job.name] for t in self.tracks.values() if t.state == WAITING)

    def start_ready(self) -> None:
        """Submit the ready jobs, longest chain first: where there is room, and a critical one even past
        a full GPU (the engine's one place over the limit)."""
        for job in self.by_chain:
            if self.tracks[job.name].state != WAITING or not self.ready(job):
                continue
            if self.engine.can_start(job):
                self.submit(job)
            elif self.critical(job) and self.engine.can_start(job, urgent=True):
                self.submit(job, note=" (critical path: one over steps_per_gpu)")

    def submit(self, job: Job, note: str = "") -> None:
        t = self.tracks[job.name]
        log = self.log_path(job)
        spec_path = self.state_dir / f"{job.name}.spec.json"
        result = self.state_dir / f"{job.name}.result.json"
        result.unlink(missing_ok=True)
        run_id = uuid.uuid4().hex[:16]
        spec = JobSpec(name=job.name, argv=list(job.argv), log=str(log), result=str(result), run_id=run_id,
                       env=dict(job.env), cwd=str(job.cwd) if job.cwd else None, retries=job.retries,
                       gpus_per_node=job.resources.gpus_per_node, nodes=job.resources.nodes)
        rec = Record(name=job.name, fingerprint=job.fingerprint(), engine=self.engine.name, run_id=run_id,
                     log=str(log), result=str(result), submitted=time.time())
        if job.prepare is not None:
            job.prepare()
        rec.save(self.state_dir)  # first without an id: a coordinator killed during submission can still find it
        after = [self.tracks[d].record for d in job.deps if self.tracks[d].state in _ACTIVE]
        rec.id, rec.extra = self.engine.submit(job, spec, spec_path, [a for a in after if a is not None])
        rec.save(self.state_dir)
        t.state, t.record = QUEUED, rec
        where = f" after {', '.join(d for d in job.deps if self.tracks[d].state in _ACTIVE)}" if after else ""
        self.say(f"▶ {job.name}: {self.engine.name} job {rec.id}{_placement(rec)}{where}{note}", "cyan")

    # ------------------------------------------------------------------ collecting
    def finish(self, job: Job, status: Status) -> None:
        t = self.tracks[job.name]
        assert t.record is not None
        res = t.record.read_result()
        deadline = time.time() + (self.engine.result_grace_s if status.expect_result else 0.0)
        while res is None and time.time() < deadline:  # a shared file system may show the file late
            time.sleep(0.5)
            res = t.record.read_result()
        t.result = res
        if res is not None and res.get("returncode") == 0:
            t.state = DONE
            self.say(f"✓ {job.name}: done in {res['finished'] - res['started']:.1f} s", "green")
            return
        t.state = FAILED
        if res is not None:
            t.reason = f"exit {res.get('returncode')} after {res.get('attempts')} attempt(s)"
        else:
            t.reason = f"ended without a result ({status.detail or 'no detail'})"
        self.say(f"✗ {job.name}: {t.reason}; log {t.record.log}", "red")
        self.block_dependants(job.name)

    def block_dependants(self, name: str) -> None:
        """Mark every job downstream of a failed one as not run; cancel those already queued behind it."""
        for dep_name in self.dependants[name]:
            d = self.tracks[dep_name]
            if d.state in (WAITING, *_ACTIVE):
                if d.state in _ACTIVE and d.record is not None:
                    self.engine.cancel(d.record)  # it would never start (Slurm cancels it too)
                d.state = BLOCKED
                d.reason = f"needs {name}, which {'failed' if self.tracks[name].state == FAILED else 'did not run'}"
                self.say(f"⊘ {dep_name}: {d.reason}", "yellow")
                self.block_dependants(dep_name)

    def poll(self) -> None:
        active = [t for t in self.tracks.values() if t.state in _ACTIVE]
        statuses = self.engine.poll([t.record for t in active if t.record is not None])
        for job in self.jobs:  # in graph order: a failed input is seen before its queued dependants
            t = self.tracks[job.name]
            if t.state not in _ACTIVE or job.name not in statuses:
                continue
            status = statuses[job.name]
            if status.state == "ended":
                self.finish(job, status)
            elif status.state == "running" and t.state == QUEUED:
                t.state = RUNNING
                if self.engine.native_deps:  # a local job runs as soon as it is submitted: nothing to say
                    self.say(f"… {job.name}: running", "dim")

    # ------------------------------------------------------------------ the loop
    def run(self, detach: bool) -> None:
        while True:
            self.start_ready()
            waiting = [t for t in self.tracks.values() if t.state == WAITING]
            active = [t for t in self.tracks.values() if t.state in _ACTIVE]
            if detach and not waiting:
                return
            if not active:
                if waiting:  # engine.check() rules this out; a guard against a silent hang
                    raise ExecutorError(f"cannot start {', '.join(t.job.name for t in waiting)}: nothing is running "
                                        f"and {self.engine.name} has no room for them")
                return
            time.sleep(self.engine.poll_s)
            self.poll()

    def interrupted(self) -> None:
        active = [t.record for t in self.tracks.values() if t.state in _ACTIVE and t.record is not None]
        if not active:
            return
        if self.engine.stop_on_interrupt:
            for rec in active:
                self.engine.cancel(rec)
            self.say(f"interrupted: stopped {len(active)} running job(s); run again to resume them", "yellow")
        else:
            self.say(f"interrupted: {len(active)} job(s) stay in the {self.engine.name} queue and a new run waits for "
                     f"them; to stop them: {self.engine.cancel_hint(active)}", "yellow")

    def summary(self, detached: bool) -> RunSummary:
        s = RunSummary(self.engine.name, detached=detached)
        for job in self.jobs:
            t = self.tracks[job.name]
            res = t.result or {}
            s.outcomes[job.name] = JobOutcome(
                name=job.name, state=t.state, log=Path(t.record.log) if t.record else self.log_path(job),
                rerun=job.rerun_command(), job_id=t.record.id if t.record else None,
                returncode=res.get("returncode"), attempts=res.get("attempts"), reason=t.reason,
                seconds=round(res["finished"] - res["started"], 2) if "finished" in res else None)
        return s


def critical_chains(jobs: Sequence[Job], dependants: dict[str, list[str]]) -> dict[str, float]:
    """Each job's chain: its cost plus the longest chain among the jobs that read its outputs
    (`jobs` lists inputs first, as `check_graph` requires)."""
    chain: dict[str, float] = {}
    for j in reversed(jobs):
        chain[j.name] = j.cost + max((chain[d] for d in dependants[j.name]), default=0.0)
    return chain


def _placement(rec: Record) -> str:
    devices = rec.extra.get("devices")
    share = rec.extra.get("share", 1)
    return f" on GPU {','.join(map(str, devices))}" + (f" (one of up to {share})" if share > 1 else "") if devices else ""


def _cancel_hint(rec: Record) -> str:
    return f"scancel {rec.id}" if rec.engine == "slurm" else f"kill {rec.id}"


def run_jobs(jobs: Sequence[Job], engine: Engine, out: Path, *, detach: bool = False,
             console: Console | None = None) -> RunSummary:
    """Run a graph of jobs (listed inputs first) on `engine`, keeping its state under `out`/.executor.

    Waits for every job and returns the summary; with `detach`, submits every job that can be
    submitted (the engine must hold jobs until their inputs succeed) and returns at once. Ctrl-C
    stops local jobs and leaves Slurm jobs queued, then re-raises KeyboardInterrupt. The caller holds
    the output folder's lock (`coordinator_lock`).
    """
    jobs = list(jobs)
    check_graph(jobs)
    for job in jobs:
        engine.check(job)
    if detach and not engine.native_deps:
        raise ConfigError(f"--detach: the {engine.name} executor cannot hold jobs until their inputs are done; "
                          "detach works with slurm")
    graph = _Graph(jobs, engine, out, console or Console(stderr=True))
    graph.reconcile()
    try:
        graph.run(detach)
    except KeyboardInterrupt:
        graph.interrupted()
        raise
    return graph.summary(detach)
