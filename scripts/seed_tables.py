"""Markdown tables over the seeds of a study (docs/results/README.md): per run and domain the mean
score over seeds with each seed's value, and the held-out bits per byte.

    python scripts/seed_tables.py docs/results/seed0 docs/results/seed1 docs/results/seed2 --runs NL,CODE
"""

from __future__ import annotations

import argparse
from pathlib import Path

from codestage.domains import DOMAINS
from codestage.results import StudyResults


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seed_dirs", nargs="+", type=Path)
    ap.add_argument("--runs", default="NL,CODE")
    args = ap.parse_args()
    results = [StudyResults.read(d / "results.json") for d in args.seed_dirs]
    runs = args.runs.split(",")
    print("| run | " + " | ".join(DOMAINS) + " |")
    print("|---|" + "---|" * len(DOMAINS))
    for run in runs:
        cells = []
        for dom in DOMAINS:
            vals = [r.runs[run].tasks[dom].value for r in results if run in r.runs]
            if not vals or any(v is None for v in vals):
                cells.append("—")
                continue
            n = results[0].runs[run].tasks[dom].n
            cells.append(f"{sum(vals) / len(vals):.2f} ({', '.join(f'{v:.1f}' for v in vals)}) n={n}")
        print(f"| {run} | " + " | ".join(cells) + " |")
    print()
    names = sorted({k for r in results for run in runs if run in r.runs for k in r.runs[run].heldout or {}})
    print("| run | " + " | ".join(f"held-out {k} (bits/byte)" for k in names) + " |")
    print("|---|" + "---|" * len(names))
    for run in runs:
        cells = []
        for k in names:
            vals = [r.runs[run].heldout[k].bits_per_byte for r in results if run in r.runs and k in (r.runs[run].heldout or {})]
            cells.append(f"{sum(vals) / len(vals):.4f} ({', '.join(f'{v:.4f}' for v in vals)})" if vals else "—")
        print(f"| {run} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
