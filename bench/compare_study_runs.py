"""Compare two GPU study folders (bench/gpu_study.sh's study.tar.gz, unpacked): same results?

For every seed and run found in both: the pretraining/instruction loss curves (runs/*/metrics.jsonl:
loss and grad norm bitwise equal, else the first step that differs and the largest loss difference),
the step keys (.step.json: equal keys mean equal inputs and settings), each task's score and which
fields only one side has (results.json), and the held-out loss (heldout.json); with --timing, each
step's seconds from its .step.json. Prints tables.

    python3 bench/compare_study_runs.py A/study B/study [--timing]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _json(p: Path) -> dict:
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def _metrics(p: Path) -> dict[int, dict]:
    if not p.is_file():
        return {}
    rows = (json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip())
    return {r["step"]: r for r in rows if "step" in r}


def _seeds(a: Path, b: Path) -> list[str]:
    return sorted(p.name for p in a.glob("seed*") if (b / p.name).is_dir())


def compare_training(a: Path, b: Path) -> None:
    print("## training curves (runs/*/metrics.jsonl)")
    print(f"{'seed/run':22} {'key':5} {'steps':>5} {'bitwise':7} {'1st diff':>8} {'max |dloss|':>11} "
          f"{'final loss A':>12} {'final loss B':>12}")
    for seed in _seeds(a, b):
        for run in sorted(p.name for p in (a / seed / "runs").glob("*") if (b / seed / "runs" / p.name).is_dir()):
            ra, rb = a / seed / "runs" / run, b / seed / "runs" / run
            ma, mb = _metrics(ra / "metrics.jsonl"), _metrics(rb / "metrics.jsonl")
            steps = sorted(set(ma) & set(mb))
            if not steps:
                continue
            same_key = _json(ra / ".step.json").get("key") == _json(rb / ".step.json").get("key")
            # loss and grad norm of every logged step (tokens/s and elapsed time always differ)
            diffs = [(s, abs(ma[s]["loss"] - mb[s]["loss"]), ma[s].get("grad_norm") != mb[s].get("grad_norm"))
                     for s in steps]
            first = next((s for s, d, g in diffs if d or g), None)
            bitwise = first is None
            print(f"{seed + '/' + run:22} {'same' if same_key else 'DIFF':5} {len(steps):5} "
                  f"{'yes' if bitwise else 'no':7} {first if first is not None else '-':>8} "
                  f"{max(d for _, d, _ in diffs):11.2e} {ma[steps[-1]]['loss']:12.6f} {mb[steps[-1]]['loss']:12.6f}")


def compare_evals(a: Path, b: Path) -> None:
    print("\n## evaluations (eval/*/results.json): score A -> B")
    only: dict[str, set[str]] = {}
    rows = []
    for seed in _seeds(a, b):
        for ev in sorted(p.name for p in (a / seed / "eval").glob("*") if (b / seed / "eval" / p.name).is_dir()):
            ea, eb = a / seed / "eval" / ev, b / seed / "eval" / ev
            ta, tb = _json(ea / "results.json").get("tasks", {}), _json(eb / "results.json").get("tasks", {})
            same_key = _json(ea / ".step.json").get("key") == _json(eb / ".step.json").get("key")
            cells = []
            for task in sorted(set(ta) & set(tb)):
                va, vb = ta[task]["value"], tb[task]["value"]
                cells.append(f"{task}={va:.1f}" + ("" if va == vb else f"->{vb:.1f}"))
                for k in set(tb[task]) - set(ta[task]):
                    only.setdefault(f"B only: {k}", set()).add(task)
                for k in set(ta[task]) - set(tb[task]):
                    only.setdefault(f"A only: {k}", set()).add(task)
            ha, hb = _json(ea / "heldout.json"), _json(eb / "heldout.json")
            held = " ".join(f"{src}={ha[src]['nats_per_token']:.4f}->{hb[src]['nats_per_token']:.4f}"
                            for src in sorted(set(ha) & set(hb)))
            rows.append(f"{seed + '/' + ev:26} key {'same' if same_key else 'DIFF'}  " + "  ".join(cells)
                        + f"\n{'':26} held-out nats/token: {held}")
    print("\n".join(rows))
    for k, tasks in sorted(only.items()):
        print(f"{k}: {', '.join(sorted(tasks))}")


def compare_timing(a: Path, b: Path) -> None:
    print("\n## step seconds (.step.json)")
    for seed in _seeds(a, b):
        for fa in sorted((a / seed).rglob(".step.json")):
            rel = fa.relative_to(a)
            sa, sb = _json(fa), _json(b / rel)
            if sb:
                print(f"{seed + '/' + sa['step']:32} {sa['seconds']:7.1f} {sb['seconds']:7.1f}  "
                      f"finished {sa['finished'][11:]} / {sb['finished'][11:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="study folder A (holds seed0/, seed1/, ...)")
    ap.add_argument("b", type=Path, help="study folder B")
    ap.add_argument("--timing", action="store_true", help="also each step's seconds")
    args = ap.parse_args()
    for p in (args.a, args.b):
        if not (p / "seed0").is_dir():
            raise SystemExit(f"{p}: not a study folder (no seed0/)")
    print(f"A = {args.a}\nB = {args.b}\n")
    compare_training(args.a, args.b)
    compare_evals(args.a, args.b)
    if args.timing:
        compare_timing(args.a, args.b)


if __name__ == "__main__":
    main()
