"""Ladder evaluations -> POINTS (`points.csv` and per-item files), the table `ladder fit` reads.

Each evaluation of a ladder checkpoint writes `ladder.json` beside its `results.json` and
`items.jsonl`: the run, arm, checkpoint (fraction, step), parameters and tokens seen. This module
reads any set of such folders (the `ladder/points` step's inputs, or every one under a study's
`ladder/eval/` for `codestage ladder points`) and writes one row per (checkpoint, task):

    arm, task, run, fraction, step, params, tokens, loss, accuracy, chance, n_items, items

`loss` is the bits per byte of the gold answer over the task's items (sum of bits / sum of bytes;
docs/evaluation.md), `accuracy` the fraction of items answered correctly (MBPP: tests passed, where
programs were generated), and `items` a JSONL file of per-item `{task, id, bits, bytes[, correct]}`
so the fit's bootstrap can resample items. Items are identified by their `item_hash`.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codestage.atomic import write_json, write_text
from codestage.errors import DataError
from codestage.eval.compare import read_items
from codestage.results import EvalResults

RECORD = "ladder.json"
COLUMNS = ("arm", "task", "run", "fraction", "step", "params", "tokens", "loss", "accuracy", "chance", "n_items", "items")


def write_record(eval_dir: Path, info: dict[str, Any]) -> None:
    """`ladder.json` in an evaluation folder: which run and checkpoint it evaluated (see `checkpoint_info`)."""
    write_json(Path(eval_dir) / RECORD, info)


def find_evals(study_out: Path) -> list[Path]:
    """Every ladder evaluation folder of a study output (those holding a `ladder.json`), in order."""
    root = Path(study_out) / "ladder" / "eval"
    found = sorted(p.parent for p in root.glob(f"*/*/{RECORD}")) if root.is_dir() else []
    if not found:
        raise DataError(f"{study_out}: no ladder evaluations under {root} (run the study's ladder steps first: "
                        "`codestage run CONFIG --out OUT`)")
    return found


@dataclass
class _Row:
    info: dict[str, Any]
    task: str
    items: list[dict[str, Any]]
    chance: float | None
    has_correct: bool
    dropped: int = 0
    notes: list[str] = field(default_factory=list)


def _read_eval(eval_dir: Path) -> list[_Row]:
    try:
        info = json.loads((eval_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{eval_dir / RECORD}: cannot read the ladder record ({exc})") from None
    results = EvalResults.read(eval_dir / "results.json")
    by_task = {task: [rec for _, rec in recs] for task, recs in read_items(eval_dir).items()}
    rows = []
    for task, result in results.tasks.items():
        if result.value is None and result.bits_per_byte is None:
            continue  # the task's data is missing (results.json says why); nothing to fit
        recs = by_task.get(task, [])
        kept = [r for r in recs if r.get("gold_bits") is not None and r.get("gold_bytes")]
        if not kept:
            raise DataError(f"{eval_dir}/items.jsonl: task {task!r} has no item with gold_bits and gold_bytes (bits per byte of "
                            "the gold answer); evaluate with a codestage that writes them")
        items = []
        has_correct = all(("correct" in r) or ("passed" in r) for r in kept)
        for r in kept:
            item = {"task": task, "id": r.get("item_hash") or str(r["doc_id"]), "bits": float(r["gold_bits"]),
                    "bytes": float(r["gold_bytes"])}
            if has_correct:
                item["correct"] = float(r["correct"] if "correct" in r else r["passed"])
            items.append(item)
        chance = None if result.chance is None else result.chance / 100.0
        rows.append(_Row(info, task, items, chance, has_correct, dropped=len(recs) - len(kept)))
    return rows


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.10g}"


def export_points(eval_dirs: list[Path], out_csv: Path) -> dict[str, Any]:
    """Write `out_csv` (POINTS) and its per-item files under `items/` beside it; return a summary."""
    out_csv = Path(out_csv)
    rows = [row for d in eval_dirs for row in _read_eval(Path(d))]
    if not rows:
        raise DataError(f"no task results in {len(eval_dirs)} ladder evaluation folders")
    # per-item correctness goes into a task's items only where every row of the task has it (the fit's rule)
    correct_everywhere = {t: all(r.has_correct for r in rows if r.task == t) for t in {r.task for r in rows}}
    files: dict[Path, list[dict[str, Any]]] = defaultdict(list)
    table = io.StringIO()
    table.write("# params_kind: non_embedding\n")
    w = csv.writer(table, lineterminator="\n")
    w.writerow(COLUMNS)
    dropped: dict[str, int] = defaultdict(int)
    for r in rows:
        info = r.info
        rel = Path("items") / info["run"] / f"{info['checkpoint']}.jsonl"
        items = r.items if correct_everywhere[r.task] else [{k: v for k, v in it.items() if k != "correct"} for it in r.items]
        files[out_csv.parent / rel].extend(items)
        loss = sum(it["bits"] for it in r.items) / sum(it["bytes"] for it in r.items)
        acc = sum(it["correct"] for it in r.items) / len(r.items) if r.has_correct else None
        w.writerow([info["arm"], r.task, info["run"], _fmt(info["fraction"]), info["step"], info["params"], info["tokens"],
                    _fmt(loss), _fmt(acc), _fmt(r.chance), len(r.items), rel.as_posix()])
        dropped[r.task] = max(dropped[r.task], r.dropped)
    for path, items in files.items():
        write_text(path, "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))
    write_text(out_csv, table.getvalue())
    return {"points": str(out_csv), "rows": len(rows), "evaluations": len(eval_dirs),
            "tasks": sorted(correct_everywhere), "items_without_loss": {t: n for t, n in dropped.items() if n},
            "accuracy_per_item": sorted(t for t, ok in correct_everywhere.items() if ok)}


__all__ = ["COLUMNS", "RECORD", "export_points", "find_evals", "write_record"]
