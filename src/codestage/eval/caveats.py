"""What changed what was measured, said at the end of a command, not only inside results.json.

Missing task data, subsampling, a `--limit`, and each task's notes (ScienceQA ids absent from a
partial copy, MBPP test imports restored, duplicates skipped in lenient mode) are collected here
from an evaluation's results and printed by the CLI as a short "warnings" block after the summary table.
"""

from __future__ import annotations

from typing import Iterable

from rich.console import Console

from codestage.results import EvalResults


def eval_caveats(results: EvalResults) -> list[str]:
    """One line per caveat of an evaluation's results (subsamples and limits grouped in one line each)."""
    lines: list[str] = []
    sampled, limited = [], []
    for name, r in results.tasks.items():
        if r.missing and not r.n:
            lines.append(f"{name}: not evaluated: {r.missing}")
            continue
        if r.missing:  # scored, but not its metric (a code task without generation)
            lines.append(f"{name}: {r.missing}")
        sub = r.subsample
        if sub:
            sampled.append(f"{name} {sub.n} of {sub.of} (seed {sub.seed})")
        if r.limit is not None and not sub and r.n >= r.limit:
            limited.append(name)
        lines += [f"{name}: {note}" for note in r.notes or []]
    if sampled:
        lines.insert(0, "a seeded subsample of items, not the full sets: " + ", ".join(sampled))
    if limited:
        lines.insert(0, f"only the first {results.tasks[limited[0]].limit} items of: {', '.join(limited)}")
    return lines


def print_caveats(console: Console, lines: Iterable[str]) -> None:
    """The warnings block: each distinct line once, in order."""
    unique = list(dict.fromkeys(lines))
    if not unique:
        return
    console.print("[yellow]warnings[/] (these change what was measured; details in results.json):")
    for line in unique:
        console.print(f"  - {line}", markup=False, highlight=False)


__all__ = ["eval_caveats", "print_caveats"]
