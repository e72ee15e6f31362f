"""`codestage ladder ...`: fit task scaling laws to a table of ladder points and report them.

Thin: parses arguments, calls `codestage.study.ladder`, prints a rich summary. Heavy modules are
imported inside the commands so `codestage --help` stays fast. `ladder plan` / `ladder run` /
`ladder points` work on a study config's `ladder:` section (docs/ladder.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

ladder_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                         help="Model ladders: fit task scaling laws, predict a target scale, backtest, report.")
console = Console(stderr=True)
out_console = Console()


def _summary(doc: dict) -> Table:
    arms = doc["arms"]
    two = len(arms) == 2
    t = doc["target"]
    table = Table(title=f"ladder fit: predictions at N={t['params']:.3g}, D={t['tokens']:.3g} (95% CI)")
    table.add_column("task", no_wrap=True)
    for a in arms:
        table.add_column(f"{a} loss", justify="right")
    if two:
        table.add_column(f"{doc['difference']} loss", justify="right")
    for a in arms:
        table.add_column(f"{a} acc %", justify="right")
    if two:
        table.add_column("diff acc pt (p)", justify="right")
    if doc.get("holdout"):
        table.add_column("backtest loss err", justify="right")

    def ci(c, scale=1.0, fmt="{:.3g}"):
        return "" if not c else f" [{fmt.format(c[0] * scale)}, {fmt.format(c[1] * scale)}]"

    for task, e in doc["tasks"].items():
        cells = [task]
        preds = [e["arms"][a]["prediction"] for a in arms]
        cells += [f"{p['loss']:.3g}{ci(p.get('loss_ci95'))}" for p in preds]
        if two:
            d = e["difference"]["loss"]
            cells.append(f"{d['value']:+.3g}{ci(d.get('ci95'), fmt='{:+.3g}')}")
        cells += ["—" if p["accuracy"] is None else f"{100 * p['accuracy']:.1f}{ci(p.get('accuracy_ci95'), 100, '{:.1f}')}"
                  for p in preds]
        if two:
            d = e["difference"]["accuracy"]
            p_text = "—" if d is None or d.get("p_value") is None else f"{d['p_value']:.2f}"
            cells.append("—" if d is None else f"{100 * d['value']:+.1f}{ci(d.get('ci95'), 100, '{:+.1f}')} (p={p_text})")
        if doc.get("holdout"):
            errs = [p.get("backtest") or {} for p in preds]
            cells.append(" / ".join("—" if b.get("loss_rel_error") is None else f"{100 * b['loss_rel_error']:.1f}%" for b in errs))
        table.add_row(*cells)
    return table


@ladder_app.command("fit")
def fit_cmd(
    points: Path = typer.Argument(..., help="POINTS table (.csv or .jsonl): arm, task, params, tokens, loss[, accuracy, ...]"),
    target: str = typer.Option("N=2.6e9,D=4.2e10", "--target", help="target scale: N=<params>,D=<tokens>"),
    out: Path = typer.Option(..., "--out", help="folder for fit.json, report.md and plots/"),
    arms: str = typer.Option("NL,CODE", "--arms", help="one or two arms; the difference is second minus first"),
    holdout: Optional[str] = typer.Option(None, "--holdout", help="backtest: 'largest', a params value, a run id (comma list)"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="bootstrap replicates (0: no intervals)"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    resample: str = typer.Option("runs", "--resample", help="runs (whole runs drawn with replacement) | residuals (fixed design)"),
    share_exponents: bool = typer.Option(True, "--share-exponents/--per-arm-exponents",
                                         help="one alpha and beta for both arms of a task (default), or each arm its own"),
    step1_points: str = typer.Option("final", "--step1-points", help="final (each run's last checkpoint) | all"),
    huber_delta: float = typer.Option(1e-3, "--huber-delta", help="Huber threshold on log residuals"),
    last: int = typer.Option(3, "--last", help="checkpoints per run for the predictability measure"),
    workers: int = typer.Option(0, "--workers", min=0, help="processes for the bootstrap (0: one per core)"),
) -> None:
    """Fit L(N, D) and accuracy(L) per task and arm, predict the target with intervals, write DIR/fit.json,
    DIR/report.md and DIR/plots/."""
    from codestage.study.ladder.fit import FitSettings, fit_ladder, parse_target, write_fit
    from codestage.study.ladder.points import load_points
    from codestage.study.ladder.report import render_report

    settings = FitSettings(target=parse_target(target), arms=tuple(a.strip() for a in arms.split(",") if a.strip()),
                           bootstrap=bootstrap, seed=seed, resample=resample, huber_delta=huber_delta,
                           share_exponents=share_exponents, step1_points=step1_points, holdout=holdout, last=last,
                           workers=workers)
    settings.check()
    table = load_points(points)
    with console.status(f"fitting {len(table.tasks)} tasks x {len(settings.arms)} arms, {bootstrap} bootstrap replicates"):
        doc = fit_ladder(table, settings, folder=out)
    path = write_fit(doc, out)
    report = render_report(doc, out)
    out_console.print(_summary(doc))
    console.print(f"fit: {path}   report: {report}   plots: {out / 'plots'}")


@ladder_app.command("report")
def report_cmd(out: Path = typer.Argument(..., help="folder holding fit.json")) -> None:
    """Re-render DIR/report.md and DIR/plots/ from an existing DIR/fit.json."""
    from codestage.study.ladder.report import load_fit, render_report

    doc = load_fit(out)
    report = render_report(doc, out)
    out_console.print(_summary(doc))
    console.print(f"report: {report}   plots: {out / 'plots'}")


@ladder_app.command("plan")
def plan_cmd(config: Path = typer.Argument(..., help="study YAML with a `ladder:` section")) -> None:
    """The ladder's rungs by the size rule: shape, parameters, tokens, steps, batch, learning rate and FLOPs
    (6ND), and their total against the target's."""
    from codestage.config import load_config
    from codestage.study.ladder.plan import plan_ladder

    plan = plan_ladder(load_config(config))
    table = Table(title=f"ladder: {len(plan.rungs)} runs (N = non-embedding parameters, FLOPs = 6 N D)")
    for col in ("run", "layers x width", "heads", "N", "N total", "tokens", "tok/N", "steps", "batch", "lr", "FLOPs"):
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=True)
    for r in plan.rungs:
        table.add_row(r.run, f"{r.shape.layers} x {r.shape.width}", str(r.shape.heads), f"{r.params:,}", f"{r.total_params:,}",
                      f"{r.tokens:,}", f"{r.tokens / r.params:.1f}", f"{r.steps:,}", f"{r.rows} x {r.seq_len}",
                      f"{r.lr:.3g}", f"{r.flops:.3g}")
    wide = Console(width=max(out_console.width, 160))  # one line per rung, also in a narrow terminal or a log
    wide.print(table)
    n, d = plan.target
    wide.print(f"total: {plan.flops:.3g} FLOPs, {sum(r.tokens for r in plan.rungs):,} tokens; target N={n:.3g}, "
                      f"D={d:.3g}: {plan.target_flops:.3g} FLOPs; the ladder costs {plan.flops / plan.target_flops:.3g} "
               "of one target run")


@ladder_app.command("points")
def points_cmd(
    out: Path = typer.Argument(..., help="a study's output folder (its ladder/eval/ is read)"),
    to: Optional[Path] = typer.Option(None, "--to", help="POINTS file to write (default OUT/ladder/export/points.csv); "
                                      "per-item files go to items/ beside it"),
) -> None:
    """Export POINTS (and per-item files) from every evaluated ladder checkpoint of a study, finished or not."""
    from codestage.study.ladder.export import export_points, find_evals

    dest = to or out / "ladder" / "export" / "points.csv"
    summary = export_points(find_evals(out), dest)
    console.print(f"points: {dest} ({summary['rows']} rows from {summary['evaluations']} evaluations; tasks "
                  f"{', '.join(summary['tasks'])}; per-item accuracy for {', '.join(summary['accuracy_per_item']) or 'none'})")


@ladder_app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="study YAML with a `ladder:` section"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    per_gpu: int = typer.Option(1, "--per-gpu", min=1, help="ladder steps side by side on each visible GPU"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="ladder steps side by side without GPUs"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Run a study with its ladder: the study's own steps here, then the ladder's runs and evaluations as
    processes side by side (`--per-gpu` on each visible GPU), then the points, the fit and the report."""
    from codestage.study.ladder.dispatch import run_ladder

    if not run_ladder(config, out, per_gpu=per_gpu, jobs=jobs, quiet=quiet, console=console):
        raise typer.Exit(1)
