"""The `codestage` command: thin wrappers that parse arguments and call the modules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from codestage.config import StudyConfig, load_config
from codestage.errors import CodestageError
from codestage.resources import DATA_DIR

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="At which training stage does code data help a language model reason?")
console = Console(stderr=True)
DEMO_CONFIG = DATA_DIR.parent / "demo.yaml"


def _run_study(cfg: StudyConfig, out: Path, *, full_eval: bool, only: list[str] | None, force: bool, quiet: bool) -> None:
    from codestage.study.report import write_report
    from codestage.study.runner import Study

    if full_eval:
        cfg.eval.sample = None
    study = Study(cfg, out, console=console, progress=not quiet)
    timings = study.run(only=only, force=force)
    if only:
        return
    results = write_report(study.run_table(), study.resolved_config(), out, timings=timings)
    _summary(results, out)


def _summary(results: dict, out: Path) -> None:
    from codestage.eval.tasks.base import DOMAINS

    table = Table(title="codestage: scores (accuracy % / BLEU x100), 95% CI in the report")
    table.add_column("run")
    table.add_column("stage")
    for d in DOMAINS:
        table.add_column(d.replace("_", " "), justify="right")
    for name, run in results["runs"].items():
        cells = []
        for d in DOMAINS:
            c = run["tasks"].get(d)
            cells.append("—" if not c or c.get("value") is None else f"{c['value']:.1f}")
        table.add_row(name, run["stage"], *cells)
    Console().print(table)
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


@app.command()
def run(
    config: Path = typer.Argument(..., help="study YAML"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    full_eval: bool = typer.Option(False, "--full-eval", help="ignore eval.sample and evaluate the full sets"),
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only steps whose name starts with this (repeatable)"),
    force: bool = typer.Option(False, "--force", help="rerun steps even when their outputs are up to date"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Run a study from a YAML config; finished steps with the same inputs are skipped."""
    _run_study(load_config(config), out, full_eval=full_eval, only=only, force=force, quiet=quiet)


@app.command()
def plan(config: Path = typer.Argument(..., help="study YAML"), out: Path = typer.Option(..., "--out")) -> None:
    """List a study's steps, their keys and whether each is up to date."""
    from codestage.study.runner import Study

    study = Study(load_config(config), out, console=console, progress=False)
    table = Table("step", "key", "state", "folder")
    for s in study.steps.values():
        state = f"same as {s.alias_of}" if s.alias_of else ("up to date" if study.is_done(s) else "to run")
        table.add_row(s.name, s.key[:12], state, str(s.out))
    Console().print(table)


def main() -> None:
    """Entry point: bad input ends with a one-line message and exit status 2, not a traceback."""
    try:
        app()
    except CodestageError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; finished steps are kept, a rerun resumes")
        sys.exit(130)


if __name__ == "__main__":
    main()
