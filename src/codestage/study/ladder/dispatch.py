"""`codestage ladder run`: a study with its ladder, the ladder's many small runs side by side.

A ladder's runs are small: one alone leaves most of a GPU idle (launch-bound). So the study's own
steps (tokenizer, stores, and any full-size runs) run here one after another, then every
`ladder/pretrain/*` and `ladder/eval/*` step runs as a process of its own (`codestage step`)
through the local executor, `per_gpu` of them on each visible GPU (CUDA_VISIBLE_DEVICES), each step starting once its
inputs are done; then `ladder/points`, `ladder/fit` and the study report run here. `OUT/ladder/timing.json` records
the three phases' wall-clock times (prep, jobs, tail). Every step is the
study runner's own (`Study.execute`), so keys, markers, reuse and resumption are the same as under
`codestage run`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

from codestage.atomic import write_json
from codestage.denormal import flush_denormal
from codestage.study.ladder.plan import plan_ladder

LADDER_JOBS = ("ladder/pretrain/", "ladder/eval/")
LADDER_TAIL = ("ladder/points", "ladder/fit")
TIMING = "timing.json"  # under OUT/ladder: the wall-clock phases of the last `ladder run` (unix times)


def _study(config: Path, out: Path, *, quiet: bool, console: Console):
    from codestage.config import load_config
    from codestage.errors import ConfigError
    from codestage.study.runner import Study

    cfg = load_config(config)
    if cfg.ladder is None:
        raise ConfigError(f"{config}: no `ladder:` section (docs/ladder.md)")
    return Study(cfg, out, console=console, progress=not quiet)


@flush_denormal()  # on while the ladder runs here, put back when it returns
def run_ladder(config: Path, out: Path, *, per_gpu: int, jobs: int, quiet: bool, console: Console) -> bool:
    """Run the whole study and its ladder; False when a ladder job failed (the summary says which)."""
    from codestage.outputs import check_study_output
    from codestage.study.executors import Job, LocalEngine, Resources, coordinator_lock, run_jobs, visible_gpus
    from codestage.study.report import write_report

    config, out = Path(config).resolve(), Path(out).resolve()
    study = _study(config, out, quiet=quiet, console=console)
    check_study_output(study.cfg, out)
    phases: dict[str, dict[str, float]] = {}
    t = time.time()
    before = [n for n in study.steps if not n.startswith(LADDER_JOBS) and n not in LADDER_TAIL]
    timings = study.run(only=before) if before else {}
    phases["prep"] = {"start": t, "end": time.time()}

    gpus = visible_gpus()
    # per_gpu one-GPU jobs share each GPU (Resources.gpu_share), as executor.steps_per_gpu does
    engine = LocalEngine(devices=gpus, steps_per_gpu=per_gpu, max_parallel=None if gpus else jobs)
    # the biggest runs first (they end last), each run's evaluation after the runs
    order = {r.run: -r.flops for r in plan_ladder(study.cfg).rungs}
    job_names = sorted((n for n in study.steps if n.startswith(LADDER_JOBS) and study.steps[n].alias_of is None),
                       key=lambda n: (n.startswith("ladder/eval/"), order[n.rsplit("/", 1)[1]]))
    graph = []
    for name in job_names:
        step = study.steps[name]
        argv = [sys.executable, "-m", "codestage.cli", "step", str(config), "--out", str(out), "--step", name, "--quiet"]
        graph.append(Job(name, tuple(argv), deps=tuple(d for d in step.deps if d in job_names),
                         resources=Resources(gpus=1, gpu_share=per_gpu) if gpus else Resources(gpus=0), key=step.key, log=out / "logs" / f"{name}.log",
                         rerun=f"codestage step {config} --out {out} --step {name}",
                         is_done=lambda step=step: study.up_to_date(step.name)))
    console.print(f"[bold]ladder: {len(graph)} runs and evaluations, "
                  + (f"{per_gpu} per GPU on {len(gpus)} GPUs" if gpus else f"{jobs} at a time on the CPU") + "[/]")
    t = time.time()
    with coordinator_lock(out):
        summary = run_jobs(graph, engine, out, console=console)
    phases["jobs"] = {"start": t, "end": time.time()}
    console.print(summary.render())
    if not summary.ok:
        write_json(out / "ladder" / TIMING, phases)
        return False
    t = time.time()
    for name in LADDER_TAIL:
        timings[name] = study.execute(name)
    runs = {n: r for n, r in study.run_table().items() if (r.eval_dir / "results.json").is_file()}
    write_report(runs, study.resolved_config(), out, timings=timings)
    phases["tail"] = {"start": t, "end": time.time()}
    write_json(out / "ladder" / TIMING, phases)
    console.print(f"report: {out / 'report.md'}   ladder fit: {out / 'ladder' / 'fit' / 'report.md'}")
    return True


__all__ = ["run_ladder"]
