"""The study report: the paper's three tables for our runs, the paper's numbers beside them,
95% intervals and n for every cell, plus results.json and plots.

Cells are keyed by domain (logic, legal, ...). Each domain's cell shows the paper's own evaluation
set for it when that task was evaluated (see DOMAIN_DEFAULT); other evaluated tasks are listed in
a further table. Missing data gives an empty cell with its reason, never a number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from codestage.atomic import write_json, write_text  # noqa: E402
from codestage.domains import DOMAIN_TABLE, DOMAINS  # noqa: E402
from codestage.errors import DataError  # noqa: E402
from codestage.jsonlines import iter_json_lines  # noqa: E402
from codestage.resources import bundled  # noqa: E402
from codestage.results import EvalResults, HeldoutLoss, RunResults, StudyResults, TaskResult  # noqa: E402

if TYPE_CHECKING:
    from codestage.study.runner import StepOutcome, StudyRun

STAGES = ("pretrain", "instruct", "mixing")
TITLES = {
    "pretrain": "Table 1: pre-training stage (NL vs CODE)",
    "instruct": "Table 2: instruction-tuning stage (NN / NC / CC)",
    "mixing": "Table 3: dynamic mixing strategies (instruction tuning from CODE)",
}
LABELS = [DOMAIN_TABLE[d].label for d in DOMAINS]


def load_paper_results(path: Path | None = None) -> dict[str, Any]:
    return json.loads((path or bundled("paper", "reported_results.json")).read_text(encoding="utf-8"))


def _domain_cells(eval_results: EvalResults) -> tuple[dict[str, TaskResult], dict[str, TaskResult]]:
    """Split a model's task results into one cell per domain (the paper's set first) and the rest."""
    from codestage.eval.registry import DOMAIN_DEFAULT

    tasks = eval_results.tasks
    cells: dict[str, TaskResult] = {}
    for domain in DOMAINS:
        preferred = DOMAIN_DEFAULT.get(domain)
        if preferred in tasks:
            cells[domain] = tasks[preferred]
        else:
            same = [t for t in tasks.values() if t.domain == domain]
            if same:
                cells[domain] = same[0]
    used = {id(c) for c in cells.values()}
    extra = {name: t for name, t in tasks.items() if id(t) not in used}
    return cells, extra


def _fmt(task: TaskResult | None, *, with_split: bool = False) -> str:
    """A cell: score [95% interval] n, and its split note when the runs of a table differ in split."""
    if task is None:
        return "not evaluated"
    if task.value is None:
        if task.missing and task.n:  # scored, but not its metric (a code task without generation)
            return f"— ({task.missing})"
        return "— (data missing; see Evaluation sets)" if task.missing else "—"
    lo, hi = task.ci95 or (float("nan"), float("nan"))
    split = f" ({task.split_note})" if with_split and task.split_note else ""
    return f"{task.value:.2f} [{lo:.1f}, {hi:.1f}] n={task.n}{split}"


def _paper_fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _split_notes(results: StudyResults, names: list[str]) -> dict[str, list[str]]:
    """domain -> the distinct split notes ("validation, n=100 of 165; the paper's test n=335") of these runs' cells."""
    notes: dict[str, list[str]] = {}
    for name in names:
        for d, cell in results.runs[name].tasks.items():
            note = cell.split_note or (f"n={cell.n}" if cell.value is not None else None)
            if note and note not in notes.setdefault(d, []):
                notes[d].append(note)
    return notes


def build_results(runs: Mapping[str, StudyRun], config: Mapping[str, Any]) -> StudyResults:
    """results.json: per run its stage and one cell per domain, plus the config that made them."""
    out_runs: dict[str, RunResults] = {}
    for name, info in runs.items():
        cells, extra = _domain_cells(EvalResults.read(info.eval_dir / "results.json"))
        out_runs[name] = RunResults(stage=info.stage, same_run_as=info.alias_of, base=info.base,
                                    tasks={d: c.cell() for d, c in cells.items()},
                                    other_tasks={n: t.cell() for n, t in extra.items()})
        heldout = info.eval_dir / "heldout.json"
        if heldout.is_file():
            raw = _read_json(heldout)
            out_runs[name].heldout = {k: HeldoutLoss.from_json(v, origin=f"{heldout}: {k}") for k, v in raw.items()}
    return StudyResults(runs=out_runs, config=dict(config))


def _continuous_lines(results: StudyResults) -> list[str]:
    """Signals that move before accuracy does: the gold choice's mean log-prob and margin (multiple
    choice) and pass@1 (code generation) per domain; then every task's bits per byte of the gold answer."""
    lines = ["## Continuous metrics", "",
             "Multiple choice: mean log-probability of the gold choice under the protocol's score / its margin over the "
             "best wrong choice (higher is better). Code generation: pass@1 (%).", "",
             "| run | " + " | ".join(LABELS) + " |", "|---|" + "---|" * len(DOMAINS)]
    for name, run in results.runs.items():
        cells = []
        for d in DOMAINS:
            c = run.tasks.get(d)
            if c is None or c.value is None:
                cells.append("—")
            elif c.pass_at_1 and c.pass_at_1.value is not None:
                cells.append(f"pass@1 {c.pass_at_1.value:.1f}")
            elif c.gold_logprob and c.margin:
                cells.append(f"{c.gold_logprob.value:.3f} / {c.margin.value:+.3f}")
            else:
                cells.append("—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""] + _bits_per_byte_lines(results)


def _bits_per_byte_lines(results: StudyResults) -> list[str]:
    """Every evaluated task's bits per byte of the gold answer [95% interval] per run (lower is better)."""
    tasks: dict[str, None] = {}
    for run in results.runs.values():
        for c in list(run.tasks.values()) + list(run.other_tasks.values()):
            if c.bits_per_byte is not None and c.bits_per_byte.value is not None:
                tasks.setdefault(c.task)
    if not tasks:
        return []
    lines = ["### Bits per byte of the gold answer", "",
             "The task loss a model ladder fits (lower is better): -log2 P(gold continuation) summed over items / its "
             "UTF-8 bytes, the gold choice's scored continuation under the protocol (all gold options pooled where an "
             "item has several) or the reference program; [95% bootstrap interval] and the items n it covers. "
             "docs/evaluation.md defines it.", "",
             "| run | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name, run in results.runs.items():
        by_task = {c.task: c for c in list(run.tasks.values()) + list(run.other_tasks.values())}
        cells = []
        for t in tasks:
            b = by_task[t].bits_per_byte if t in by_task else None
            if b is None or b.value is None:
                cells.append("—")
            else:
                lo, hi = b.ci95 or (float("nan"), float("nan"))
                cells.append(f"{b.value:.4f} [{lo:.4f}, {hi:.4f}]" + (f" n={b.n}" if b.n is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _decontam_lines(out_dir: Path) -> list[str]:
    """The n-gram overlap of the training data with each task, when the study ran its decontam step."""
    path = out_dir / "decontam" / "decontam.json"
    if not path.is_file():
        return []
    from codestage.study.decontam import contamination_summary

    summary = contamination_summary(path)
    lines = ["## Test-set contamination", "",
             f"{summary['ngram']}-gram overlap between every training source and every task "
             f"(`decontam/decontam.json` has the matches).", "",
             "| task | items checked | items touched | by source (items / documents) |", "|---|---|---|---|"]
    for task, t in summary["tasks"].items():
        if t.get("absent"):
            lines.append(f"| {task} | absent | | |")
            continue
        by = ", ".join(f"{s} {v['items_touched']} / {v['documents_touched']}" for s, v in t["by_source"].items())
        share = f" ({100 * t['share_touched']:.1f}%)" if t["items_touched"] else ""
        lines.append(f"| {task} | {t['items_checkable']} of {t['items']} | {t['items_touched']}{share} | {by} |")
    return lines + [""]


def _heldout_lines(results: StudyResults) -> list[str]:
    runs = {n: r.heldout for n, r in results.runs.items() if r.heldout}
    if not runs:
        return []
    names = sorted({k for h in runs.values() for k in h})
    lines = ["## Held-out loss", "", "Bits per byte on held-out documents (never trained on; lower is better) and nats per token.", "",
             "| run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for run, h in runs.items():
        lines.append(f"| {run} | " + " | ".join(
            f"{h[k].bits_per_byte:.4f} bpb ({h[k].nats_per_token:.3f} nats/tok, {h[k].tokens:,} tok)" if k in h else "—"
            for k in names) + " |")
    return lines + [""]


def _read_json(path: Path) -> Any:
    """A JSON file a step wrote; a damaged one is a DataError naming it, not a traceback."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); rerun the study to redo the step that wrote it") from None


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [row for _, row in iter_json_lines(path.read_text(encoding="utf-8", errors="replace"), path)]


def plot_losses(runs: Mapping[str, StudyRun], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, info in runs.items():
        if info.alias_of:
            continue
        rows = _read_metrics(info.dir)
        if not rows:
            continue
        ax = axes[0] if info.stage == "pretrain" else axes[1]
        ax.plot([r["tokens"] / 1e6 for r in rows], [r["loss"] for r in rows], label=name, marker=".", markersize=3)
    for ax, title in zip(axes, ("pre-training", "instruction tuning (response tokens)")):
        ax.set_title(f"training loss: {title}")
        ax.set_xlabel("tokens seen (M)")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _paper_value(paper: Mapping[str, Any], stage: str, run: str, domain: str) -> float | None:
    row = paper.get("tables", {}).get(stage, {}).get(run)
    return None if row is None else row.get(DOMAIN_TABLE[domain].paper_column)


def plot_scores(results: StudyResults, paper: Mapping[str, Any], stage: str, path: Path) -> bool:
    names = results.runs_in(stage)
    if not names:
        return False
    fig, ax = plt.subplots(figsize=(12, 4.8))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs, ys, lo, hi, px, py = [], [], [], [], [], []
        for d, domain in enumerate(DOMAINS):
            x = d + (i - (len(names) - 1) / 2) * width
            cell = results.runs[name].tasks.get(domain)
            if cell and cell.value is not None:
                xs.append(x)
                ys.append(cell.value)
                lo.append(cell.value - cell.ci95[0])
                hi.append(cell.ci95[1] - cell.value)
            pv = _paper_value(paper, stage, name, domain)
            if pv is not None:
                px.append(x)
                py.append(pv)
        bars = ax.bar(xs, ys, width * 0.95, yerr=[lo, hi], capsize=3, label=f"{name} (ours, 95% CI)")
        if px:
            ax.scatter(px, py, marker="x", color=bars.patches[0].get_facecolor() if bars.patches else None,
                       s=40, zorder=3, label=f"{name} (paper)")
    ax.set_xticks(range(len(DOMAINS)), [_tick(d, names, results) for d in DOMAINS], fontsize=8)
    ax.set_ylabel("accuracy % / BLEU x100")
    ax.set_title(TITLES[stage])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _tick(domain: str, names: list[str], results: StudyResults) -> str:
    """A plot's domain label with the split and n its bars come from, and the paper's where it differs."""
    label = DOMAIN_TABLE[domain].label
    cell = next((c for n in names if (c := results.runs[n].tasks.get(domain)) and c.split), None)
    if cell is None:
        return label
    label += f"\n{cell.split}, n={cell.n}"
    if cell.paper_split and (cell.paper_split, cell.paper_n) != (cell.split, cell.split_n):
        label += f"\n(paper: {cell.paper_split}" + (f", n={cell.paper_n})" if cell.paper_n else ")")
    return label


def _table(results: StudyResults, paper: Mapping[str, Any], stage: str) -> list[str]:
    names = results.runs_in(stage)
    if not names:
        return []
    head = "| run | " + " | ".join(LABELS) + " |"
    notes = _split_notes(results, names)
    mixed = {d for d in DOMAINS if len(notes.get(d, [])) > 1}  # runs on different splits: each cell names its own
    lines = [f"### {TITLES[stage]}", "", head, "|" + "---|" * (len(DOMAINS) + 1),
             "| *split, n* | " + " | ".join("differs per run (in the cells)" if d in mixed else (notes.get(d) or [""])[0]
                                          for d in DOMAINS) + " |"]
    for name in names:
        cells = results.runs[name].tasks
        lines.append(f"| **{name}** (ours) | " + " | ".join(_fmt(cells.get(d), with_split=d in mixed) for d in DOMAINS) + " |")
        if paper.get("tables", {}).get(stage, {}).get(name) is not None:
            lines.append(f"| {name} (paper) | " + " | ".join(_paper_fmt(_paper_value(paper, stage, name, d)) for d in DOMAINS) + " |")
    aliases = [f"`{n}` is the same run as `{results.runs[n].same_run_as}` (identical inputs, trained once)"
               for n in names if results.runs[n].same_run_as]
    if aliases:
        lines += ["", "; ".join(aliases) + "."]
    return lines + [""]


def _mixture_lines(runs: Mapping[str, StudyRun]) -> list[str]:
    lines = ["## What each run was trained on", "",
             "Tokens drawn per source (from each run's `mixture.json`; phases in the run folder).", "",
             "| run | stage | steps | final loss | tokens per source | passes over each source |", "|---|---|---|---|---|---|"]
    for name, info in runs.items():
        if info.alias_of:
            continue
        mix_path = info.dir / "mixture.json"
        rows = _read_metrics(info.dir)
        if not mix_path.exists() or not rows:
            continue
        mix = _read_json(mix_path)
        toks = ", ".join(f"{s} {n:,}" for s, n in sorted(mix["tokens_total"].items()))
        ep = ", ".join(f"{s} {v:g}" for s, v in sorted(mix["epochs"].items()))
        lines.append(f"| {name} | {info.stage} | {rows[-1]['step']} | {rows[-1]['loss']:.3f} | {toks} | {ep} |")
    return lines + [""]


def _notes(results: StudyResults) -> list[str]:
    """Evaluation sets, n, subsampling and missing data, read off the results themselves."""
    seen: dict[str, TaskResult] = {}
    for run in results.runs.values():
        for domain, cell in run.tasks.items():
            seen.setdefault(domain, cell)
    lines = ["## Evaluation sets", "", "| domain | task | metric | split and n (the paper's) | subsample | chance | protocol |",
             "|---|---|---|---|---|---|---|"]
    for domain in DOMAINS:
        c = seen.get(domain)
        label = DOMAIN_TABLE[domain].label
        if c is None:
            lines.append(f"| {label} | not evaluated | | | | | |")
            continue
        sub = c.subsample
        sub_txt = f"seeded {sub.n} of {sub.of} (seed {sub.seed})" if sub else "full set"
        if c.value is None:
            sub_txt = f"missing: {c.missing}"
        chance = c.chance
        lines.append(f"| {label} | {c.task} | {c.metric} | {c.split_note or c.n} | {sub_txt} | "
                     f"{'' if chance is None else f'{chance:.1f}'} | {c.protocol or ''} |")
    return lines + [""]


LADDER_FIT = "ladder/fit"  # the `ladder/fit` step's folder in a study's output


def write_report(runs: Mapping[str, StudyRun], config: Mapping[str, Any], out_dir: Path,
                 *, timings: Mapping[str, StepOutcome] | None = None, paper_path: Path | None = None) -> StudyResults:
    """Write out_dir/report.md, out_dir/results.json and out_dir/plots/*.png; return results."""
    out_dir = Path(out_dir)
    paper = load_paper_results(paper_path)
    results = build_results(runs, config)
    results.paper = {"source": paper.get("source"), "tables": paper.get("tables")}
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    if runs:
        plot_losses(runs, plots / "loss.png")
    made = [s for s in STAGES if runs and plot_scores(results, paper, s, plots / f"scores_{s}.png")]

    md = [f"# codestage report: {config.get('name', 'study')}", "",
          "Each cell: our score [95% bootstrap interval] and the number of items n; accuracy in %, code generation is "
          "smoothed corpus BLEU-4 x 100. The row *split, n* under each header names the split every column's items "
          "come from, beside the paper's (E-KAR: validation unless test.json with its answers is given). The paper's "
          "published numbers (PanGu-alpha 2.6B; `reported_results.json`) sit in the row below ours. Our models are far smaller than the paper's, so read the "
          "*differences between runs* against their intervals, not the absolute levels.", ""]
    if runs:  # a ladder-only study has none: its report is the ladder's section
        for stage in STAGES:
            md += _table(results, paper, stage)
    if (out_dir / LADDER_FIT / "fit.json").is_file():
        from codestage.study.ladder.report import study_section

        md += study_section(out_dir / LADDER_FIT, LADDER_FIT)
    if runs:
        md += ["## Plots", "", "![training loss](plots/loss.png)", ""]
        md += [f"![{s}](plots/scores_{s}.png)" for s in made] + [""]
        md += _notes(results)
        md += _continuous_lines(results)
        md += _heldout_lines(results)
    md += _decontam_lines(out_dir)
    if runs:
        md += _mixture_lines(runs)
    other = {n: r.other_tasks for n, r in results.runs.items() if r.other_tasks}
    if other:
        md += ["## Other evaluated tasks", "", "| run | task | value | split and n (the paper's) |", "|---|---|---|---|"]
        md += [f"| {n} | {t} | {_fmt(c)} | {c.split_note or ''} |" for n, ts in other.items() for t, c in ts.items()] + [""]
    if timings:
        md += ["## Steps", "", "| step | seconds |", "|---|---|"]
        for name, t in timings.items():
            detail = {"ran": t.seconds, "up_to_date": "up to date", "alias": f"same as {t.alias_of}"}[t.status]
            md.append(f"| {name} | {detail} |")
        md.append("")
    notes = paper.get("notes", []) if runs else []
    if notes:
        md += ["## Notes on the paper's numbers", ""] + [f"- {n}" for n in notes] + [""]
    write_json(out_dir / "results.json", results.to_json())
    write_text(out_dir / "report.md", "\n".join(md))
    return results
