"""The `codestage` command: thin wrappers that parse arguments and call the modules."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from codestage.config import StudyConfig, load_config
from codestage.domains import DOMAIN_TABLE, DOMAINS
from codestage.errors import CodestageError
from codestage.resources import DATA_DIR
from codestage.results import StudyResults

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="At which training stage does code data help a language model reason?")
console = Console(stderr=True)
DEMO_CONFIG = DATA_DIR.parent / "demo.yaml"


VERIFY_HELP = "quick: hash outputs up to 64 MiB, sample bigger ones; full: hash every output in full"


def _verify(value: str) -> str:
    if value not in ("quick", "full"):
        raise typer.BadParameter(f"{value!r}: use quick or full", param_hint="--verify")
    return value


def _run_study(cfg: StudyConfig, out: Path, *, full_eval: bool, only: list[str] | None, force: bool, quiet: bool,
               verify: str = "quick") -> None:
    from codestage.denormal import flush_denormal
    from codestage.outputs import check_study_output
    from codestage.study.executors import coordinator_lock
    from codestage.study.runner import Study

    check_study_output(cfg, out)
    if full_eval:
        cfg.eval.sample = None
    study = Study(cfg, out, console=console, progress=not quiet, verify=verify)
    with flush_denormal(), coordinator_lock(out):
        timings = study.run(only=only, force=force)
        _report(study, out, timings, partial=bool(only))


def _report(study, out: Path, timings, *, partial: bool) -> None:
    """Write the study's report and print its table; a partial run reports the runs whose evaluation exists."""
    from codestage.study.report import write_report

    runs = study.run_table()
    if partial:
        runs = {n: r for n, r in runs.items() if study.up_to_date(f"eval/{n}")}
        if not runs:
            return
    results = write_report(runs, study.resolved_config(), out, timings=timings)
    _summary(results, out)
    from codestage.eval.caveats import print_caveats
    from codestage.study.caveats import study_caveats

    stores = {n.split("/", 1)[1]: s.out for n, s in study.steps.items() if n.startswith("store/")}
    print_caveats(console, study_caveats(stores, runs))


def summary_table(results: StudyResults) -> Table:
    """The study's scores for the terminal. A long run name folds onto a second line, so that at the
    width the terminal gives no domain's header or score is cut short."""
    table = Table(title="codestage: scores (accuracy % / BLEU x100), 95% CI in the report")
    table.add_column("run", overflow="fold")
    table.add_column("stage", no_wrap=True)
    for d in DOMAINS:
        short = DOMAIN_TABLE[d].short
        table.add_column(short, justify="right", no_wrap=True, min_width=max(len(short), len("100.0")))
    for name, run in results.runs.items():
        cells = []
        for d in DOMAINS:
            c = run.tasks.get(d)
            cells.append("—" if not c or c.value is None else f"{c.value:.1f}")
        table.add_row(name, run.stage, *cells)
    return table


def _summary(results: StudyResults, out: Path) -> None:
    Console().print(summary_table(results))
    notes = {d: c.split_note for run in results.runs.values() for d, c in run.tasks.items() if c.split_note}
    console.print("splits: " + " | ".join(f"{DOMAIN_TABLE[d].short} {notes[d]}" for d in DOMAINS if d in notes))
    console.print(f"report: {out / 'report.md'}   results: {out / 'results.json'}   plots: {out / 'plots'}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output folder"),
    full_eval: bool = typer.Option(False, "--full-eval", help="evaluate the full sets instead of the seeded subsample"),
    force: bool = typer.Option(False, "--force", help="rerun steps even when their outputs are up to date"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Run the embedded demo study (bundled data, tiny models) end to end and write the report."""
    _run_study(load_config(DEMO_CONFIG), out, full_eval=full_eval, only=None, force=force, quiet=quiet)


EXECUTOR_HELP = "inline | local | slurm (default: the config's executor.kind, else local where GPUs are visible, else inline)"


@app.command()
def run(
    config: Path = typer.Argument(..., help="study YAML"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    full_eval: bool = typer.Option(False, "--full-eval", help="ignore eval.sample and evaluate the full sets"),
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only steps whose name starts with this "
                                             "(repeatable; with --seeds also seedN/STEP), and what they need"),
    force: bool = typer.Option(False, "--force", help="rerun steps even when their outputs are up to date"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override the config's seed (one study folder per seed)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="several seeds as one graph, e.g. 0,1,2: OUT/seedN each"),
    verify: str = typer.Option("quick", "--verify", callback=_verify, help=VERIFY_HELP),
    executor: Optional[str] = typer.Option(None, "--executor", help=EXECUTOR_HELP),
    detach: bool = typer.Option(False, "--detach", help="slurm: submit every step and return; run again to collect"),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1, help="local: at most N steps at once"),
    gpus_per_step: Optional[str] = typer.Option(None, "--gpus-per-step", help="GPUs per stage, e.g. pretrain=8,eval=1"),
    steps_per_gpu: Optional[str] = typer.Option(None, "--steps-per-gpu", help="local: steps sharing one GPU, e.g. pretrain=4"),
    partition: Optional[str] = typer.Option(None, "--partition", help="slurm: partition of every step's job"),
    account: Optional[str] = typer.Option(None, "--account", help="slurm: account of every step's job"),
    time: Optional[str] = typer.Option(None, "--time", help="slurm: time limit of a step's job (HH:MM:SS, D-HH:MM:SS)"),
) -> None:
    """Run a study from a YAML config; finished steps with the same inputs are skipped. Every
    executor runs the same steps to the same results (docs/cluster.md)."""
    from codestage.cli_run import run_command

    ok = run_command(config, out, executor=executor, seeds_text=seeds, seed=seed, only=only, force=force, verify=verify,
                     full_eval=full_eval, quiet=quiet, detach=detach, max_parallel=max_parallel,
                     gpus_per_step=gpus_per_step, steps_per_gpu=steps_per_gpu, partition=partition, account=account,
                     time=time)
    if not ok:
        raise typer.Exit(1)


@app.command()
def step(
    config: Path = typer.Argument(..., help="study YAML"),
    out: Path = typer.Option(..., "--out", help="the study's output folder"),
    name: str = typer.Option(..., "--step", help="the step, as `codestage plan` names it (pretrain/NL, eval/CC...)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override the config's seed"),
    full_eval: bool = typer.Option(False, "--full-eval", help="ignore eval.sample and evaluate the full sets"),
    force: bool = typer.Option(False, "--force", help="start the step over even when it is up to date"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Run one step of a study (what every executor's job runs); training steps also under torchrun."""
    from codestage.cli_run import step_command

    step_command(config, out, name, seed=seed, full_eval=full_eval, force=force, quiet=quiet)


@app.command()
def plan(
    config: Path = typer.Argument(..., help="study YAML"),
    out: Path = typer.Option(..., "--out"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override the config's seed"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="several seeds as one graph, e.g. 0,1,2"),
    verify: str = typer.Option("quick", "--verify", callback=_verify, help=VERIFY_HELP),
    executor: Optional[str] = typer.Option(None, "--executor", help=EXECUTOR_HELP),
    gpus_per_step: Optional[str] = typer.Option(None, "--gpus-per-step", help="GPUs per stage, e.g. pretrain=8,eval=1"),
    steps_per_gpu: Optional[str] = typer.Option(None, "--steps-per-gpu", help="local: steps sharing one GPU"),
    partition: Optional[str] = typer.Option(None, "--partition"),
    account: Optional[str] = typer.Option(None, "--account"),
    time: Optional[str] = typer.Option(None, "--time"),
) -> None:
    """List a study's steps, their keys, whether each is up to date and what each gets under the executor."""
    from codestage.cli_run import plan_rows

    kind, rows = plan_rows(config, out, executor=executor, seeds_text=seeds, seed=seed, verify=verify,
                           gpus_per_step=gpus_per_step,
                           steps_per_gpu=steps_per_gpu, partition=partition, account=account, time=time)
    table = Table("step", "key", "state", f"resources ({kind})", "folder")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@app.command("eval")
def eval_cmd(
    model: Optional[Path] = typer.Option(None, "--model", help="HF causal-LM directory (ours or anyone's)"),
    tasks: str = typer.Option(",".join(DOMAINS), "--tasks",
                              help="comma-separated task or domain names, or 'all' (see `codestage tasks list`)"),
    out: Path = typer.Option(..., "--out", help="output folder for results.json and items.jsonl"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="evaluation data folder (default: the bundled slice)"),
    protocol: str = typer.Option("paper", "--protocol", help="paper | lm-eval"),
    shots: int = typer.Option(0, "--shots", min=0, help="number of exemplars from the prompt split"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="first N items of each task"),
    sample: Optional[int] = typer.Option(None, "--sample", min=1, help="a seeded random N items of each task"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1),
    samples: int = typer.Option(1, "--samples", min=1, help="generations per code item for pass@k (k <= samples)"),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0),
    no_execute: bool = typer.Option(False, "--no-execute", help="do not run generated code (BLEU only)"),
    no_generate: bool = typer.Option(False, "--no-generate",
                                     help="code tasks: generate nothing, score only the reference's bits per byte"),
    check_references: bool = typer.Option(False, "--check-references",
                                          help="run the reference solutions instead of model output (harness self-test)"),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="seconds per executed program"),
    lenient: bool = typer.Option(False, "--lenient", help="score an exact duplicate record once (noted) instead of stopping"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Evaluate any HF causal-LM directory on the reasoning tasks; write results.json and items.jsonl."""
    from codestage.eval.caveats import eval_caveats, print_caveats
    from codestage.eval.harness import evaluate, summary_rows

    results = evaluate(model, [tasks], out, data_dir=data_dir, limit=limit, sample=sample, seed=seed, protocol=protocol,
                       shots=shots, batch_size=batch_size, device=device, max_new_tokens=max_new_tokens,
                       execute=not no_execute, generate=not no_generate, check_references=check_references, samples=samples,
                       temperature=temperature, timeout_s=timeout, progress=not quiet, lenient=lenient)
    table = Table("task", "score", "95% CI", "bits/byte of the gold [95% CI]", "split, n", title=f"codestage eval ({results.protocol}, {results.shots}-shot)")
    for row in summary_rows(results):
        table.add_row(*row)
    Console().print(table)
    console.print(f"results: {out / 'results.json'}   items: {out / 'items.jsonl'}")
    if results.peak_memory_gib is not None:
        console.print(f"peak GPU memory {results.peak_memory_gib:.2f} GiB (max_memory_allocated)")
    print_caveats(console, eval_caveats(results))


@app.command()
def compare(
    run_a: str = typer.Argument(..., help="eval folder (or items.jsonl) of run A; several seeds: comma-separated"),
    run_b: str = typer.Argument(..., help="eval folder (or items.jsonl) of run B; the same number of seeds, same order"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the comparison as JSON here"),
    common_only: bool = typer.Option(False, "--common-only", help="compare only the items both sides share (when they differ)"),
) -> None:
    """Paired difference A - B per task with its 95% interval and a paired-bootstrap p-value,
    plus continuous metrics (margin of the gold choice; bits per byte of the gold answer) in the JSON and table."""
    from codestage.atomic import write_json
    from codestage.eval.harness import compare as compare_runs

    side_a = [Path(x) for x in run_a.split(",") if x]
    side_b = [Path(x) for x in run_b.split(",") if x]
    if json_out:
        from codestage.outputs import COMPARE_JSON, check_output

        read = [q / n if q.is_dir() else q for q in side_a + side_b for n in ("items.jsonl", "items.jsonl.gz")]
        check_output(json_out, COMPARE_JSON, inputs=read, option="--json")
    result = compare_runs(side_a, side_b, seed=seed, common_only=common_only)
    seeds = f" ({result.seeds} seeds, item values averaged over seeds)" if result.seeds > 1 else ""
    table = Table("task", "metric", "split, n", "A", "B", "A - B", "95% CI", "p", "margin or bits/byte: A - B [95% CI] p",
                  title=f"A = {run_a}\nB = {run_b}{seeds}")
    for task, r in result.tasks.items():
        lo, hi = r.ci95
        cont = []
        for c, label in ((r.margin, "margin"), (r.bits_per_byte, "bits/byte")):
            if c is not None:
                cont.append(f"{label} {c.diff:+.4f} [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] p={c.p_value:.3f}")
        n = f"{r.split}, n={r.n}" if r.split else str(r.n)
        d = 4 if r.metric == "bits_per_byte" else 2  # a task scored by its bits per byte only (--no-generate)
        table.add_row(task, r.metric, n, f"{r.a:.{d}f}", f"{r.b:.{d}f}", f"{r.diff:+.{d}f}",
                      f"[{lo:+.{d}f}, {hi:+.{d}f}]", f"{r.p_value:.3f}", "; ".join(cont))
    Console().print(table)
    if json_out:
        from codestage.relpaths import recorded

        doc = result.to_json()
        for side in ("a", "b"):  # relative to the JSON's folder, so it can move with the runs
            v = doc[side]
            doc[side] = [recorded(p, json_out.parent) for p in v] if isinstance(v, list) else recorded(v, json_out.parent)
        write_json(json_out, doc)
    from codestage.eval.caveats import print_caveats

    print_caveats(console, result.notes)


tasks_app = typer.Typer(no_args_is_help=True, help="The evaluation tasks: list them, export them to lm-evaluation-harness.")
app.add_typer(tasks_app, name="tasks")
from codestage.cli_data import data_app  # noqa: E402
app.add_typer(data_app, name="data")
from codestage.cli_ladder import ladder_app  # noqa: E402
app.add_typer(ladder_app, name="ladder")


@tasks_app.command("list")
def tasks_list(data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="evaluation data folder (default: bundled)")) -> None:
    """Every task: domain, kind, metric, the split its data would give with n, and the paper's split and n."""
    from codestage.eval.harness import list_tasks

    table = Table("task", "domain", "metric", "split evaluated", "n", "the paper's", "data",
                  title="codestage tasks (* = the domain's default)")
    for r in list_tasks(data_dir):
        paper = (f"{r['paper_split']}, " + (f"n={r['paper_n']}" if r["paper_n"] else "n not stated")) if r["paper_split"] else "not in the paper"
        table.add_row(r["name"] + (" *" if r["domain_default"] else ""), r["domain"], r["metric"], r["split"] or "—",
                      str(r["n"] or ""), paper, "present" if r["data_present"] else "missing")
    Console().print(table)


@tasks_app.command("export-lm-eval")
def tasks_export(
    out: Path = typer.Argument(..., help="folder for the lm-evaluation-harness task YAMLs"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated tasks (default: all with data)"),
) -> None:
    """Write lm-evaluation-harness task YAMLs (+ data) so the same tasks run there too."""
    from codestage.eval.harness import export_lm_eval

    written = export_lm_eval(out, data_dir=data_dir, tasks=[tasks] if tasks else None)
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"run: lm_eval --model hf --model_args pretrained=MODEL --include_path {out} --tasks codestage")


app.command("pretrain")(__import__("codestage.cli_train", fromlist=["pretrain"]).pretrain)  # `codestage pretrain`


def _quiet_libraries() -> None:
    """Our own progress bars and messages say what happens; silence the libraries' per-call chatter."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also transformers' bars, read at its import
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "transformers" in sys.modules:  # already imported: set it directly (importing it costs seconds)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    else:  # read when a command first imports it; commands that never do (run's coordinator) skip it
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    """Entry point: bad input ends with a one-line message and exit status 2, not a traceback;
    Ctrl-C stops the command (a second one at once: `codestage.interrupts`)."""
    from codestage.interrupts import ctrl_c

    try:
        with ctrl_c():
            _quiet_libraries()
            app()
    except CodestageError as exc:
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)  # one line, however long
        sys.exit(2)
    except (KeyboardInterrupt, SystemExit) as exc:  # typer turns a KeyboardInterrupt into exit status 130
        if isinstance(exc, SystemExit) and exc.code != 130:
            raise
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C while threads wind down: exit at once
        console.print("[yellow]interrupted[/]; outputs are as they were, finished steps are kept, a rerun resumes")
        sys.exit(130)


if __name__ == "__main__":
    main()
